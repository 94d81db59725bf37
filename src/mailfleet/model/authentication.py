"""What the MX found out about who sent a message: SPF, DKIM and DMARC results.

Plain records, no parsing and no DNS: ``auth/verify.py`` computes them,
``mail/authresults.py`` writes them into the message as an
``Authentication-Results`` header, the store keeps them as JSON (``as_json``
/ ``from_json``), and an agent reads them on ``InboundMessage.authentication``.

The result words are those of RFC 8601 section 2.7 (and RFC 7208 for SPF),
so the typed record and the header say the same thing:

- :class:`SpfCheck`: may the connecting IP send for the envelope domain
  (``mailfrom``), or for the HELO name when the envelope sender is empty
  (``helo``)? ``none`` also when there was no client IP (local delivery).
- :class:`DkimSignatureResult`: one per ``DKIM-Signature`` field, in the
  order they appear; ``pass`` when the signature verifies against the key
  published at ``<selector>._domainkey.<domain>``.
- :class:`DmarcCheck`: does an authenticated identifier align with the
  From domain (RFC 7489)? ``pass`` when a passing DKIM signature's domain,
  or the domain SPF passed for as ``mailfrom``, is aligned with it;
  ``disposition`` is what the domain's policy asks for a message that fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

from .errors import InvalidInput

__all__ = [
    "Authentication",
    "DkimResult",
    "DkimSignatureResult",
    "DmarcCheck",
    "DmarcDisposition",
    "DmarcResult",
    "SpfCheck",
    "SpfIdentity",
    "SpfResult",
    "results_header",
]

DkimResult = Literal["pass", "fail", "neutral", "temperror", "permerror"]
"""One signature's result (RFC 8601 2.7.1): ``fail`` when it does not verify,
``neutral`` when it cannot be processed (a malformed signature field),
``permerror`` when it cannot be verified for good (no key published, a
malformed or revoked key), ``temperror`` when the key could not be looked up."""

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
"""The seven results of RFC 7208 section 2.6."""

SpfIdentity = Literal["mailfrom", "helo"]
"""Which identity SPF checked: the envelope sender's domain, or the HELO name."""

DmarcResult = Literal["pass", "fail", "none", "temperror", "permerror"]
"""DMARC's result (RFC 7489 11.2): ``none`` when the From domain publishes no
policy, ``permerror`` for a From header DMARC cannot use (none, or more than one
address) or a policy record that is malformed, ``temperror`` when DNS failed."""

DmarcDisposition = Literal["none", "quarantine", "reject"]
"""What the domain's policy asks of this message: ``none`` unless it failed DMARC."""

_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
_HEADER_B_CHARS = 8  # of b= in header.b (RFC 6008 advises enough to tell signatures apart)
_REASON_CHARS = 200  # a reason longer than this is cut: the header stays readable


@dataclass(frozen=True, slots=True)
class SpfCheck:
    """The SPF result of the SMTP session (RFC 7208)."""

    result: SpfResult
    domain: str
    """The domain whose record was evaluated (the envelope sender's, or the HELO name)."""
    identity: SpfIdentity
    explanation: str = ""
    """What the evaluation said, in words (the record's ``exp=`` text, or the reason)."""

    @property
    def passed(self) -> bool:
        """Whether the client was authorised (``pass``)."""
        return self.result == "pass"

    def as_json(self) -> dict[str, Any]:
        """A JSON object of the fields."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> SpfCheck:
        """The record :meth:`as_json` gave; :class:`InvalidInput` for anything else."""
        obj = _object(data, "spf")
        return cls(
            result=_choice(obj, "result", SpfResult, "spf"),
            domain=_text(obj, "domain", "spf"),
            identity=_choice(obj, "identity", SpfIdentity, "spf"),
            explanation=_text(obj, "explanation", "spf"),
        )


@dataclass(frozen=True, slots=True)
class DkimSignatureResult:
    """The result of one ``DKIM-Signature`` (RFC 6376)."""

    result: DkimResult
    domain: str
    """The signing domain (``d=``), in lower case; empty when the field has none."""
    selector: str
    """The selector (``s=``)."""
    algorithm: str
    """The algorithm (``a=``): ``rsa-sha256`` or ``ed25519-sha256``."""
    reason: str = ""
    """Why it did not pass, in words; empty for a pass."""
    signature: str = ""
    """The first characters of the signature (``b=``), which tell two signatures of
    one domain apart (``header.b``, RFC 6008)."""

    @property
    def passed(self) -> bool:
        """Whether the signature verified."""
        return self.result == "pass"

    def as_json(self) -> dict[str, Any]:
        """A JSON object of the fields."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> DkimSignatureResult:
        """The record :meth:`as_json` gave; :class:`InvalidInput` for anything else."""
        obj = _object(data, "dkim")
        return cls(
            result=_choice(obj, "result", DkimResult, "dkim"),
            domain=_text(obj, "domain", "dkim"),
            selector=_text(obj, "selector", "dkim"),
            algorithm=_text(obj, "algorithm", "dkim"),
            reason=_text(obj, "reason", "dkim"),
            signature=_text(obj, "signature", "dkim"),
        )


