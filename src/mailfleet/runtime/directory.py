"""The directory: domains, workspaces, grants, API keys, events and suppressions of one application.

:class:`Directory` is the administrative service every fleet has, whether or
not it serves agents: each method is one unit of work on the store, through
the fleet's :class:`~mailfleet.store.scope.Scope`, so it sees and changes its
own application only. The :class:`~mailfleet.Fleet` exposes these methods as
its own (a façade) beside the runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import anyio.to_thread

from ..model.addresses import normalize_domain, parse_address
from ..model.deliverability import Suppression, SuppressionReason
from ..model.errors import (
    Conflict,
    GrantNotFound,
    InvalidInput,
    MailfleetError,
    WorkspaceNotFound,
)
from ..model.messages import MessageRecord, StoredMessage, ThreadRecord, parse_cursor
from ..model.records import (
    ApiKey,
    Domain,
    Event,
    Grant,
    GrantStatus,
    ProvisionOutcome,
    ProvisionResult,
    RegroupJob,
    Restriction,
    Workspace,
)
from ..model.reputation import ReputationLevel
from ..settings import Settings
from ..store import (
    applications,
    domains,
    events,
    grants,
    reputation,
    restrictions,
    suppressions,
    workspaces,
)
from ..store import messages as store_messages
from ..store.events import record_act
from ..store.grants import GrantRequest
from ..store.scope import Scope, Tx
from . import regrouping
from .mailroom import check_json
from .provisioning import SingleProvisions

if TYPE_CHECKING:  # imported when used: a fleet that only reads needs neither
    from ..agent import Agent
    from ..auth.dkim import DkimKey
    from ..auth.keystore import KeyStore
    from ..mail.inbound import InboundMessage

__all__ = ["AgentRef", "Directory", "SuppressionRow"]

log = logging.getLogger("mailfleet.directory")

AgentRef: TypeAlias = "type[Agent] | str | None"


class Directory:
    """Domains, workspaces, grants, API keys, events and suppressions of one application."""

    def __init__(
        self,
        scope: Scope,
        settings: Settings,
        *,
        keys_changed: Callable[[str], None] = lambda domain: None,
        singles: SingleProvisions | None = None,
    ) -> None:
        self._scope = scope
        self._settings = settings
        self._keys_changed = keys_changed
        self._singles = singles

    async def add_domain(
        self,
        name: str,
        *,
        selector: str = "mailfleet",
        dkim_keys: Sequence[DkimKey] | None = None,
    ) -> Domain:
        """Register a sending and receiving domain (idempotent).

        A new domain gets its DKIM keys: ``dkim_keys`` if given (from
        configuration), else a fresh RSA-2048 key (selector ``selector``) and
        Ed25519 key (``<selector>-ed25519``). The private keys are sealed under
        ``dkim_key_secret`` or written to ``dkim_key_dir`` (outside dev mode,
        with neither set, to key files under ``home``); only dev mode keeps
        them in clear. ``Domain.dkim_records`` lists the TXT records to
        publish; ``fleet.domain_records`` every record.
        """
        known = await self._scope.read(lambda tx: domains.domain_ids(tx, [name]))
        stored: list[dict[str, Any]] = []
        if not known:
            keystore = _keystore(self._settings)
            keystore.require_storage()  # refuses before any key is made
            keys = dkim_keys if dkim_keys is not None else await _generate_keys(selector)
            domain_name = normalize_domain(name)
            stored = await anyio.to_thread.run_sync(
                lambda: [keystore.seal(domain_name, k, **_new_key_fields(1)) for k in keys]
            )
        domain, _ = await self._scope.write(
            lambda tx: domains.add_domain(tx, name, selector=selector, dkim_keys=stored)
        )
        return domain

    async def rotate_dkim(self, domain: str, *, selector: str | None = None) -> Domain:
        """Start a key rotation: a new RSA-2048 and Ed25519 pair, published beside the
        signing keys (status ``next``) under new selectors (``<base>-r<N>`` and
        ``<base>-r<N>-ed25519``, N the next generation; or ``selector`` and
        ``<selector>-ed25519``). They start signing once a check finds their records
        (or :meth:`promote_dkim`); the old pair then keeps its records (``retiring``)
        until :meth:`retire_dkim`.

        A rotation already waiting for its records, or a selector the domain has
        used, is a :class:`~mailfleet.Conflict`; the check is made again in the
        transaction that stores the keys, so two rotations at once cannot both win.
        """
        current = await self._scope.read(lambda tx: domains.get_domain(tx, domain))
        entries = await self._scope.read(lambda tx: domains.dkim_keys(tx, current.name))
        if any(entry.get("status") == "next" for entry in entries):
            raise Conflict(
                "domain",
                f"{current.name} has a rotation waiting for its records: publish them "
                f"(mailfleet domains records {current.name}) and check the domain",
            )
        generation = 1 + max((int(e.get("generation", 1)) for e in entries), default=1)
        base = selector or f"{current.dkim_selector}-r{generation}"
        used = {entry["selector"] for entry in entries}
        if base in used or f"{base}-ed25519" in used:
            raise Conflict("selector", f"{current.name} already used the selector {base!r}")
        keys = await _generate_keys(base)
        keystore = _keystore(self._settings)
        sealed = await anyio.to_thread.run_sync(
            lambda: [
                keystore.seal(current.name, k, **_new_key_fields(generation, "next")) for k in keys
            ]
        )
        try:
            rotated = await self._scope.write(
                lambda tx: domains.add_next_keys(tx, current.name, sealed)
            )
        except Exception:  # not stored (another rotation won): no key file left behind
            for entry in sealed:
                keystore.forget(entry)
            raise
        self._keys_changed(current.name)
        log.info("DKIM rotation of %s: new selectors %s", current.name, base)
        return rotated

    async def promote_dkim(self, domain: str) -> bool:
        """Make a rotation's ``next`` keys sign now (the old ones become ``retiring``);
        a check does this by itself once their records are published. Returns whether
        there was a rotation to promote."""
        promoted = await self._scope.write(lambda tx: domains.promote_next_keys(tx, domain))
        if promoted:
            self._keys_changed(normalize_domain(domain))
        return promoted

    async def retire_dkim(self, domain: str, selector: str) -> Domain:
        """Remove a ``retiring`` key (and its key file, if it has one): it no longer
        needs its DNS record. Retiring a key that signs, or one not yet signing, is a
        :class:`~mailfleet.Conflict`; an unknown selector a :class:`~mailfleet.NotFound`."""
        retired, removed = await self._scope.write(
            lambda tx: domains.remove_retiring_key(tx, domain, selector)
        )
        _keystore(self._settings).forget(removed)
        self._keys_changed(retired.name)
        log.info("DKIM key %s of %s retired", selector, retired.name)
        return retired

    async def domains(self) -> list[Domain]:
        """The application's registered domains."""
        return await self._scope.read(
            lambda tx: domains.list_domains(
                tx,
            )
        )

    async def create_workspace(
        self,
        name: str,
        *,
        policy: dict[str, Any] | None = None,
        patterns: Iterable[str] = (),
        exist_ok: bool = False,
    ) -> Workspace:
        """Create a workspace with its policy (defaults where unset) and auto-group patterns.

        Idempotent: a workspace of that name with this policy and these patterns
        is returned as it is. One that differs is a :class:`~mailfleet.WorkspaceExists`,
        unless ``exist_ok``: then it is returned unchanged, so a set-up script
        can run again after the policy was changed.
        """
        listed = list(patterns)
        return await self._scope.write(
            lambda tx: workspaces.create_workspace(
                tx, name, policy=policy, patterns=listed, exist_ok=exist_ok
            )
        )

    async def workspace(self, name: str) -> Workspace:
        """A workspace by name or id."""
        return await self._scope.read(lambda tx: workspaces.get_workspace(tx, name))

    async def workspaces(self) -> list[Workspace]:
        """Every workspace with its grant count, the default first."""
        return await self._scope.read(
            lambda tx: workspaces.list_workspaces(
                tx,
            )
        )

    async def update_policy(self, workspace: str, changes: dict[str, Any]) -> Workspace:
        """Change a workspace's policy: one write, effective for all its grants at once."""
        return await self._scope.write(lambda tx: workspaces.update_policy(tx, workspace, changes))

    async def set_patterns(self, workspace: str, patterns: Iterable[str]) -> Workspace:
        """Replace a workspace's auto-group patterns; :meth:`regroup` applies them to old grants."""
        listed = list(patterns)
        return await self._scope.write(lambda tx: workspaces.set_patterns(tx, workspace, listed))

    async def update_workspace(
        self,
        workspace: str,
        *,
        policy: dict[str, Any] | None = None,
        patterns: Iterable[str] | None = None,
    ) -> Workspace:
        """Change a workspace's policy (``policy``: the fields to change, as
        :meth:`update_policy` takes them) and/or replace its auto-group patterns, in
        one transaction: if either is refused, neither changes."""
        listed = None if patterns is None else list(patterns)
        return await self._scope.write(
            lambda tx: workspaces.update_workspace(tx, workspace, policy=policy, patterns=listed)
        )

    async def delete_workspace(self, workspace: str) -> None:
        """Delete an empty workspace other than the default."""
        await self._scope.write(lambda tx: workspaces.delete_workspace(tx, workspace))

    async def move_grants(self, grants_: Iterable[str], workspace: str) -> int:
        """Move grants (ids or addresses) into ``workspace`` in bulk; return how many moved.

        Moved grants are pinned: :meth:`regroup` leaves them where they were put.
        """
        keys = list(grants_)

        def work(tx: Tx) -> int:
            ids = grants.grant_ids(tx, keys)
            missing = [key for key in keys if key not in ids and key.strip().lower() not in ids]
            if missing:
                raise GrantNotFound(missing[0], field="grants")
            return grants.move_grants(tx, sorted(set(ids.values())), workspace)

        return await self._scope.write(work)

    async def regroup(
        self,
        *,
        created_after: datetime | None = None,
        domain: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Re-apply auto-group patterns to grants not pinned to a workspace (created
        after ``created_after``, of ``domain``), a batch of 1,000 per transaction;
        return how many moved. ``progress(done, total)`` is called after each batch;
        :meth:`regroup_job` answers the job's whole record."""
        job = await self.regroup_job(created_after=created_after, domain=domain, progress=progress)
        return job.moved

    async def regroup_job(
        self,
        *,
        created_after: datetime | None = None,
        domain: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        batch_size: int = regrouping.BATCH_SIZE,
    ) -> RegroupJob:
        """:meth:`regroup`, answering the finished job's record: how many grants its
        filters matched (``total``), looked at (``done``) and moved; its events are
        ``workspace.regroup_started``, ``_progress`` (one per batch), ``_finished``."""
        return await regrouping.regroup(
            self._scope,
            created_after=created_after,
            domain=domain,
            progress=progress,
            batch_size=batch_size,
        )

    async def provision(
        self,
        address: str,
        *,
        workspace: str | None = None,
        agent: AgentRef = None,
        metadata: dict[str, Any] | None = None,
    ) -> Grant:
        """Create (or return the existing) grant for ``address`` in one call.

        The workspace is ``workspace`` if given, else the most specific
        auto-group pattern of the domain, else the default. Raises
        :class:`~mailfleet.InvalidAddress`, :class:`~mailfleet.DomainNotRegistered`
        or :class:`~mailfleet.WorkspaceNotFound`; nothing is written then.
        """
        (result,) = await self.provision_many(
            [address], workspace=workspace, agent=agent, metadata=metadata
        )
        if result.grant is None:
            assert result.error is not None
            raise result.error
        return result.grant

    async def provision_many(
        self,
        addresses: Iterable[str],
        *,
        workspace: str | None = None,
        agent: AgentRef = None,
        metadata: dict[str, Any] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[ProvisionResult]:
        """Provision many addresses in batched transactions.

        Returns one :class:`ProvisionResult` per given address, in order:
        ``created``, ``existing`` or ``invalid`` with its reason. ``progress``
        is called as ``progress(done, total)`` after each batch, counting
        distinct valid addresses.
        """
        agent_name = _agent_name(agent)
        check_json("metadata", metadata)
        given = list(addresses)
        requests: dict[str, GrantRequest] = {}
        errors: dict[int, MailfleetError] = {}
        normal: list[str | None] = []
        for index, raw in enumerate(given):
            try:
                parsed = parse_address(raw)
            except InvalidInput as exc:
                errors[index] = exc
                normal.append(None)
                continue
            key = str(parsed)
            normal.append(key)
            requests.setdefault(key, GrantRequest(parsed, agent_name, dict(metadata or {})))

        outcome: dict[str, tuple[Grant, bool]] = {}
        refused: dict[str, Exception] = {}
        pending = list(requests.values())
        size = self._settings.provision_batch_size
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            if len(pending) == 1 and self._singles is not None and self._singles.running:
                # One address: it shares a transaction with the other callers' at once.
                found, rejected = await self._singles.provision(pending[0], workspace)
            else:
                found, rejected = await self._scope.write(
                    partial(grants.provision_batch, requests=batch, workspace=workspace)
                )
            outcome.update(found)
            refused.update(rejected)
            if progress is not None:
                progress(min(start + size, len(pending)), len(pending))
        if not pending and progress is not None:
            progress(0, 0)
        results = []
        counts = {kind: 0 for kind in ProvisionOutcome}
        for index, raw in enumerate(given):
            address = normal[index]
            if address is None:
                results.append(ProvisionResult(raw, ProvisionOutcome.INVALID, error=errors[index]))
            elif address in refused:
                results.append(
                    ProvisionResult(raw, ProvisionOutcome.INVALID, error=refused[address])
                )
            else:
                grant, created = outcome[address]
                kind = ProvisionOutcome.CREATED if created else ProvisionOutcome.EXISTING
                results.append(ProvisionResult(raw, kind, grant=grant))
        for result in results:
            counts[result.outcome] += 1
        if given:
            log.info(
                "provisioned %d addresses: %d created, %d existing, %d invalid",
                len(given),
                counts[ProvisionOutcome.CREATED],
                counts[ProvisionOutcome.EXISTING],
                counts[ProvisionOutcome.INVALID],
            )
        return results

    async def deprovision(self, grant: str) -> bool:
        """Tear down a grant (id or address); True if it existed."""
        return bool(await self.deprovision_many([grant]))

    async def deprovision_many(self, keys: Iterable[str]) -> list[str]:
        """Tear down many grants at once; return the ids removed."""
        listed = list(keys)

        def work(tx: Tx) -> list[str]:
            ids = grants.grant_ids(tx, listed)
            return grants.delete_grants(tx, sorted(set(ids.values())))

        removed = await self._scope.write(work)
        if removed:
            log.info("deprovisioned %d grants", len(removed))
        return removed

    async def grant(self, key: str) -> Grant:
        """A grant by id or address, with its effective policy."""
        return await self._scope.read(lambda tx: grants.get_grant(tx, key))

    async def grants(
        self,
        *,
        workspace: str | None = None,
        status: GrantStatus | None = None,
        agent: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        after: str | None = None,
    ) -> list[Grant]:
        """Grants by address, optionally filtered by workspace, status and agent class
        (its name, as :meth:`provision` stored it).

        ``after`` is a cursor: the last address of the previous page.
        """
        return await self._scope.read(
            lambda tx: grants.list_grants(
                tx,
                workspace=workspace,
                status=status,
                agent=agent,
                limit=limit,
                offset=offset,
                after=after,
            )
        )

    async def count_grants(
        self,
        *,
        workspace: str | None = None,
        status: GrantStatus | None = None,
        agent: str | None = None,
    ) -> int:
        """How many grants the application, or one workspace, holds (of ``status``, of
        the agent class ``agent``)."""
        return await self._scope.read(
            lambda tx: grants.count_grants(tx, workspace=workspace, status=status, agent=agent)
        )

    async def set_grant_status(self, grant: str, status: GrantStatus) -> Grant:
        """An administrator's act: pause, restrict or reinstate a grant.

        Paused grants answer every send with ``paused`` (400), restricted ones
        with ``restricted`` (403), until set back to ``active``.
        """
        wanted = GrantStatus(status)
        if wanted is GrantStatus.DELETED:
            raise InvalidInput("status", "use deprovision() to delete a grant", value=status)
        changed = await self._scope.write(lambda tx: grants.set_status(tx, grant, wanted))
        log.info(
            "grant %s (%s) is %s",
            changed.id,
            changed.address,
            changed.status.value,
            extra={"grant_id": changed.id, "status": changed.status.value},
        )
        return changed

    async def reputation(self, grant: str) -> list[ReputationLevel]:
        """A grant's bounce and complaint rates, sample and state at each level: the
        grant, its workspace, its domain and the application (in that order)."""

        def read(tx: Tx) -> list[ReputationLevel]:
            return reputation.levels_of(tx, grants.get_grant(tx, grant).id)

        return await self._scope.read(read)

    async def reputation_of(self, target: str, *, kind: str = "grant") -> list[ReputationLevel]:
        """The reputation of a grant (address or id), or with ``kind`` a workspace (name or
        id), a domain or the application (``"application"``): its own level and each
        wider one up to the application, with the rates, sample, state and why."""
        _check_kind(kind)

        def read(tx: Tx) -> list[ReputationLevel]:
            return reputation.levels_from(tx, kind, _subject(tx, kind, target))

        return await self._scope.read(read)

    async def restrictions(self, *, kind: str | None = None) -> list[Restriction]:
        """The application's restrictions (of ``kind``): restricted grants, workspaces,
        domains and the application, each with who and why, by kind and subject."""
        if kind is not None:
            _check_kind(kind)
        return await self._scope.read(lambda tx: restrictions.list_restrictions(tx, kind=kind))

    async def messages(
        self,
        grant: str,
        *,
        folder: str | None = None,
        thread: str | None = None,
        direction: str | None = None,
        since: datetime | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[MessageRecord]:
        """A grant's (address or id) stored messages, newest first: inbound (folders
        ``inbox``, ``spam``) and sent (``sent``, with their delivery state), of one
        ``thread`` or ``direction`` (``in``, ``out``), since a time; ``after`` is the
        ``cursor`` of the last message of the previous page."""
        if folder is not None and folder not in store_messages.FOLDERS:
            raise InvalidInput(
                "folder", f"one of {', '.join(store_messages.FOLDERS)}", value=folder
            )
        if direction is not None and direction not in ("in", "out"):
            raise InvalidInput("direction", "in or out", value=direction)
        position = None if after is None else parse_cursor(after)

        def read(tx: Tx) -> list[MessageRecord]:
            return store_messages.list_messages(
                tx,
                grants.get_grant(tx, grant).id,
                folder=folder,
                thread_id=thread,
                direction=direction,
                since=since,
                after=position,
                limit=limit,
            )

        return await self._scope.read(read)

    async def message(self, grant: str, message: str) -> MessageRecord:
        """One stored message of a grant, with its raw bytes and headers (a
        :class:`~mailfleet.model.errors.MessageNotFound` if the grant has none by that id)."""

        def read(tx: Tx) -> MessageRecord:
            return store_messages.get_message(tx, grants.get_grant(tx, grant).id, message)

        return await self._scope.read(read)

    async def stored_message(
        self, grant: str, message: str, *, field: str = "message"
    ) -> InboundMessage:
        """One stored message of a grant as handlers receive it (to reply to it: the
        ``in_reply_to`` of ``send``); a :class:`~mailfleet.MessageNotFound` otherwise."""
        from ..mail.inbound import InboundMessage

        def read(tx: Tx) -> StoredMessage:
            return store_messages.get_stored(
                tx, grants.get_grant(tx, grant).id, message, field=field
            )

        return InboundMessage.from_stored(await self._scope.read(read))

    async def threads(
        self, grant: str, *, after: str | None = None, limit: int = 100
    ) -> list[ThreadRecord]:
        """A grant's conversations, the most recently active first; ``after`` is the
        ``cursor`` of the last thread of the previous page."""
        position = None if after is None else parse_cursor(after)

        def read(tx: Tx) -> list[ThreadRecord]:
            return store_messages.list_threads(
                tx, grants.get_grant(tx, grant).id, after=position, limit=limit
            )

        return await self._scope.read(read)

    async def thread(self, grant: str, thread: str) -> tuple[ThreadRecord, list[MessageRecord]]:
        """One conversation of a grant and its messages, oldest first (a
        :class:`~mailfleet.model.errors.ThreadNotFound` if the grant has none by that id)."""

        def read(tx: Tx) -> tuple[ThreadRecord, list[MessageRecord]]:
            return store_messages.get_thread(tx, grants.get_grant(tx, grant).id, thread)

        return await self._scope.read(read)

    async def reinstate(self, target: str, *, reason: str, by: str, kind: str = "grant") -> None:
        """Lift a pause set by the rates (a pause never lifts by itself): ``target`` is a
        grant (address or id), or with ``kind`` a workspace (name or id), a domain or
        the application (``"application"``). Its window restarts empty, and
        ``<kind>.reinstated`` records ``reason`` and ``by`` (who decided); a grant is
        active again (``grant.status_changed``)."""
        _check_act(reason, by, kind)

        def lift(tx: Tx) -> str:
            subject = _subject(tx, kind, target)
            reputation.reinstate(tx, kind, subject, reason=reason, by=by)
            if kind == "grant" and grants.get_grant(tx, subject).status in _REPUTATION_HELD:
                grants.set_status(tx, subject, GrantStatus.ACTIVE)
            return subject

        subject = await self._scope.write(lift)
        _log_act(logging.INFO, kind, subject, "reinstated", by, reason)

    async def restrict(
        self, target: str, *, reason: str, by: str = "operator", kind: str = "grant"
    ) -> Restriction:
        """Block sending for abuse, whatever the rates: a grant (address or id), or with
        ``kind`` a workspace, a domain or the application. Every send under it answers
        ``restricted`` (HTTP 403) until :meth:`lift`; ``<kind>.restricted`` records who
        and why. Returns the restriction (its ``subject`` is the stored key: an id, or
        a domain's name)."""
        _check_act(reason, by, kind)

        def block(tx: Tx) -> str:
            subject = _subject(tx, kind, target)
            if kind == "grant":
                grants.set_status(tx, subject, GrantStatus.RESTRICTED)
                record_act(tx, kind, subject, "restricted", reason=reason, by=by)
            else:
                restrictions.restrict(tx, kind, subject, reason=reason, by=by)
            return subject

        subject = await self._scope.write(block)
        _log_act(logging.WARNING, kind, subject, "restricted", by, reason)
        return Restriction(kind, subject, reason, by, datetime.now(UTC))

    async def lift(
        self, target: str, *, reason: str, by: str = "operator", kind: str = "grant"
    ) -> bool:
        """Undo :meth:`restrict`; whether there was a restriction to lift
        (``<kind>.restriction_lifted`` records who and why)."""
        _check_act(reason, by, kind)

        def unblock(tx: Tx) -> bool:
            subject = _subject(tx, kind, target)
            if kind != "grant":
                return restrictions.lift(tx, kind, subject, reason=reason, by=by)
            if grants.get_grant(tx, subject).status is not GrantStatus.RESTRICTED:
                return False
            grants.set_status(tx, subject, GrantStatus.ACTIVE)
            record_act(tx, kind, subject, "restriction_lifted", reason=reason, by=by)
            return True

        lifted = await self._scope.write(unblock)
        if lifted:
            _log_act(logging.INFO, kind, target, "lifted (restriction)", by, reason)
        return lifted

    async def create_api_key(
        self, name: str, *, admin: bool = False, secret: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new API key of the application (an ``admin`` key may also reinstate,
        restrict and lift): its record, and the secret, shown only now and stored
        hashed. ``secret`` registers one the caller chose."""
        return await self._scope.write(
            lambda tx: applications.create_api_key(tx, name, admin=admin, secret=secret)
        )

    async def revoke_api_keys(self, name: str) -> int:
        """Revoke the application's live API keys called ``name``; how many were."""
        return await self._scope.write(lambda tx: applications.revoke_api_keys(tx, name))

    async def events(
        self,
        *,
        after: int = 0,
        type: str | Sequence[str] | None = None,
        grant: str | None = None,
        workspace: str | None = None,
        upto: int | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Outbox events of the application after the event id ``after`` (up to ``upto``):
        of ``type`` (one or several), of the grant id ``grant``, of the workspace
        ``workspace`` (its id, or the name of an existing one: events naming it, and
        those of the grants in it)."""

        def read(tx: Tx) -> list[Event]:
            workspace_id = None if workspace is None else _event_workspace(tx, workspace)
            return events.list_events(
                tx,
                after=after,
                type=type,
                grant_id=grant,
                workspace_id=workspace_id,
                upto=upto,
                limit=limit,
            )

        return await self._scope.read(read)

    async def count_events(self, *, type: str | None = None, grant: str | None = None) -> int:
        """How many events the application has (of ``type``, of the grant id ``grant``)."""
        return await self._scope.read(lambda tx: events.count_events(tx, type=type, grant_id=grant))

    async def suppress(
        self,
        address: str,
        *,
        reason: SuppressionReason | str = SuppressionReason.MANUAL,
        detail: str | None = None,
        workspace: str | None = None,
    ) -> bool:
        """Put ``address`` on the suppression list (of the application, or of
        one ``workspace``): sends to it answer ``suppressed``. Returns whether
        it was new; an address already listed keeps its first reason."""
        return (
            await self.suppress_many(
                [SuppressionRow(address, reason, detail, workspace)], field="address"
            )
            == 1
        )

    async def suppress_many(self, rows: Iterable[SuppressionRow], *, field: str = "rows") -> int:
        """Suppress many addresses in one transaction; how many were new.

        Every row is checked first (address, reason, workspace): if any is
        wrong, :class:`~mailfleet.InvalidInput` lists each bad row and
        nothing is stored.
        """
        listed = list(rows)

        def work(tx: Tx) -> int:
            workspace_ids: dict[str, str] = {}
            entries: list[suppressions.NewSuppression] = []
            problems: list[str] = []
            for number, row in enumerate(listed, start=1):
                where = f"row {number}: " if len(listed) > 1 or field != "address" else ""
                try:
                    address = str(parse_address(row.address, field=field))
                    reason = SuppressionReason(row.reason)
                except InvalidInput as exc:
                    problems.append(f"{where}{exc}")
                    continue
                except ValueError:
                    allowed = ", ".join(r.value for r in SuppressionReason)
                    problems.append(f"{where}reason {row.reason!r} is not one of {allowed}")
                    continue
                workspace_id = None
                if row.workspace:
                    if row.workspace not in workspace_ids:
                        try:
                            workspace_ids[row.workspace] = workspaces.get_workspace(
                                tx, row.workspace
                            ).id
                        except MailfleetError as exc:
                            problems.append(f"{where}{exc}")
                            continue
                    workspace_id = workspace_ids[row.workspace]
                entries.append(
                    suppressions.NewSuppression(address, reason, row.detail, workspace_id)
                )
            if problems:
                raise InvalidInput(field, "; ".join(problems[:20]))
            return suppressions.suppress(tx, entries)

        added = await self._scope.write(work)
        log.info("suppressed %d new address(es) of %d", added, len(listed))
        return added

    async def unsuppress(self, address: str, *, workspace: str | None = None) -> bool:
        """Take ``address`` off the suppression list (of the application, or of one
        ``workspace``); whether it was there. Its soft-bounce count restarts too."""
        normal = str(parse_address(address))

        def work(tx: Tx) -> bool:
            workspace_id = _workspace_id(tx, workspace)
            return suppressions.remove(tx, normal, workspace_id=workspace_id)

        return await self._scope.write(work)

    async def suppressions(
        self,
        *,
        reason: SuppressionReason | str | None = None,
        workspace: str | None = None,
        after: int = 0,
        limit: int | None = 100,
    ) -> list[Suppression]:
        """The suppression list in the order entries were added, after the entry id ``after``."""
        wanted = None if reason is None else SuppressionReason(reason)

        def work(tx: Tx) -> list[Suppression]:
            workspace_id = _workspace_id(tx, workspace)
            return suppressions.list_suppressions(
                tx, reason=wanted, workspace_id=workspace_id, after=after, limit=limit
            )

        return await self._scope.read(work)

    async def suppression(
        self, address: str, *, workspace: str | None = None
    ) -> Suppression | None:
        """Why ``address`` may not be mailed (by a grant of ``workspace``), or None."""
        normal = str(parse_address(address))

        def work(tx: Tx) -> Suppression | None:
            workspace_id = _workspace_id(tx, workspace)
            return suppressions.suppressed(tx, [normal], workspace_id=workspace_id).get(normal)

        return await self._scope.read(work)

    async def count_suppressions(self) -> int:
        """How many entries the application's suppression list holds."""
        return await self._scope.read(suppressions.count_suppressions)


def _workspace_id(tx: Tx, workspace: str | None) -> str | None:
    """The id of the named workspace (None: the whole application)."""
    return workspaces.get_workspace(tx, workspace).id if workspace else None


def _event_workspace(tx: Tx, workspace: str) -> str:
    """The id of the workspace named ``workspace``; else ``workspace`` itself, taken for the
    id of a workspace that may be gone (its events stay in the log)."""
    try:
        return workspaces.get_workspace(tx, workspace).id
    except WorkspaceNotFound:
        return workspace


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    """One address to suppress, as :meth:`Directory.suppress_many` takes it."""

    address: str
    reason: SuppressionReason | str = SuppressionReason.MANUAL
    detail: str | None = None
    workspace: str | None = None


_REPUTATION_HELD = (GrantStatus.PAUSED, GrantStatus.UNDER_REVIEW)


def _log_act(level: int, kind: str, subject: str, act: str, by: str, reason: str) -> None:
    log.log(
        level,
        "%s %s %s by %s: %s",
        kind,
        subject,
        act,
        by,
        reason,
        extra={"kind": kind, "subject": subject},
    )


def _check_act(reason: str, by: str, kind: str) -> None:
    """An operator's act says why and who, on a kind of subject that exists."""
    for name, value in (("reason", reason), ("by", by)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(name, f"say {name} (who decided, and why)", value=value)
    _check_kind(kind)


def _check_kind(kind: str) -> None:
    if kind not in reputation.KINDS:
        raise InvalidInput("kind", f"one of {', '.join(reputation.KINDS)}", value=kind)


def _subject(tx: Tx, kind: str, target: str) -> str:
    """The stored key of ``target``: a grant's or workspace's id, a domain, the application."""
    if kind == "grant":
        return grants.get_grant(tx, target).id
    if kind == "workspace":
        return workspaces.get_workspace(tx, target).id
    if kind == "domain":
        return domains.get_domain(tx, target).name
    return tx.application_id


def _keystore(settings: Settings) -> KeyStore:
    from ..auth.keystore import KeyStore

    return KeyStore.from_settings(settings)


def _new_key_fields(generation: int, status: str = "signing") -> dict[str, Any]:
    """What a stored key keeps beside its key: its rotation status and generation."""
    from datetime import UTC, datetime

    return {
        "status": status,
        "generation": generation,
        "created_at": datetime.now(UTC).isoformat(),
    }


async def _generate_keys(selector: str) -> list[DkimKey]:
    """An RSA-2048 and an Ed25519 key, generated off the event loop."""
    from ..auth.dkim import generate_key

    rsa = await anyio.to_thread.run_sync(lambda: generate_key("rsa", selector=selector))
    ed = generate_key("ed25519", selector=f"{selector}-ed25519")
    return [rsa, ed]


def _agent_name(agent: AgentRef) -> str | None:
    if agent is None or isinstance(agent, str):
        return agent
    from ..agent import Agent

    if isinstance(agent, type) and issubclass(agent, Agent):
        return agent.agent_name()
    raise InvalidInput("agent", "must be an Agent subclass or its 'module:Class' name", value=agent)
