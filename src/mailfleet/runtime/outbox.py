"""What ``Agent.send`` / ``reply`` reach: the outbound gates, building, signing, the outbox.

The gates answer with values (:class:`~mailfleet.SendResult`), in one fixed
order, the first that refuses giving the answer:

1. **status**: the grant paused (``paused``) or gone; its workspace, domain or
   application paused as a whole (``paused``);
2. **restriction**: the grant, its workspace, domain or application
   restricted by an operator (``restricted``);
3. **recipient**: syntax, and whether each recipient's domain accepts mail
   (``invalid_recipient``);
4. **suppression**: a recipient bounced, complained or unsubscribed
   (``suppressed``); then **consent**: a ``campaign`` recipient must have
   confirmed by double opt-in (``opt_in_pending``; a first confirmation is
   sent then, :class:`~mailfleet.runtime.consent.Consent`);
5. **rules**: an outbound rule blocks it (``blocked_by_rule``);
6. **quota and rate**: the warm-up ramps, the daily quota, the rate and burst
   (``rate_limited`` with ``retry_after``; a send over the burst is
   ``queued`` with the ``send_at`` it leaves at, and a deferred one too);
7. **breaker**: a grant whose breaker is slow or held is ``queued`` all the
   same, its message leaving as the breaker allows (``detail`` says so; the
   sender decides at release, :mod:`mailfleet.store.breaker`);
8. **domain authentication**: outside dev mode, the sending domain's DNS
   must be verified (``domain_not_authenticated``).

Recipient syntax and domains are checked before the transaction, every other
gate inside the one that queues the message, so a pause, a restriction, a
failed audit or a bounce takes effect at once. An accepted message is built,
DKIM-signed with its domain's keys, stored with a VERP envelope sender
(``bounces+TOKEN@domain``, unique to this send) and queued for the
:class:`~mailfleet.runtime.sender.Sender`.

A ``bulk`` or ``campaign`` send goes to one recipient and carries that
recipient's ``List-Unsubscribe`` (``<mailto:unsubscribe+TOKEN@domain>, <URL>``)
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, signed by DKIM
with the rest; the recipient and the key of its token are remembered in
the transaction that queues it, so the link works as soon as it can arrive.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from ..model.addresses import parse_address
from ..model.deliverability import Suppression
from ..model.errors import InvalidAddress, InvalidInput, SigningFailed
from ..model.messages import MessageHeaders
from ..model.outbound import OutgoingMail, SendCategory, SendResult, SendStatus
from ..model.pacing import Admission
from ..model.records import Grant, GrantStatus
from ..store import (
    consent,
    domain_checks,
    domains,
    grants,
    idempotency,
    outbound,
    pacing,
    reputation,
    restrictions,
    suppressions,
)
from ..store.consent import RecipientToken
from ..store.outbound import NewOutbound
from ..store.scope import Scope, Tx
from ..store.tables import new_id
from .batching import FLEET_CLOSED, GroupCommit
from .recipients import RecipientDomains

# Building, signing and parsing mail are imported by the first send: a fleet
# opened to read or change the directory never needs them.
if TYPE_CHECKING:
    from ..auth.dkim import DkimSigner
    from ..auth.keystore import KeyStore
    from ..mail.build import OutgoingAttachment
    from ..mail.inbound import InboundMessage
    from .consent import ConsentTokens

__all__ = ["SIGNER_LIFETIME", "OutboundRule", "Outbox", "QueuedHook", "verp_address"]

log = logging.getLogger("mailfleet.outbox")

SIGNER_LIFETIME = 60.0
"""Seconds a domain's loaded keys are reused before they are read again, so a rotation
promoted by another worker signs here within a minute (the key it replaces stays
published while retiring, so signing with it meanwhile is harmless)."""


def verp_address(token: str, domain: str) -> str:
    """The envelope sender of one send: bounces to it name the send."""
    return f"bounces+{token}@{domain}"


OutboundRule = Callable[[Tx, OutgoingMail], "str | None"]
"""An outbound rule: given the queuing transaction and the send, why it is blocked
(``blocked_by_rule``), or None."""

QueuedHook = Callable[[Tx, str], "SendResult | None"]
"""Called in the transaction that queues an accepted send, with its Message-ID: writes
what must commit with the message (an opt-in request), or refuses it after all."""


@dataclass(frozen=True, slots=True)
class _Queued:
    grant: Grant
    recipients: tuple[str, ...]
    subject: str
    message: NewOutbound | None
    """None when the recipient gate refused it (``refusal``): nothing was built."""
    message_id: str | None = None
    refusal: SendResult | None = None
    defer: bool = False
    category: SendCategory = SendCategory.TRANSACTIONAL
    unsubscribe_key: str | None = None
    """Bulk and campaign: the key of the recipient's unsubscribe token, to remember."""
    on_queued: QueuedHook | None = None
    idempotency_key: str | None = None
    """The digest of the send's idempotency key."""

    @property
    def grant_id(self) -> str:
        return self.grant.id

    @property
    def workspace_id(self) -> str:
        return self.grant.workspace_id

    @property
    def domain(self) -> str:
        return self.grant.domain


