"""Inbound verification: the SPF, DKIM and DMARC results of one received message.

:func:`authenticate` is what the MX runs once per message, before it stores
it. The three checks run side by side and every DNS question goes through
the fleet's :class:`~mailfleet.auth.dns.Resolver` (one cache):

- **SPF** (RFC 7208): :func:`~mailfleet.auth.spfcheck.check_host` for the
  client's IP and the MAIL FROM domain, or the HELO name for a null sender.
  No client IP (a delivery that did not come over SMTP) is ``none``.
- **DKIM** (RFC 6376): every ``DKIM-Signature`` verified by dkimpy against
  the published key, in a worker thread (RSA and Ed25519). A DNS failure or
  timeout is ``temperror``, a key that is not published, or is malformed or
  revoked, ``permerror`` (RFC 6376 6.1.2, "no key for signature"), a
  signature field dkimpy cannot read ``neutral``, a signature that does not
  verify (or expired) ``fail``. A message without a signature costs no thread.
- **DMARC** (RFC 7489): the domain of the message's single From address,
  its policy (:func:`~mailfleet.auth.dmarc.lookup_dmarc`, with the
  organizational-domain fallback) and identifier alignment: ``pass`` when a
  passing signature's ``d=`` is aligned (``adkim``) or SPF passed for an
  aligned MAIL FROM domain (``aspf``; SPF of the HELO name does not count).
  ``none`` without a record, ``permerror`` for a broken record or a From
  header that names no single address, ``temperror`` when DNS failed. A
  failing message's disposition is the policy; ``pct=`` below 100 is not
  sampled (the result would not be reproducible): the policy is applied
  and the reason says what ``pct`` asked.

Verification never raises for what the message contains: unreadable mail
gets ``permerror`` results, logged at DEBUG (``mailfleet.auth``).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import re
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from mailfleet.model.addresses import normalize_domain
from mailfleet.model.authentication import (
    Authentication,
    DkimResult,
    DkimSignatureResult,
    DmarcCheck,
    SpfCheck,
)
from mailfleet.model.errors import DnsError, InvalidInput

from .dns import answers_expiry

if TYPE_CHECKING:
    from .dmarc import DmarcLookup
    from .dns import DkimDnsFunc, Resolver

__all__ = ["InboundVerifier", "authenticate"]

log = logging.getLogger("mailfleet.auth")

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SIGNATURE_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HEADER_B_CHARS = 8
# From: with one plain address, bare or in angle brackets: read without the email package.
_SIMPLE_FROM = re.compile(
    r'\s*(?:[^<>@",;:()\\]*<)?([A-Za-z0-9.!#$%&\'*+/=?^_`{|}~-]+)@([A-Za-z0-9.-]+)>?\s*'
)
MEMO_SECONDS = 30.0
"""Seconds at most the verdict on unsigned mail from one sender is reused (InboundVerifier)."""
_MEMO_SIZE = 10_000


class InboundVerifier:
    """:func:`authenticate` for one MX (``authserv_id``) through ``resolver``, with a memo.

    The results for an unsigned message depend only on the client's IP, its
    HELO and MAIL FROM, the From domain and the DNS answers they were drawn
    from, so they are reused while every one of those answers is still
    within its TTL, and for :data:`MEMO_SECONDS` at most (bounded to 10,000
    senders; expired ones are dropped every :data:`MEMO_SECONDS`, so that senders
    seen once, such as VERP bounce addresses, do not pile up): a busy sender
    costs one evaluation per half minute, and a record changed is seen as soon
    as a receiver with a cache would see it.
    Signed mail is always verified, since its results depend on the message.
    """

    def __init__(self, resolver: Resolver, *, authserv_id: str) -> None:
        self._resolver = resolver
        self._authserv_id = authserv_id
        # (ip, helo, mail from, From domain) -> (reusable until, time.time(); the results)
        self._memo: dict[tuple[str, str, str, str], tuple[float, Authentication]] = {}
        self._sweep_at = 0.0

    async def __call__(
        self, raw: bytes, *, ip: str | None, helo: str, mail_from: str
    ) -> Authentication:
        """The results for ``raw``, as :func:`authenticate` gives them."""
        verify = partial(
            authenticate,
            self._resolver,
            raw,
            ip=ip,
            helo=helo,
            mail_from=mail_from,
            authserv_id=self._authserv_id,
        )
        signed = _SIGNATURE_FIELD.search(raw, 0, _header_length(raw)) is not None
        if signed or ip is None:
            return await verify()
        from_domain, problem = _from_domain(raw)
        key = (ip, helo.lower(), mail_from.lower(), problem or from_domain)
        now = time.time()
        known = self._memo.get(key)
        if known is not None and now < known[0]:
            return known[1]
        with answers_expiry() as expiries:
            found = await verify()
        until = min([now + MEMO_SECONDS, *expiries])
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        elif now >= self._sweep_at:  # senders seen once (bounce addresses...) do not stay
            self._sweep_at = now + MEMO_SECONDS
            self._memo = {k: v for k, v in self._memo.items() if v[0] > now}
        if until > time.time():  # an answer with TTL 0 has already expired: not reused
            self._memo[key] = (until, found)
        else:
            self._memo.pop(key, None)
        return found


async def authenticate(
    resolver: Resolver,
    raw: bytes,
    *,
    ip: str | None,
    helo: str,
    mail_from: str,
    authserv_id: str,
) -> Authentication:
    """SPF, DKIM and DMARC for ``raw`` received from ``ip`` (``HELO helo``,
    ``MAIL FROM:<mail_from>``, ``""`` for the null sender), as the MX named
    ``authserv_id`` reports them (with the ``Authentication-Results`` value).

    Never raises for the message's content or the DNS: results say what
    went wrong.
    """
    from_domain, from_problem = _from_domain(raw)
    signed = _SIGNATURE_FIELD.search(raw, 0, _header_length(raw)) is not None
    spf = _spf_cached(resolver, ip, helo=helo, mail_from=mail_from)
    dkim: tuple[DkimSignatureResult, ...] = ()
    policy: DmarcLookup | DnsError | None = None
    if spf is not None and not signed:
        # The common case, unsigned mail from a sender seen before: nothing to wait
        # for but the DMARC record (cached too), so no task group.
        if from_problem is None:
            policy = await _lookup_policy(resolver, from_domain)
    else:

        async def check_spf() -> None:
            nonlocal spf
            assert ip is not None  # without one, the result is known without looking up
            spf = await _spf(resolver, ip, helo=helo, mail_from=mail_from)

        async def check_dkim() -> None:
            nonlocal dkim
            dkim = await _dkim(resolver, raw)

        async def find_policy() -> None:
            nonlocal policy
            policy = await _lookup_policy(resolver, from_domain)

        async with anyio.create_task_group() as tasks:
            if spf is None:
                tasks.start_soon(check_spf)
            if signed:
                tasks.start_soon(check_dkim)
            if from_problem is None:
                tasks.start_soon(find_policy)
    assert spf is not None
    if from_problem is not None:
        dmarc = DmarcCheck("permerror", "", None, "none", False, False, from_problem)
    else:
        dmarc = _dmarc(from_domain, policy, spf, dkim)
    return Authentication.create(spf=spf, dkim=dkim, dmarc=dmarc, authserv_id=authserv_id)


# -- SPF -------------------------------------------------------------------------------


def _spf_cached(
    resolver: Resolver, ip: str | None, *, helo: str, mail_from: str
) -> SpfCheck | None:
    """The SPF result when it needs no lookup (no client IP, or every name cached), else None."""
    from .spfcheck import check_host_cached

    if ip is None or not _is_ip(ip):
        return _spf_error("none", helo, mail_from, "no client IP address: not received over SMTP")
    try:
        verdict = check_host_cached(resolver, ip, sender=mail_from, helo=helo)
    except Exception as exc:  # pyspf on input it cannot take: still a verdict
        return _spf_error("permerror", helo, mail_from, f"{type(exc).__name__}: {exc}")
    if verdict is None:
        return None
    return SpfCheck(verdict.result, verdict.domain, verdict.identity, verdict.explanation)


async def _spf(resolver: Resolver, ip: str, *, helo: str, mail_from: str) -> SpfCheck:
    """The SPF result of the session, looking names up as needed (``ip`` is an address)."""
    from .spfcheck import check_host

    try:
        verdict = await check_host(resolver, ip, sender=mail_from, helo=helo)
    except Exception as exc:  # pyspf on input it cannot take: still a verdict
        return _spf_error("permerror", helo, mail_from, f"{type(exc).__name__}: {exc}")
    return SpfCheck(verdict.result, verdict.domain, verdict.identity, verdict.explanation)


def _spf_error(result: Any, helo: str, mail_from: str, why: str) -> SpfCheck:
    """A result SPF's evaluation did not give: for the identity it would have checked."""
    if result == "permerror":
        log.debug("SPF could not evaluate %r / %r: %s", mail_from, helo, why)
    if mail_from:
        return SpfCheck(result, mail_from.rsplit("@", 1)[-1].lower(), "mailfrom", why)
    return SpfCheck(result, helo.lower(), "helo", why)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- DKIM ------------------------------------------------------------------------------


