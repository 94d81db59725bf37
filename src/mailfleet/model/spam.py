"""Spam scoring, pure: the signals a message shows, their weights, and the verdict.

Every inbound message the MX takes is scored. Each thing that makes it look
like spam is a :class:`SpamSignal` with a score; the message's score is their
sum, and the workspace policy's threshold
(:attr:`~mailfleet.model.policy.Policy.effective_spam_threshold`: the spam
sensitivity's number, or its own ``spam_threshold``) decides the
:class:`SpamVerdict`. A *decisive* signal (an inbound rule's ``mark_spam``)
makes the message spam whatever the threshold, even with the sensitivity
``off``.

Where the signals come from:

- :func:`authentication_signals`: the SPF, DKIM and DMARC results the MX
  verified (:class:`~mailfleet.model.authentication.Authentication`);
- :func:`header_signals`: anomalies of the header, from the facts
  ``mail/spamfacts.py`` reads (:class:`HeaderFacts`): no ``Date``, no
  ``Message-ID``, a From display name that shows an address of another
  domain, a Reply-To of another domain;
- DNS blocklists (``runtime/dnsbl.py``), and scorers plugins contribute
  (``mailfleet_spam_scorers``): each a :class:`SpamScorer`;
- :func:`rule_signal`, for the inbound rules that mark as spam.

The weights (:data:`WEIGHTS`) follow the spirit of SpamAssassin's: no single
header oddity makes a message spam at the default (medium) sensitivity, a
DMARC failure plus one more does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .authentication import Authentication
from .errors import InvalidInput

__all__ = [
    "WEIGHTS",
    "HeaderFacts",
    "SpamInput",
    "SpamScorer",
    "SpamSignal",
    "SpamVerdict",
    "authentication_signals",
    "header_signals",
    "judge",
    "rule_signal",
]

WEIGHTS: Mapping[str, float] = {
    "dmarc_fail": 3.5,
    "spf_fail": 2.5,
    "spf_softfail": 1.0,
    "dkim_fail": 1.5,
    "dkim_none": 1.0,
    "missing_date": 1.0,
    "missing_message_id": 1.0,
    "forged_from": 3.0,
    "reply_to_mismatch": 1.5,
}
"""The score of each built-in signal. A DNS blocklist listing scores the
``dnsbl_score`` setting (4.0 by default) per zone that lists the message."""


@dataclass(frozen=True, slots=True)
class SpamSignal:
    """One reason a message looks like spam: ``name`` (``dmarc_fail``,
    ``dnsbl:zen.example.org``, ``rule:<id>``, a plugin's own), its ``score``
    (negative for what speaks for the message) and a ``detail`` in words.
    ``decisive``: spam whatever the score (an inbound rule's ``mark_spam``)."""

    name: str
    score: float
    detail: str = ""
    decisive: bool = False

    def as_json(self) -> dict[str, Any]:
        """A JSON object of the fields (``decisive`` only when set)."""
        data: dict[str, Any] = {"name": self.name, "score": self.score, "detail": self.detail}
        if self.decisive:
            data["decisive"] = True
        return data

    @classmethod
    def from_json(cls, data: Any) -> SpamSignal:
        """The signal :meth:`as_json` gave; :class:`InvalidInput` for anything else."""
        if not isinstance(data, dict):
            raise InvalidInput("spam.signals", "expected an object", value=data)
        name, score = data.get("name"), data.get("score")
        if (
            not isinstance(name, str)
            or isinstance(score, bool)
            or not isinstance(score, int | float)
        ):
            raise InvalidInput("spam.signals", "expected a name and a score", value=data)
        return cls(
            name=name,
            score=float(score),
            detail=str(data.get("detail", "")),
            decisive=bool(data.get("decisive", False)),
        )


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    """A message's spam score, the threshold it was judged by, and why.

    ``threshold`` is None when the workspace's sensitivity is ``off`` (nothing
    is filed as spam but by a decisive signal). Stored with the message
    (``messages.spam``) and given to agents as ``InboundMessage.spam``.
    """

    score: float
    threshold: float | None
    spam: bool
    signals: tuple[SpamSignal, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """The names of the signals, in the order they were found."""
        return tuple(signal.name for signal in self.signals)

    def as_json(self) -> dict[str, Any]:
        """A JSON object: ``score``, ``threshold``, ``spam``, ``signals``."""
        return {
            "score": self.score,
            "threshold": self.threshold,
            "spam": self.spam,
            "signals": [signal.as_json() for signal in self.signals],
        }

    @classmethod
    def from_json(cls, data: Any) -> SpamVerdict:
        """The verdict :meth:`as_json` gave; :class:`InvalidInput` for anything else."""
        if not isinstance(data, dict) or not isinstance(data.get("signals", []), list):
            raise InvalidInput("spam", "expected a spam verdict object", value=data)
        threshold = data.get("threshold")
        return cls(
            score=float(data.get("score", 0.0)),
            threshold=None if threshold is None else float(threshold),
            spam=bool(data.get("spam", False)),
            signals=tuple(SpamSignal.from_json(s) for s in data.get("signals", [])),
        )


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """What the header says that matters for spam (read by ``mail/spamfacts.py``).

    Domains are in lower case; ``display_name_domains`` are the domains of
    the addresses written inside the From display name (``"paypal.com
    <x@elsewhere.example>"``), ``reply_to_domains`` those of the Reply-To.
    """

    has_date: bool
    has_message_id: bool
    from_domain: str | None
    display_name_domains: tuple[str, ...] = ()
    reply_to_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpamInput:
    """What a scorer is given: one message as the MX received it.

    ``peer`` is the connecting IP address (None for mail that did not come in
    over SMTP), ``helo`` its greeting, ``mail_from`` the envelope sender (empty
    for ``<>``), ``headers`` the header fields as read on arrival, decoded,
    in order, and ``authentication`` the SPF, DKIM and DMARC results.
    """

    raw: bytes
    headers: tuple[tuple[str, str], ...]
    peer: str | None = None
    helo: str | None = None
    mail_from: str | None = None
    authentication: Authentication | None = None
    facts: HeaderFacts | None = None


class SpamScorer(Protocol):
    """A source of spam signals (a DNS blocklist, a plugin's classifier...).

    ``score`` is awaited once per message, before it is stored; it should
    answer quickly (the sender waits for the 250) and never needs to raise:
    a scorer that raises is logged and left out of that message's score.
    """

    name: str

    async def score(self, message: SpamInput) -> Iterable[SpamSignal]:
        """The signals this scorer finds in ``message`` (none: it looks fine)."""
        ...


def _signal(name: str, detail: str) -> SpamSignal:
    return SpamSignal(name, WEIGHTS[name], detail)


def authentication_signals(authentication: Authentication | None) -> list[SpamSignal]:
    """The signals of the verification results: DMARC fail, SPF fail or softfail,
    a DKIM signature that fails, or none at all. None (not verified): no signal."""
    if authentication is None:
        return []
    found: list[SpamSignal] = []
    dmarc = authentication.dmarc
    if dmarc.result == "fail":
        found.append(
            _signal(
                "dmarc_fail",
                f"DMARC fails for {dmarc.from_domain} (policy {dmarc.policy or 'none'})",
            )
        )
    spf = authentication.spf
    if spf.result == "fail":
        found.append(_signal("spf_fail", f"SPF fails for {spf.domain}"))
    elif spf.result == "softfail":
        found.append(_signal("spf_softfail", f"SPF soft-fails for {spf.domain}"))
    dkim = authentication.dkim_result
    if dkim == "none":
        found.append(_signal("dkim_none", "the message has no DKIM signature"))
    elif dkim in ("fail", "permerror", "neutral"):
        first = authentication.dkim[0]
        found.append(
            _signal("dkim_fail", f"the DKIM signature of {first.domain or '?'} does not verify")
        )
    return found


def _foreign(domain: str, home: str | None) -> bool:
    """Whether ``domain`` is another domain than ``home`` (a subdomain of it, or it of
    ``domain``, is the same sender)."""
    if not home:
        return True
    return not (domain == home or domain.endswith("." + home) or home.endswith("." + domain))


def header_signals(facts: HeaderFacts) -> list[SpamSignal]:
    """The signals of header anomalies: no Date, no Message-ID, a From display name
    showing an address of another domain, a Reply-To of another domain."""
    found: list[SpamSignal] = []
    if not facts.has_date:
        found.append(_signal("missing_date", "the message has no Date header"))
    if not facts.has_message_id:
        found.append(_signal("missing_message_id", "the message has no Message-ID header"))
    shown = [d for d in facts.display_name_domains if _foreign(d, facts.from_domain)]
    if shown:
        found.append(
            _signal(
                "forged_from",
                f"the From display name shows an address at {shown[0]}, "
                f"the address is at {facts.from_domain or '(none)'}",
            )
        )
    replies = [d for d in facts.reply_to_domains if _foreign(d, facts.from_domain)]
    if replies and facts.from_domain:
        found.append(
            _signal(
                "reply_to_mismatch",
                f"replies go to {replies[0]}, the message is from {facts.from_domain}",
            )
        )
    return found


def rule_signal(rule_id: str, *, name: str | None = None, score: float = 0.0) -> SpamSignal:
    """The decisive signal of an inbound rule whose action is ``mark_spam``."""
    return SpamSignal(
        f"rule:{rule_id}",
        score,
        f"the rule {name or rule_id} marks it as spam",
        decisive=True,
    )


def judge(signals: Sequence[SpamSignal], threshold: float | None) -> SpamVerdict:
    """The verdict on ``signals`` at ``threshold`` (None: only a decisive signal makes
    spam). A score at the threshold is spam."""
    score = round(sum(signal.score for signal in signals), 3)
    spam = any(signal.decisive for signal in signals) or (
        threshold is not None and score >= threshold
    )
    return SpamVerdict(score=score, threshold=threshold, spam=spam, signals=tuple(signals))