class Outbox:
    """Gates, builds, signs and queues outbound mail for agents: the
    :class:`~mailfleet.agent.AgentContext` they are lent.

    Signing runs in a worker thread (OpenSSL releases the GIL) and storing
    is a group commit: many agents sending at once share one transaction.
    """

    def __init__(
        self,
        scope: Scope,
        *,
        queued: Callable[[], None],
        require_verified_domains: bool = False,
        envelope_domain: Callable[[str], str] | None = None,
        recipient_domains: RecipientDomains | None = None,
        keystore: Callable[[], KeyStore] | None = None,
        tokens: ConsentTokens | None = None,
        opt_in_pending: Callable[[Grant, str], Awaitable[str]] | None = None,
    ) -> None:
        self._scope = scope
        self._tokens = tokens
        self._opt_in_pending = opt_in_pending
        self._queued = queued
        self._require_verified = require_verified_domains
        self._envelope_domain = envelope_domain or (lambda domain: domain)
        self._recipient_domains = recipient_domains
        self._keystore = keystore
        self._rules: list[OutboundRule] = []
        # domain -> (loaded at, signer, or why its keys cannot be opened): reloaded after
        # SIGNER_LIFETIME, or at once when this process rotates the domain's keys
        # (forget_signer). A failure is kept as long, so a key that does not open is
        # logged once per load, not at every send.
        self._signers: dict[str, tuple[float, DkimSigner | SigningFailed | None]] = {}
        # Messages are signed in batches, one thread hop per batch: OpenSSL runs
        # beside the event loop without the GIL, and the hops do not pile up.
        self._signing: GroupCommit[_Unsigned, tuple[bytes, MessageHeaders]] = GroupCommit(
            _sign_batch, closed_error=FLEET_CLOSED
        )
        self._signer_lock = anyio.Lock()
        self._batches: GroupCommit[_Queued, SendResult] = GroupCommit(
            self._commit, closed_error=FLEET_CLOSED
        )

    def add_rule(self, rule: OutboundRule) -> None:
        """Evaluate ``rule`` on every send, after the suppression list (gate 5)."""
        self._rules.append(rule)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sign and commit queued messages until cancelled."""
        async with anyio.create_task_group() as tg:
            await tg.start(self._signing.run)
            await tg.start(self._batches.run)
            task_status.started()

    async def send(
        self,
        grant: Grant,
        to: Sequence[str],
        *,
        subject: str,
        text: str,
        html: str | None,
        in_reply_to: InboundMessage | None,
        attachments: Sequence[OutgoingAttachment] = (),
        defer: bool = False,
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        reply_to: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        category: SendCategory | str = SendCategory.TRANSACTIONAL,
        auto_submitted: str | None = None,
        on_queued: QueuedHook | None = None,
    ) -> SendResult:
        """Pass the gates, build, sign and queue the message; ``defer``: a send the quota,
        rate or a ramp would refuse is queued for when it is admitted instead.
        ``category``: ``bulk`` and ``campaign`` sends carry the recipient's unsubscribe
        headers, ``campaign`` ones go only to confirmed recipients (module docstring).
        ``auto_submitted`` sets that header; ``on_queued`` runs in the queuing
        transaction of an accepted send (:data:`QueuedHook`).

        ``cc`` recipients are named in the message, ``bcc`` ones only in the envelope;
        every recipient passes the recipient, suppression and rule gates. ``headers``
        adds fields the builder does not write itself (``X-Campaign``...). With
        ``idempotency_key``, a send already queued under that key (by any process of the
        application) is answered again instead of being sent twice: the key's digest is
        stored with the message, in the transaction that queues it.
        """
        from ..mail.build import build_message
        from ..mail.parse import normalize_subject

        key = None if idempotency_key is None else idempotency.digest(idempotency_key)

        def refused(result: SendResult, recipients: tuple[str, ...] = ()) -> _Queued:
            return _Queued(grant, recipients, subject, None, refusal=result, idempotency_key=key)

        if not to:
            return _refused(
                grant.id, SendResult(SendStatus.REJECTED, detail="to: at least one recipient")
            )
        try:
            kind = SendCategory(category)
        except ValueError:
            allowed = ", ".join(c.value for c in SendCategory)
            detail = f"category: {category!r} is not one of {allowed}"
            return _refused(grant.id, SendResult(SendStatus.REJECTED, detail=detail))
        try:
            named = {
                field: tuple(dict.fromkeys(str(parse_address(a, field=field)) for a in given))
                for field, given in (("to", to), ("cc", cc), ("bcc", bcc))
            }
        except InvalidAddress as exc:
            invalid = SendResult(SendStatus.INVALID_RECIPIENT, detail=str(exc))
            return await self._batches.submit(refused(invalid))
        recipients = tuple(dict.fromkeys((*named["to"], *named["cc"], *named["bcc"])))
        if self._recipient_domains is not None:
            undeliverable = await self._recipient_domains.refused(recipients)
            if undeliverable:
                detail = "to: " + "; ".join(f"{a}: {why}" for a, why in undeliverable)
                invalid = SendResult(SendStatus.INVALID_RECIPIENT, detail=detail)
                return await self._batches.submit(refused(invalid, recipients))
        list_fields: dict[str, str] = {}
        unsubscribe_key = None
        if kind is not SendCategory.TRANSACTIONAL:
            if len(recipients) != 1:
                detail = (
                    f"to: a {kind.value} send goes to one recipient, each with its own "
                    f"unsubscribe link ({len(recipients)} given: send to each)"
                )
                return _refused(grant.id, SendResult(SendStatus.REJECTED, detail=detail))
            if self._tokens is None:
                detail = f"category: {kind.value} sends need the fleet's unsubscribe tokens"
                return _refused(grant.id, SendResult(SendStatus.REJECTED, detail=detail))
            list_fields, unsubscribe = await self._tokens.list_headers(grant, recipients[0])
            unsubscribe_key = unsubscribe.key_hex
        try:
            built = build_message(
                sender=grant.address,
                to=named["to"],
                cc=named["cc"],
                reply_to=tuple(reply_to) or None,
                headers={**(headers or {}), **list_fields},
                subject=subject,
                text=text,
                html=html,
                in_reply_to=None if in_reply_to is None else in_reply_to.parsed,
                attachments=attachments,
                message_id_domain=grant.domain,
                auto_submitted=auto_submitted,
            )
        except InvalidInput as exc:  # a line break in the subject, a bad header...
            return _refused(grant.id, SendResult(SendStatus.REJECTED, detail=str(exc)))
        raw, message_id = built.raw, built.message_id
        signer = await self._signer(grant.domain)
        raw, read = await self._signing.submit(_Unsigned(signer, raw))
        token = secrets.token_hex(10)
        thread = (in_reply_to.thread_id if in_reply_to else None) or new_id()
        item = NewOutbound(
            grant_id=grant.id,
            raw=raw,
            headers=read,
            recipients=tuple(recipients),
            verp_token=token,
            mail_from=verp_address(token, self._envelope_domain(grant.domain)),
            thread_id=thread,
            thread_subject=normalize_subject(subject) or None,
            idempotency_key=key,
        )
        result = await self._batches.submit(
            _Queued(
                grant,
                recipients,
                subject,
                item,
                message_id,
                defer=defer,
                category=kind,
                unsubscribe_key=unsubscribe_key,
                on_queued=on_queued,
                idempotency_key=key,
            )
        )
        if result.status is SendStatus.OPT_IN_PENDING and self._opt_in_pending is not None:
            result = replace(result, detail=await self._opt_in_pending(grant, recipients[0]))
        return result

    async def _commit(self, batch: Sequence[_Queued]) -> Sequence[SendResult]:
        results = await self._scope.write(lambda tx: self._store(tx, batch))
        if any(result.ok for result in results):
            self._queued()
        for queued, result in zip(batch, results, strict=True):
            if not result.ok:
                _refused(queued.grant_id, result)
        return results

    def _store(self, tx: Tx, batch: Sequence[_Queued]) -> list[SendResult]:
        # Every gate reads the store in the transaction that queues: a change takes
        # effect at once. The gates run in the documented order (module docstring).
        statuses = grants.statuses(tx, {q.grant_id for q in batch})
        wide = ({q.workspace_id for q in batch}, {q.domain for q in batch})
        paused = reputation.paused_subjects(tx, *wide)
        restricted = restrictions.restricted_subjects(tx, *wide)
        blocked = _suppressed(tx, batch)
        confirmed = _confirmed(tx, batch)
        again, same_as = _already_queued(tx, batch)
        results: list[SendResult | None] = []
        for index, queued in enumerate(batch):
            if index in again or index in same_as:  # answered below, through no gate
                results.append(again.get(index, _PLACEHOLDER))
                continue
            refusal = _status_gates(queued, statuses, paused, restricted, tx.application_id)
            if refusal is None:
                refusal = queued.refusal
            if refusal is None:
                listed = [
                    blocked[key]
                    for key in ((queued.workspace_id, r) for r in queued.recipients)
                    if key in blocked
                ]
                if listed:
                    refusal = SendResult(
                        SendStatus.SUPPRESSED, detail=_listed(listed), suppressed=tuple(listed)
                    )
            if refusal is None and queued.category is SendCategory.CAMPAIGN:
                waiting = [r for r in queued.recipients if (queued.grant_id, r) not in confirmed]
                if waiting:
                    detail = f"opt_in_pending: {', '.join(waiting)} has not confirmed"
                    refusal = SendResult(SendStatus.OPT_IN_PENDING, detail=detail)
            if refusal is None:
                refusal = self._ruled(tx, queued)
            results.append(refusal)
        due = self._pace(tx, batch, results)
        for i in sorted(due):
            queued = batch[i]
            if queued.on_queued is not None and queued.message_id is not None:
                refusal = queued.on_queued(tx, queued.message_id)
                if refusal is not None:
                    results[i] = refusal
                    del due[i]
        accepted = [(i, q.message) for i, q in enumerate(batch) if i in due and q.message]
        stored = outbound.queue_outbound(
            tx, [replace(message, not_before=due[i]) for i, message in accepted]
        )
        for (i, _), stored_id in zip(accepted, stored, strict=True):
            result = results[i]
            assert result is not None
            results[i] = replace(result, id=stored_id)
        consent.remember_recipients(
            tx,
            [
                RecipientToken(batch[i].grant_id, batch[i].recipients[0], key, message_id)
                for (i, _), message_id in zip(accepted, stored, strict=True)
                if (key := batch[i].unsubscribe_key) is not None
            ],
        )
        for index, first in same_as.items():
            results[index] = results[first]
        return [result for result in results if result is not None]

    def _ruled(self, tx: Tx, queued: _Queued) -> SendResult | None:
        """Gate 5: the first outbound rule that blocks the send."""
        if not self._rules:
            return None
        mail = OutgoingMail(
            queued.grant_id,
            queued.workspace_id,
            queued.grant.address,
            queued.recipients,
            queued.subject,
        )
        for rule in self._rules:
            why = rule(tx, mail)
            if why:
                return SendResult(SendStatus.BLOCKED_BY_RULE, detail=f"blocked_by_rule: {why}")
        return None

    def _pace(
        self, tx: Tx, batch: Sequence[_Queued], results: list[SendResult | None]
    ) -> dict[int, float]:
        """Gates 6 to 8, for the sends the earlier gates let through: quota and rate, the
        breaker's word, domain authentication. A send the last gate refuses is paced as
        a dry run, so it takes no token and its answer still follows the order.
        Returns when each accepted send (by its place in the batch) is due."""
        open_ = [i for i, result in enumerate(results) if result is None]
        due: dict[int, float] = {}
        if not open_:
            return due
        domain_states = (
            domain_checks.sending_states(tx, {batch[i].domain for i in open_})
            if self._require_verified
            else None
        )
        policies = pacing.policies(tx, {batch[i].workspace_id for i in open_})
        unverified = {
            i
            for i in open_
            if domain_states is not None and _unverified(domain_states, batch[i].domain)
        }
        requests = [
            pacing.PacingRequest(
                grant_id=batch[i].grant_id,
                domain=batch[i].domain,
                policy=policies[batch[i].workspace_id],
                recipients=batch[i].recipients,
                defer=batch[i].defer,
                dry_run=i in unverified,
            )
            for i in open_
        ]
        admissions, breakers = pacing.admit_sends(tx, requests, now=time.time())
        for i, admission in zip(open_, admissions, strict=True):
            queued = batch[i]
            if not admission.admitted:
                results[i] = SendResult(
                    SendStatus.RATE_LIMITED,
                    detail=admission.reason,
                    retry_after=admission.retry_after,
                )
            elif i in unverified:
                assert domain_states is not None
                results[i] = _not_authenticated(domain_states, queued.domain)
            else:
                assert admission.send_at is not None
                due[i] = admission.send_at
                results[i] = _queued(queued, admission, breakers.get(queued.grant_id))
        return due

    def forget_signer(self, domain: str) -> None:
        """Load ``domain``'s keys again at its next send (they were rotated)."""
        self._signers.pop(domain, None)

    async def _signer(self, domain: str) -> DkimSigner | None:
        now = time.monotonic()
        cached = self._signers.get(domain)
        if cached is None or now - cached[0] >= SIGNER_LIFETIME:
            async with self._signer_lock:  # one load per domain, however many senders
                cached = self._signers.get(domain)
                if cached is None or now - cached[0] >= SIGNER_LIFETIME:
                    cached = (time.monotonic(), await self._load_signer(domain))
                    self._signers[domain] = cached
        loaded = cached[1]
        if isinstance(loaded, SigningFailed):
            raise SigningFailed(str(loaded))
        return loaded

    async def _load_signer(self, domain: str) -> DkimSigner | SigningFailed | None:
        """A signer with ``domain``'s signing keys (a rotation's next and retiring keys
        do not sign), or why they cannot be opened (logged here, once per load)."""
        from ..auth.dkim import DkimSigner
        from ..auth.keystore import KeyStore

        entries = await self._scope.read(lambda tx: domains.dkim_keys(tx, domain))
        keystore = self._keystore() if self._keystore is not None else KeyStore()
        signing = [e for e in entries if e.get("status", "signing") == "signing"]
        try:
            loaded = await anyio.to_thread.run_sync(
                lambda: [keystore.open(domain, entry) for entry in signing]
            )
        except SigningFailed as exc:
            log.error("cannot sign for %s: %s", domain, exc, extra={"domain": domain})
            return exc
        return DkimSigner(domain, loaded) if loaded else None