async def _dkim(resolver: Resolver, raw: bytes) -> tuple[DkimSignatureResult, ...]:
    """One result per DKIM-Signature, verified in a worker thread."""
    return await anyio.to_thread.run_sync(_verify_signatures, raw, resolver.dkim_dnsfunc())


class _Errors:
    """A logger for dkimpy that keeps what it reports as errors (why a key was unusable)."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def error(self, message: object, *args: object) -> None:
        self.said.append(str(message) % args if args else str(message))

    def debug(self, *args: object, **kwargs: object) -> None:
        pass

    info = warning = debug


def _verify_signatures(raw: bytes, dnsfunc: DkimDnsFunc) -> tuple[DkimSignatureResult, ...]:
    import dkim

    errors = _Errors()
    try:
        verifier = dkim.DKIM(raw, logger=errors)
    except Exception as exc:  # the header block dkimpy cannot read: no signature can pass
        reason = f"the message cannot be read: {exc}"
        count = len(_SIGNATURE_FIELD.findall(raw, 0, _header_length(raw)))
        return tuple(DkimSignatureResult("permerror", "", "", "", reason) for _ in range(count))
    fields = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results: list[DkimSignatureResult] = []
    for index, value in enumerate(fields):
        tags = _tags(value)
        result, reason = _verify_one(dkim, verifier, index, dnsfunc, errors)
        results.append(
            DkimSignatureResult(
                result=result,
                domain=tags.get("d", "").lower(),
                selector=tags.get("s", ""),
                algorithm=tags.get("a", "").lower(),
                reason=reason,
                signature=tags.get("b", "")[:_HEADER_B_CHARS],
            )
        )
    return tuple(results)


def _verify_one(
    dkim: Any, verifier: Any, index: int, dnsfunc: DkimDnsFunc, errors: _Errors
) -> tuple[DkimResult, str]:
    """The result of signature ``index`` and why, as RFC 6376 and RFC 8601 class it."""
    try:
        verifier.verify_headerprep(index)
    except dkim.DKIMException as exc:
        text = str(exc)
        if "x= value is past" in text:
            return "fail", "signature expired"
        return "neutral", f"the signature field cannot be used: {text}"
    except Exception as exc:
        return "neutral", f"the signature field cannot be used: {type(exc).__name__}: {exc}"
    errors.said.clear()
    try:
        verified = verifier.verify(idx=index, dnsfunc=dnsfunc)
    except DnsError as exc:
        return "temperror", f"the key could not be looked up: {exc}"
    except (dkim.KeyFormatError, dkim.UnknownKeyTypeError) as exc:
        return "permerror", f"the key cannot be used: {exc}"
    except dkim.ValidationError as exc:  # the body hash, among others
        return "fail", str(exc)
    except dkim.DKIMException as exc:
        return "neutral", str(exc)
    except Exception as exc:  # dkimpy on input it does not expect
        return "permerror", f"{type(exc).__name__}: {exc}"
    if verified:
        return "pass", ""
    if errors.said:  # dkimpy reports an unusable key by logging it and answering False
        said = errors.said[-1]
        if said.startswith("missing public key"):
            return "permerror", "no key for signature"
        return "permerror", f"the key cannot be used: {said}"
    return "fail", "signature did not verify"


def _tags(value: bytes) -> dict[str, str]:
    """The tags of a DKIM-Signature value, tolerant of anything (for the record only)."""
    tags: dict[str, str] = {}
    for part in value.decode("ascii", "replace").split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), "".join(tag_value.split()))
    return tags


# -- DMARC -----------------------------------------------------------------------------


async def _lookup_policy(resolver: Resolver, domain: str) -> DmarcLookup | DnsError:
    from .dmarc import lookup_dmarc

    try:
        return await lookup_dmarc(resolver, domain)
    except DnsError as exc:
        return exc


def _dmarc(
    from_domain: str,
    found: DmarcLookup | DnsError | None,
    spf: SpfCheck,
    dkim: tuple[DkimSignatureResult, ...],
) -> DmarcCheck:
    """The DMARC result from the policy found and the SPF and DKIM results."""
    record = None if found is None or isinstance(found, DnsError) else found.record
    adkim = record.adkim if record else "r"
    aspf = record.aspf if record else "r"
    aligned_dkim = any(
        signature.passed
        and bool(signature.domain)
        and _aligned(signature.domain, from_domain, adkim)
        for signature in dkim
    )
    aligned_spf = (
        spf.passed
        and spf.identity == "mailfrom"
        and bool(spf.domain)
        and _aligned(spf.domain, from_domain, aspf)
    )
    if found is None or isinstance(found, DnsError):
        reason = f"the DMARC policy could not be looked up: {found}"
        return DmarcCheck("temperror", from_domain, None, "none", aligned_dkim, aligned_spf, reason)
    if record is None:
        result: Any = "permerror" if found.records else "none"
        return DmarcCheck(
            result, from_domain, None, "none", aligned_dkim, aligned_spf, found.problem or ""
        )
    policy = found.policy
    assert policy is not None
    if aligned_dkim or aligned_spf:
        return DmarcCheck("pass", from_domain, policy, "none", aligned_dkim, aligned_spf)
    reason = "no passing DKIM signature and no SPF pass aligned with the From domain"
    if record.pct < 100:
        reason += f" (the policy asks pct={record.pct}; applied to every failing message)"
    return DmarcCheck("fail", from_domain, policy, policy, False, False, reason)


def _aligned(first: str, second: str, mode: Any) -> bool:
    from .dmarc import aligned

    try:
        return aligned(first, second, mode)
    except InvalidInput:  # an envelope domain that is no domain aligns with nothing
        return False


# -- the From header ---------------------------------------------------------------------


def _header_length(raw: bytes) -> int:
    """Where the header block ends (the whole message when no blank line ends it)."""
    end = _HEADER_END.search(raw)
    return len(raw) if end is None else end.start()


def _from_domain(raw: bytes) -> tuple[str, str | None]:
    """The domain of the single From address, or ``("", why not)`` (RFC 7489 6.6.1)."""
    values = [value for name, value in _header_fields(raw[: _header_length(raw)]) if name == "from"]
    if not values:
        return "", "the message has no From header"
    if len(values) > 1:
        return "", f"the message has {len(values)} From headers"
    simple = _SIMPLE_FROM.fullmatch(values[0])
    if simple is not None:
        try:
            return normalize_domain(simple.group(2), field="from"), None
        except InvalidInput:
            pass  # the full reading below explains
    addresses = [address for _name, address in email.utils.getaddresses(values) if address]
    if len(addresses) != 1:
        return "", f"the From header names {len(addresses)} addresses, not one"
    local, at, domain = addresses[0].rpartition("@")
    if not at or not local:
        return "", f"the From address {addresses[0]!r} has no domain"
    try:
        return normalize_domain(domain, field="from"), None
    except InvalidInput as exc:
        return "", f"the From domain {domain!r} is not a domain: {exc}"


def _header_fields(block: bytes) -> list[tuple[str, str]]:
    """The fields of a header block: (lower-case name, unfolded value), in order."""
    fields: list[tuple[str, str]] = []
    for line in re.split(rb"\r?\n", block):
        if line[:1] in (b" ", b"\t"):
            if fields:
                name, text = fields[-1]
                fields[-1] = (name, text + " " + line.decode("utf-8", "replace").strip())
            continue
        field, sep, value = line.partition(b":")
        if sep:
            fields.append(
                (field.decode("ascii", "replace").strip().lower(), value.decode("utf-8", "replace"))
            )
    return fields