@dataclass(frozen=True, slots=True)
class DmarcCheck:
    """The DMARC result for the message's From domain (RFC 7489)."""

    result: DmarcResult
    from_domain: str
    """The domain of the From address; empty when the From header gave none."""
    policy: DmarcDisposition | None
    """The policy that applies to the From domain (``p=``, or the organizational
    domain's ``sp=``), or None when no usable record was found."""
    disposition: DmarcDisposition
    """What the policy asks for this message: ``none`` unless DMARC failed. A
    ``pct=`` below 100 is not sampled: the policy is applied to every failing
    message, and :attr:`reason` says the domain asked for less."""
    aligned_dkim: bool
    """A passing DKIM signature's domain is aligned with the From domain (``adkim``)."""
    aligned_spf: bool
    """SPF passed for an envelope domain aligned with the From domain (``aspf``)."""
    reason: str = ""

    @property
    def passed(self) -> bool:
        """Whether the message passed DMARC."""
        return self.result == "pass"

    def as_json(self) -> dict[str, Any]:
        """A JSON object of the fields."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> DmarcCheck:
        """The record :meth:`as_json` gave; :class:`InvalidInput` for anything else."""
        obj = _object(data, "dmarc")
        policy = obj.get("policy")
        return cls(
            result=_choice(obj, "result", DmarcResult, "dmarc"),
            from_domain=_text(obj, "from_domain", "dmarc"),
            policy=None if policy is None else _choice(obj, "policy", DmarcDisposition, "dmarc"),
            disposition=_choice(obj, "disposition", DmarcDisposition, "dmarc"),
            aligned_dkim=_flag(obj, "aligned_dkim", "dmarc"),
            aligned_spf=_flag(obj, "aligned_spf", "dmarc"),
            reason=_text(obj, "reason", "dmarc"),
        )


@dataclass(frozen=True, slots=True)
class Authentication:
    """Everything the MX verified about one message, and the header it added.

    ``authserv_id`` is the MX's name (the ``smtp_hostname`` setting), the
    first word of the ``Authentication-Results`` header; ``header`` is that
    header's value, exactly as added to the stored message.
    """

    spf: SpfCheck
    dkim: tuple[DkimSignatureResult, ...]
    """One result per ``DKIM-Signature``, top first; empty when the message is unsigned."""
    dmarc: DmarcCheck
    authserv_id: str
    header: str
    """The ``Authentication-Results`` value (unfolded), e.g. ``mx.example.com;
    spf=pass smtp.mailfrom=example.net; dkim=pass header.d=example.net ...``."""

    @classmethod
    def create(
        cls,
        *,
        spf: SpfCheck,
        dkim: tuple[DkimSignatureResult, ...],
        dmarc: DmarcCheck,
        authserv_id: str,
    ) -> Authentication:
        """The record of these results, with its header value (:func:`results_header`)."""
        header = results_header(authserv_id, spf=spf, dkim=dkim, dmarc=dmarc)
        return cls(spf=spf, dkim=dkim, dmarc=dmarc, authserv_id=authserv_id, header=header)

    @property
    def passed(self) -> bool:
        """Whether the message passed DMARC: its From domain is authenticated."""
        return self.dmarc.result == "pass"

    @property
    def spf_passed(self) -> bool:
        """Whether SPF passed (for whichever identity it checked)."""
        return self.spf.result == "pass"

    @property
    def dkim_passed(self) -> bool:
        """Whether at least one DKIM signature verified (aligned or not)."""
        return any(signature.passed for signature in self.dkim)

    @property
    def dkim_result(self) -> Literal["none", "pass", "fail", "neutral", "temperror", "permerror"]:
        """One word for DKIM: ``none`` unsigned, ``pass`` if any signature verified, else
        the first signature's result."""
        if not self.dkim:
            return "none"
        if self.dkim_passed:
            return "pass"
        return self.dkim[0].result

    def as_json(self) -> dict[str, Any]:
        """A JSON object (what the store keeps in ``messages.authentication``)."""
        return {
            "authserv_id": self.authserv_id,
            "spf": self.spf.as_json(),
            "dkim": [signature.as_json() for signature in self.dkim],
            "dmarc": self.dmarc.as_json(),
            "header": self.header,
        }

    @classmethod
    def from_json(cls, data: Any) -> Authentication:
        """The record :meth:`as_json` gave; :class:`InvalidInput` for anything else."""
        obj = _object(data, "authentication")
        signatures = obj.get("dkim")
        if not isinstance(signatures, list):
            raise InvalidInput("authentication.dkim", "expected a list", value=signatures)
        return cls(
            spf=SpfCheck.from_json(obj.get("spf")),
            dkim=tuple(DkimSignatureResult.from_json(s) for s in signatures),
            dmarc=DmarcCheck.from_json(obj.get("dmarc")),
            authserv_id=_text(obj, "authserv_id", "authentication"),
            header=_text(obj, "header", "authentication"),
        )