def _status_gates(
    queued: _Queued,
    statuses: dict[str, GrantStatus],
    paused: set[tuple[str, str]],
    restricted: dict[tuple[str, str], str],
    application_id: str,
) -> SendResult | None:
    """Gates 1 and 2: the grant's status, then the restrictions and pauses of its
    workspace, domain and application."""
    status = statuses.get(queued.grant_id)
    if status is GrantStatus.PAUSED:
        return SendResult(SendStatus.PAUSED, detail="grant_paused")
    if status is None:
        return SendResult(SendStatus.REJECTED, detail="grant: no longer exists")
    if paused and (whole := _paused_as_a_whole(paused, queued, application_id)):
        return SendResult(SendStatus.PAUSED, detail=whole)
    if status is GrantStatus.RESTRICTED:
        return SendResult(SendStatus.RESTRICTED, detail="grant_restricted")
    if restricted and (why := _restricted(restricted, queued, application_id)):
        return SendResult(SendStatus.RESTRICTED, detail=why)
    return None


_PLACEHOLDER = SendResult(SendStatus.REJECTED, detail="answered as the earlier send")


def _already_queued(
    tx: Tx, batch: Sequence[_Queued]
) -> tuple[dict[int, SendResult], dict[int, int]]:
    """The sends of ``batch`` whose idempotency key was queued already: by a committed
    transaction (their first answer again, by place in the batch), or earlier in this
    batch (the place of that first send)."""
    keys = [q.idempotency_key for q in batch if q.idempotency_key is not None]
    if not keys:
        return {}, {}
    found = outbound.sends_by_key(tx, keys)
    again: dict[int, SendResult] = {}
    same_as: dict[int, int] = {}
    first: dict[str, int] = {}
    now = time.time()
    for index, queued in enumerate(batch):
        key = queued.idempotency_key
        if key is None:
            continue
        if key in found:
            sent = found[key]
            again[index] = SendResult(
                SendStatus.QUEUED,
                id=sent.message_id,
                message_id=sent.header_message_id,
                thread_id=sent.thread_id,
                send_at=sent.not_before if sent.not_before > now else None,
                detail="queued before under this idempotency key",
            )
        elif key in first:
            same_as[index] = first[key]
        else:
            first[key] = index
    return again, same_as


