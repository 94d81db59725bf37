"""What ``Agent.send`` / ``reply`` reach: the outbound gates, building, signing, the outbox.

The gates answer with values (:class:`~mailfleet.SendResult`): recipient
syntax and whether each recipient's domain accepts mail
(``invalid_recipient``), then the grant's status, the sending domain's
authentication (``domain_not_authenticated``, outside dev mode) and the
suppression list, read in the transaction that queues the message so that a
pause, a restriction, a failed audit or a bounce takes effect at once
(``suppressed``: nothing queued). An accepted
message is built, DKIM-signed with its domain's keys, stored with a VERP
envelope sender (``bounces+TOKEN@domain``, unique to this send) and queued
for the :class:`~mailfleet.runtime.sender.Sender`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from ..model.addresses import parse_address
from ..model.deliverability import Suppression
from ..model.errors import InvalidAddress, InvalidInput, SigningFailed
from ..model.messages import MessageHeaders
from ..model.outbound import SendResult, SendStatus
from ..model.records import Grant, GrantStatus
from ..store import (
    domain_checks,
    domains,
    grants,
    outbound,
    reputation,
    restrictions,
    suppressions,
)
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

__all__ = ["SIGNER_LIFETIME", "Outbox", "verp_address"]

log = logging.getLogger("mailfleet.outbox")

SIGNER_LIFETIME = 60.0
"""Seconds a domain's loaded keys are reused before they are read again, so a rotation
promoted by another worker signs here within a minute (the key it replaces stays
published while retiring, so signing with it meanwhile is harmless)."""


def verp_address(token: str, domain: str) -> str:
    """The envelope sender of one send: bounces to it name the send."""
    return f"bounces+{token}@{domain}"


@dataclass(frozen=True, slots=True)
class _Queued:
    message: NewOutbound
    message_id: str
    workspace_id: str
    domain: str


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
    ) -> None:
        self._scope = scope
        self._queued = queued
        self._require_verified = require_verified_domains
        self._envelope_domain = envelope_domain or (lambda domain: domain)
        self._recipient_domains = recipient_domains
        self._keystore = keystore
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
    ) -> SendResult:
        """Pass the gates, build, sign and queue the message."""
        from ..mail.build import build_message
        from ..mail.parse import normalize_subject

        if not to:
            return _refused(
                grant.id, SendResult(SendStatus.REJECTED, detail="to: at least one recipient")
            )
        try:
            recipients = tuple(dict.fromkeys(str(parse_address(a, field="to")) for a in to))
        except InvalidAddress as exc:
            return _refused(grant.id, SendResult(SendStatus.INVALID_RECIPIENT, detail=str(exc)))
        if self._recipient_domains is not None:
            undeliverable = await self._recipient_domains.refused(recipients)
            if undeliverable:
                detail = "to: " + "; ".join(f"{a}: {why}" for a, why in undeliverable)
                return _refused(grant.id, SendResult(SendStatus.INVALID_RECIPIENT, detail=detail))
        try:
            built = build_message(
                sender=grant.address,
                to=recipients,
                subject=subject,
                text=text,
                html=html,
                in_reply_to=None if in_reply_to is None else in_reply_to.parsed,
                attachments=attachments,
                message_id_domain=grant.domain,
            )
        except InvalidInput as exc:  # a line break in the subject, a bad header...
            return _refused(grant.id, SendResult(SendStatus.REJECTED, detail=str(exc)))
        raw, message_id = built.raw, built.message_id
        signer = await self._signer(grant.domain)
        raw, headers = await self._signing.submit(_Unsigned(signer, raw))
        token = secrets.token_hex(10)
        thread = (in_reply_to.thread_id if in_reply_to else None) or new_id()
        item = NewOutbound(
            grant_id=grant.id,
            raw=raw,
            headers=headers,
            recipients=tuple(recipients),
            verp_token=token,
            mail_from=verp_address(token, self._envelope_domain(grant.domain)),
            thread_id=thread,
            thread_subject=normalize_subject(subject) or None,
        )
        return await self._batches.submit(
            _Queued(item, message_id, grant.workspace_id, grant.domain)
        )

    async def _commit(self, batch: Sequence[_Queued]) -> Sequence[SendResult]:
        results = await self._scope.write(lambda tx: self._store(tx, batch))
        if any(result.ok for result in results):
            self._queued()
        for queued, result in zip(batch, results, strict=True):
            if not result.ok:
                _refused(queued.message.grant_id, result)
        return results

    def _store(self, tx: Tx, batch: Sequence[_Queued]) -> list[SendResult]:
        # Statuses are read in the transaction: a pause takes effect at once.
        statuses = grants.statuses(tx, {q.message.grant_id for q in batch})
        wide = ({q.workspace_id for q in batch}, {q.domain for q in batch})
        paused = reputation.paused_subjects(tx, *wide)
        restricted = restrictions.restricted_subjects(tx, *wide)
        blocked = _suppressed(tx, batch)
        domain_states = (
            domain_checks.sending_states(tx, {q.domain for q in batch})
            if self._require_verified
            else None
        )
        results: list[SendResult] = []
        accepted: list[NewOutbound] = []
        for queued in batch:
            status = statuses.get(queued.message.grant_id)
            listed = [
                blocked[key]
                for key in ((queued.workspace_id, r) for r in queued.message.recipients)
                if key in blocked
            ]
            if status is GrantStatus.PAUSED:
                results.append(SendResult(SendStatus.PAUSED, detail="grant_paused"))
            elif status is GrantStatus.RESTRICTED:
                results.append(SendResult(SendStatus.RESTRICTED, detail="grant_restricted"))
            elif status is None:
                results.append(SendResult(SendStatus.REJECTED, detail="grant: no longer exists"))
            elif restricted and (why := _restricted(restricted, queued, tx.application_id)):
                results.append(SendResult(SendStatus.RESTRICTED, detail=why))
            elif paused and (whole := _paused_as_a_whole(paused, queued, tx.application_id)):
                results.append(SendResult(SendStatus.PAUSED, detail=whole))
            elif listed:
                results.append(SendResult(SendStatus.SUPPRESSED, detail=_listed(listed)))
            elif domain_states is not None and _unverified(domain_states, queued.domain):
                results.append(_not_authenticated(domain_states, queued.domain))
            else:
                accepted.append(queued.message)
                results.append(
                    SendResult(
                        SendStatus.QUEUED,
                        message_id=queued.message_id,
                        thread_id=queued.message.thread_id,
                    )
                )
        outbound.queue_outbound(tx, accepted)
        return results

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


def _suppressed(tx: Tx, batch: Sequence[_Queued]) -> dict[tuple[str, str], Suppression]:
    """The suppressed recipients of the batch, by (workspace id, address)."""
    by_workspace: dict[str, set[str]] = {}
    for queued in batch:
        by_workspace.setdefault(queued.workspace_id, set()).update(queued.message.recipients)
    return {
        (workspace_id, address): entry
        for workspace_id, addresses in by_workspace.items()
        for address, entry in suppressions.suppressed(
            tx, addresses, workspace_id=workspace_id
        ).items()
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