def results_header(
    authserv_id: str,
    *,
    spf: SpfCheck,
    dkim: tuple[DkimSignatureResult, ...],
    dmarc: DmarcCheck,
) -> str:
    """The value of an ``Authentication-Results`` header (RFC 8601), on one line.

    ``authserv-id; spf=... smtp.mailfrom=...; dkim=... header.d=... header.s=...
    header.a=... header.b=...; dmarc=... header.from=... policy.dmarc=...``: one
    ``dkim=`` per signature (``dkim=none`` when there is none), a
    ``reason="..."`` for every result that is not a pass, property values
    quoted where RFC 2045's token does not hold them. Only ASCII is written.
    ``mail/authresults.py`` folds it into a header field.
    """
    parts = [_value(authserv_id)]
    identity = "smtp.mailfrom" if spf.identity == "mailfrom" else "smtp.helo"
    parts.append(
        _resinfo(
            "spf",
            spf.result,
            spf.explanation if spf.result != "pass" else "",
            [(identity, spf.domain)],
        )
    )
    if not dkim:
        parts.append("dkim=none")
    for signature in dkim:
        parts.append(
            _resinfo(
                "dkim",
                signature.result,
                signature.reason,
                [
                    ("header.d", signature.domain),
                    ("header.s", signature.selector),
                    ("header.a", signature.algorithm),
                    ("header.b", signature.signature[:_HEADER_B_CHARS]),
                ],
            )
        )
    parts.append(
        _resinfo(
            "dmarc",
            dmarc.result,
            dmarc.reason if dmarc.result != "pass" else "",
            [("header.from", dmarc.from_domain), ("policy.dmarc", dmarc.policy or "")],
        )
    )
    return "; ".join(parts)


def _resinfo(method: str, result: str, reason: str, props: list[tuple[str, str]]) -> str:
    """``method=result [reason="..."] ptype.property=value...`` (empty values left out)."""
    words = [f"{method}={result}"]
    if reason:
        # Human words: quotes and backslashes become ' and / (readers that do not
        # undo quoted-pairs, and most do not, then show the same text).
        text = " ".join(reason.split()).replace('"', "'").replace("\\", "/")
        if len(text) > _REASON_CHARS:
            text = text[: _REASON_CHARS - 3] + "..."
        words.append(f"reason={_quoted(text)}")
    words.extend(f"{name}={_value(value)}" for name, value in props if value)
    return " ".join(words)


def _value(text: str) -> str:
    """A ``value`` of RFC 2045: the token as it is, anything else as a quoted-string."""
    if (
        text
        and text.isascii()
        and all(33 <= ord(char) < 127 and char not in _TSPECIALS for char in text)
    ):
        return text
    return _quoted(text)


def _quoted(text: str) -> str:
    """A quoted-string of printable ASCII (anything else becomes ``?``)."""
    safe = "".join(char if 32 <= ord(char) < 127 else "?" for char in text)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput(where, "expected a JSON object", value=data)
    return data


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise InvalidInput(f"{where}.{key}", "expected a string", value=value)
    return value


def _flag(obj: dict[str, Any], key: str, where: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}.{key}", "expected true or false", value=value)
    return value


def _choice(obj: dict[str, Any], key: str, kind: Any, where: str) -> Any:
    value = obj.get(key)
    allowed: tuple[str, ...] = get_args(kind)
    if value not in allowed:
        raise InvalidInput(f"{where}.{key}", f"expected one of {', '.join(allowed)}", value=value)
    return cast(str, value)