def _queued(queued: _Queued, admission: Admission, breaker: str | None) -> SendResult:
    """The answer of an accepted send: when it leaves, and why not at once."""
    notes = [admission.reason] if admission.reason else []
    if breaker in ("slow", "held"):
        notes.append(
            f"circuit breaker {breaker}: the grant's rates near its pause threshold, "
            "its mail leaves as the breaker allows"
        )
    return SendResult(
        SendStatus.QUEUED,
        message_id=queued.message_id,
        thread_id=None if queued.message is None else queued.message.thread_id,
        detail="; ".join(notes) or None,
        send_at=admission.send_at if admission.reason else None,
        retry_after=admission.retry_after,
    )


def _suppressed(tx: Tx, batch: Sequence[_Queued]) -> dict[tuple[str, str], Suppression]:
    """The suppressed recipients of the batch, by (workspace id, address)."""
    by_workspace: dict[str, set[str]] = {}
    for queued in batch:
        by_workspace.setdefault(queued.workspace_id, set()).update(queued.recipients)
    return {
        (workspace_id, address): entry
        for workspace_id, addresses in by_workspace.items()
        for address, entry in suppressions.suppressed(
            tx, addresses, workspace_id=workspace_id
        ).items()
    }


def _confirmed(tx: Tx, batch: Sequence[_Queued]) -> set[tuple[str, str]]:
    """The (grant id, recipient) pairs of the batch's campaign sends that confirmed."""
    pairs = {
        (q.grant_id, r)
        for q in batch
        if q.category is SendCategory.CAMPAIGN and q.refusal is None
        for r in q.recipients
    }
    if not pairs:
        return set()
    return {
        pair for pair, row in consent.opt_ins_of(tx, pairs).items() if row.status == "confirmed"
    }


def _restricted(
    restricted: dict[tuple[str, str], str], queued: _Queued, application_id: str
) -> str | None:
    """Why the send's workspace, domain or application is restricted, or None."""
    for subject in _wider(queued, application_id):
        if subject in restricted:
            return f"{subject[0]}_restricted: {restricted[subject]}"
    return None


def _wider(queued: _Queued, application_id: str) -> tuple[tuple[str, str], ...]:
    """The subjects a send answers to beyond its grant: workspace, domain, application."""
    return (
        ("workspace", queued.workspace_id),
        ("domain", queued.domain),
        ("application", application_id),
    )


def _paused_as_a_whole(
    paused: set[tuple[str, str]], queued: _Queued, application_id: str
) -> str | None:
    """Why the send's workspace, domain or application is paused as a whole, or None."""
    for kind, subject in _wider(queued, application_id):
        if (kind, subject) in paused:
            return (
                f"{kind}_paused: the {kind}'s bounce or complaint rate reached its pause threshold"
            )
    return None


def _unverified(states: dict[str, domain_checks.SendingState], domain: str) -> bool:
    found = states.get(domain)
    return found is None or found.state != "verified"


def _not_authenticated(states: dict[str, domain_checks.SendingState], domain: str) -> SendResult:
    """The refusal of a send from a domain whose DNS is not verified, naming the failing checks."""
    found = states.get(domain)
    if found is None:
        why = f"{domain} is not a registered domain"
    elif found.state == "pending" or not found.failing:
        why = f"{domain} has not passed a DNS check yet (mailfleet domains check {domain})"
    else:
        why = f"{domain} failed its DNS check: " + "; ".join(
            f"{check['name']}: {check['explanation']}" for check in found.failing
        )
    names = () if found is None else tuple(str(check["name"]) for check in found.failing)
    return SendResult(
        SendStatus.DOMAIN_NOT_AUTHENTICATED,
        detail=f"domain_not_authenticated: {why}",
        failing_checks=names,
    )


def _listed(entries: Sequence[Suppression]) -> str:
    """Why a send was refused: each suppressed recipient and its reason."""
    return "recipient_suppressed: " + "; ".join(
        f"{e.address} ({e.reason.value}{': ' + e.detail if e.detail else ''})" for e in entries
    )


def _refused(grant_id: str, result: SendResult) -> SendResult:
    """Log a send the gates refused (INFO: an expected state, not an error); return it."""
    log.info(
        "send by grant %s refused: %s (%s)",
        grant_id,
        result.status.value,
        result.detail,
        extra={"grant_id": grant_id, "status": result.status.value},
    )
    return result


@dataclass(frozen=True, slots=True)
class _Unsigned:
    signer: DkimSigner | None
    raw: bytes


async def _sign_batch(
    batch: Sequence[_Unsigned],
) -> list[tuple[bytes, MessageHeaders] | Exception]:
    """Sign each message and read its headers back, all in one worker thread;
    a message that cannot be signed fails its own send, not the batch."""
    return await anyio.to_thread.run_sync(lambda: [_sign_and_read(item) for item in batch])


def _sign_and_read(item: _Unsigned) -> tuple[bytes, MessageHeaders] | Exception:
    from ..mail.headers import parse_headers

    try:
        signed = item.raw if item.signer is None else item.signer.sign(item.raw)
        return signed, parse_headers(signed)
    except Exception as exc:
        domain = "?" if item.signer is None else item.signer.domain
        failure = SigningFailed(f"DKIM signing for {domain} failed: {type(exc).__name__}: {exc}")
        failure.__cause__ = exc
        return failure
