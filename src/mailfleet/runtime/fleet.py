"""The Fleet: the composition root that opens the store and runs the agents of one scope.

An open fleet owns the components that live as long as it does: the
:class:`~mailfleet.store.scope.Scope` (its application and agent classes),
the :class:`Directory` (administration), the :class:`Intake` (inbound
group commit), the :class:`Outbox` (outbound gates and signing) and the
:class:`Mailroom` (what inbound sources get). :meth:`Fleet.serve` builds the
components that live as long as one serve (the worker, the sender, the MX,
the plugin sources) and stops them when it ends; nothing is re-wired after.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Self, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..model.addresses import parse_address
from ..model.consent import OptIn, UnsubscribeResult
from ..model.errors import Conflict, FleetNotOpen, StoreUnavailable
from ..model.outbound import SendCategory, SendResult
from ..model.records import Application, DnsRecord, Grant
from ..settings import Settings
from ..store import applications, grants, outbound, queue, workers, workspaces
from ..store.database import Database, normalize_url
from ..store.migrate import migrate
from ..store.outbound import OutboundView
from ..store.queue import DeadLetter
from ..store.scope import Scope, Tx
from ..store.workers import UnservedGrant
from .consent import Consent, ConsentTokens
from .directory import Directory
from .domain_auth import DomainAuth
from .doorbell import Doorbell
from .feedback import Feedback
from .heap import frozen_heap
from .intake import Intake
from .mailroom import Mailroom
from .metrics import RuntimeMetrics
from .outbox import OutboundRule, Outbox
from .policy import PolicyRules
from .policy_code import PolicyCode
from .provisioning import SingleProvisions
from .recipients import RecipientDomains
from .registry import AgentRegistry
from .status import FleetStatistics, Serving

# What only serving needs (the SMTP server and client, plugins, the worker and
# the sender, mail building and parsing) is imported by serve(), so that a
# command that opens a fleet to read or change the directory starts fast.
if TYPE_CHECKING:
    from ..agent import Agent
    from ..auth.dns import Resolver
    from ..auth.keystore import KeyStore
    from ..auth.preflight import PreflightReport
    from ..mail.build import OutgoingAttachment
    from ..mail.inbound import InboundMessage
    from ..model.policy_document import Change, PolicyDocument
    from ..model.spam import SpamScorer
    from ..plugins import InboundSource
    from ..store.storage import DeletedMessages
    from ..transports.simulator import SimulatedInternet
    from .admission import RecipientScorer
    from .retention import RetentionSweeper, SweepReport
    from .sender import Sender
    from .webhooks import Webhooks
    from .worker import Worker

__all__ = ["Fleet"]

log = logging.getLogger("mailfleet.fleet")

P = ParamSpec("P")
R = TypeVar("R")


def _directory(
    method: Callable[Concatenate[Directory, P], R],
) -> Callable[Concatenate[Fleet, P], R]:
    """Expose a :class:`Directory` method as the fleet's own (same signature and docs)."""

    @functools.wraps(method)
    def call(fleet: Fleet, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(fleet.directory, *args, **kwargs)

    return call


def _policy(
    method: Callable[Concatenate[PolicyRules, P], R],
) -> Callable[Concatenate[Fleet, P], R]:
    """Expose a :class:`PolicyRules` method (lists and rules) as the fleet's own."""

    @functools.wraps(method)
    def call(fleet: Fleet, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(fleet.policy, *args, **kwargs)

    return call


@dataclass(frozen=True, slots=True)
class _Opened:
    """The components of an open fleet."""

    application: Application
    created: bool
    scope: Scope
    directory: Directory
    intake: Intake
    outbox: Outbox
    mailroom: Mailroom
    feedback: Feedback
    consent: Consent
    domain_auth: DomainAuth
    policy: PolicyRules
    tasks: TaskGroup


class Fleet:
    """Supervisor of a fleet of agents: provisioning, workspaces, policies, the runtime.

    Use it as an async context manager, and serve it in a task group::

        async with Fleet(agents=[Helpdesk]) as fleet:
            await fleet.add_domain("example.com")
            grant = await fleet.provision("help@example.com", agent=Helpdesk)
            async with anyio.create_task_group() as tg:
                serving = await tg.start(fleet.serve)   # ready: serving.smtp_port
                ...

    Opening it applies pending schema migrations and makes sure the
    application and its default workspace exist. A new database (the SQLite
    file, or mailfleet's schema in an empty PostgreSQL database) is created
    then, unless ``create=False``: opening raises
    :class:`~mailfleet.DatabaseNotFound` instead and creates nothing, not
    even the SQLite file's folder (a database with an older schema is still
    upgraded). A fleet serves one
    application (``settings.application``) and runs the agent classes given as
    ``agents`` (or bound with :meth:`bind` / :meth:`register` before
    :meth:`serve`): its worker claims only grants of that application whose
    class it runs; grants provisioned with no class run ``default_agent``.
    Keyword ``overrides`` are settings, validated like the environment.

    ``database`` shares an open :class:`~mailfleet.store.database.Database`
    (the HTTP API serves every application of a store through one): the
    fleet then neither migrates it nor closes it; its owner does both.
    """

    database: Database
    """The database handle, made when the fleet opens."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        agents: Iterable[type[Agent]] = (),
        default_agent: type[Agent] | None = None,
        create: bool = True,
        database: Database | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = Settings.load(settings, **overrides)
        normalize_url(self.settings.effective_database_url)  # a bad URL fails here, not later
        self._create = create
        self._shared_database = database
        self._registry = AgentRegistry(agents, default_agent)
        self._opened: _Opened | None = None
        self._resolver: Resolver | None = None
        self._serving: Serving | None = None
        self._worker: Worker | None = None
        self._simulator: SimulatedInternet | None = None
        self.metrics = RuntimeMetrics()
        """What this fleet's runtime observes while it serves (dispatch latency, handler
        durations), kept across serves; exporters read it (``GET /metrics``)."""
        self._work_committed: Doorbell[[set[str] | None]] = Doorbell()
        self._outbound_queued: Doorbell[[]] = Doorbell()
        self._webhooks: Webhooks | None = None
        self._spam_scorers: list[SpamScorer] = []
        self._recipient_scorers: list[RecipientScorer] = []

    # -- opening and closing -------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._opened is not None:
            raise Conflict("fleet", "the fleet is open already")
        shared = self._shared_database
        self.database = database = shared or Database(
            self.settings.effective_database_url, create=self._create
        )
        owned = None if shared is not None else database
        try:
            created = False if shared is not None else await migrate(database, create=self._create)
            application = await database.write(partial(self._ensure_application, database))
        except StoreUnavailable as exc:
            await _close(None, owned)
            cause = exc.__cause__
            detail = getattr(cause, "orig", None) or cause or exc
            one_line = " ".join(str(detail).split())  # the driver's may span lines
            message = f"cannot open the database {database.display_url}: {one_line}"
            raise StoreUnavailable(message) from cause
        except BaseException:
            await _close(None, owned)
            raise
        scope = Scope(database, application.id, self._registry.served)
        policy = PolicyRules(scope)
        intake = Intake(
            scope,
            queue_limit=self.settings.queue_limit,
            committed=self._work_committed.ring,
            screen=policy.screen_deliveries,
        )
        mailroom = Mailroom(scope, intake, bounce_domain_of=self.settings.bounce_domain_of)
        singles = SingleProvisions(scope, max_batch=self.settings.provision_batch_size)
        directory = Directory(
            scope,
            self.settings,
            keys_changed=lambda d: outbox.forget_signer(d),
            singles=singles,
        )
        tokens = ConsentTokens(scope, self.settings)
        outbox = Outbox(
            scope,
            queued=self._outbound_queued.ring,
            require_verified_domains=not self.settings.dev_mode,
            keystore=self._keystore,
            envelope_domain=self.settings.envelope_domain,
            recipient_domains=RecipientDomains(lambda: self.resolver, mailroom.owns_domain)
            if self.settings.check_recipient_domains
            else None,
            tokens=tokens,
            opt_in_pending=lambda grant, address: consent.campaign_refused(grant, address),
        )
        consent = Consent(
            scope,
            tokens,
            outbox,
            expiry_days=self.settings.opt_in_expiry_days,
            committed=self._work_committed.ring,
        )
        outbox.add_rule(policy.outbound_rule)  # the stored outbound rules (gate 5)
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        try:
            await tasks.start(policy.run)
            await tasks.start(intake.run)
            await tasks.start(outbox.run)
            await tasks.start(mailroom.run)
            await tasks.start(singles.run)
        except BaseException:
            await _close(tasks, owned)
            raise
        self._opened = _Opened(
            application=application,
            created=created,
            scope=scope,
            directory=directory,
            intake=intake,
            outbox=outbox,
            mailroom=mailroom,
            feedback=Feedback(
                scope,
                soft_bounce_limit=self.settings.soft_bounce_limit,
                committed=self._work_committed.ring,
            ),
            consent=consent,
            domain_auth=DomainAuth(
                scope, self.settings, lambda: self.resolver, keys_changed=outbox.forget_signer
            ),
            policy=policy,
            tasks=tasks,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        opened, self._opened = self._opened, None
        self._webhooks = None
        if opened is not None:
            # The body's own exception is not handed to the task group: it comes
            # out of ``async with`` as itself, never wrapped in an ExceptionGroup.
            owned = None if self._shared_database is not None else self.database
            await _close(opened.tasks, owned)

    def _ensure_application(self, database: Database, conn: Any) -> Application:
        if not self._create:  # a reading command: a mistyped name must not make a tenant
            return applications.get_application(conn, self.settings.application)
        application = applications.ensure_application(conn, self.settings.application)
        workspaces.ensure_default_workspace(Tx(conn, Scope(database, application.id)))
        return application

    def _open(self, what: str) -> _Opened:
        if self._opened is None:
            raise FleetNotOpen(what)
        return self._opened

    @property
    def application(self) -> Application:
        """The application (tenant) this fleet serves."""
        return self._open("Fleet.application").application

    @property
    def database_created(self) -> bool:
        """Whether opening this fleet created its database: the SQLite file, or
        mailfleet's schema in a database that had none."""
        return self._open("Fleet.database_created").created

    @property
    def directory(self) -> Directory:
        """The administrative side: domains, workspaces, grants, keys, events.

        Its methods are also the fleet's own (``fleet.provision(...)`` is
        ``fleet.directory.provision(...)``).
        """
        return self._open("the directory").directory

    @property
    def webhooks(self) -> Webhooks:
        """The application's webhook subscriptions: ``create``, ``list``, ``get``,
        ``update``, ``delete``, ``rotate_secret``, ``deliveries``, ``attempts``,
        ``replay``; ``serve`` delivers (``serve()`` runs it with ``webhook_delivery``)."""
        opened = self._open("Fleet.webhooks")
        if self._webhooks is None:
            from .webhooks import Webhooks  # on first use: a command that reads skips it

            self._webhooks = Webhooks(opened.scope, self.settings)
        return self._webhooks

    # -- the administrative side (a façade over the directory) ----------------------

    add_domain = _directory(Directory.add_domain)
    rotate_dkim = _directory(Directory.rotate_dkim)
    promote_dkim = _directory(Directory.promote_dkim)
    retire_dkim = _directory(Directory.retire_dkim)
    reputation = _directory(Directory.reputation)
    reinstate = _directory(Directory.reinstate)
    restrict = _directory(Directory.restrict)
    lift = _directory(Directory.lift)
    domains = _directory(Directory.domains)
    create_workspace = _directory(Directory.create_workspace)
    workspace = _directory(Directory.workspace)
    workspaces = _directory(Directory.workspaces)
    update_policy = _directory(Directory.update_policy)
    set_patterns = _directory(Directory.set_patterns)
    update_workspace = _directory(Directory.update_workspace)
    delete_workspace = _directory(Directory.delete_workspace)
    move_grants = _directory(Directory.move_grants)
    regroup = _directory(Directory.regroup)
    regroup_job = _directory(Directory.regroup_job)
    provision = _directory(Directory.provision)
    provision_many = _directory(Directory.provision_many)
    deprovision = _directory(Directory.deprovision)
    deprovision_many = _directory(Directory.deprovision_many)
    grant = _directory(Directory.grant)
    grants = _directory(Directory.grants)
    count_grants = _directory(Directory.count_grants)
    count_events = _directory(Directory.count_events)
    suppress = _directory(Directory.suppress)
    suppress_many = _directory(Directory.suppress_many)
    unsuppress = _directory(Directory.unsuppress)
    suppressions = _directory(Directory.suppressions)
    suppression = _directory(Directory.suppression)
    count_suppressions = _directory(Directory.count_suppressions)
    messages = _directory(Directory.messages)
    message = _directory(Directory.message)
    stored_message = _directory(Directory.stored_message)
    threads = _directory(Directory.threads)
    thread = _directory(Directory.thread)
    reputation_of = _directory(Directory.reputation_of)
    restrictions = _directory(Directory.restrictions)
    set_grant_status = _directory(Directory.set_grant_status)
    create_api_key = _directory(Directory.create_api_key)
    revoke_api_keys = _directory(Directory.revoke_api_keys)
    events = _directory(Directory.events)

    # -- lists and rules (a façade over the policy) --------------------------------------

    @property
    def policy(self) -> PolicyRules:
        """The application's lists and rules, and the compiled rules in force here.

        Its methods are also the fleet's own (``fleet.create_list(...)``).
        """
        return self._open("the lists and rules").policy

    create_list = _policy(PolicyRules.create_list)
    lists = _policy(PolicyRules.lists)
    get_list = _policy(PolicyRules.get_list)
    list_items = _policy(PolicyRules.list_items)
    delete_list = _policy(PolicyRules.delete_list)
    add_list_items = _policy(PolicyRules.add_list_items)
    remove_list_items = _policy(PolicyRules.remove_list_items)
    create_rule = _policy(PolicyRules.create_rule)
    rules = _policy(PolicyRules.rules)
    rule = _policy(PolicyRules.rule)
    update_rule = _policy(PolicyRules.update_rule)
    delete_rule = _policy(PolicyRules.delete_rule)
    dry_run_rule = _policy(PolicyRules.dry_run_rule)
    rule_evaluations = _policy(PolicyRules.rule_evaluations)

    # -- policy as code ------------------------------------------------------------------

    async def export_policy(self) -> PolicyDocument:
        """The application's workspaces, lists (every entry) and rules as a policy
        document (``mailfleet export``); applying it changes nothing."""
        opened = self._open("Fleet.export_policy()")
        return await PolicyCode(opened.scope, opened.policy).export_policy()

    async def apply_policy(
        self,
        document: PolicyDocument | Mapping[str, Any],
        *,
        prune: bool = False,
        dry_run: bool = False,
    ) -> list[Change]:
        """Make the workspaces, lists and rules what ``document`` declares, in one
        transaction (``mailfleet apply``); the changes made, none when it was so
        already. ``dry_run``: the changes only. ``prune``: also delete what the
        document does not name (never the default workspace). An invalid document is
        an :class:`~mailfleet.model.policy_document.InvalidDocument` naming the path of
        its faulty field; a refusal while applying leaves everything as it was."""
        opened = self._open("Fleet.apply_policy()")
        return await PolicyCode(opened.scope, opened.policy).apply_policy(
            document, prune=prune, dry_run=dry_run
        )

    # -- agents -----------------------------------------------------------------------

    def bind(self, agent: type[Agent]) -> None:
        """Run ``agent``'s handlers for the grants provisioned with it (no provisioning).

        Bind before :meth:`serve`: a serving worker claims for the classes it
        started with (a :class:`~mailfleet.Conflict` otherwise).
        """
        if self._serving is not None:
            raise Conflict("agent", "bind agent classes before serve(), not while serving")
        self._registry.add(agent)

    async def register(self, agent: type[Agent]) -> list[Grant]:
        """Run ``agent`` in this fleet: its grants' messages go to its handlers.

        Provisions the addresses the class declares (in dev mode, registering
        their domains first) and returns their grants.
        """
        self.bind(agent)
        declared = [str(parse_address(a)) for a in agent.addresses]
        if self.settings.dev_mode:
            for domain in sorted({a.rsplit("@", 1)[1] for a in declared}):
                await self.add_domain(domain)
        results = await self.provision_many(declared, workspace=agent.workspace, agent=agent)
        for result in results:
            if result.error is not None:
                raise result.error
        return [r.grant for r in results if r.grant is not None]

    # -- mail in and out --------------------------------------------------------------

    @property
    def mailroom(self) -> Mailroom:
        """What inbound sources get: ``deliver``, ``grant``, ``cursor``, ``set_cursor``."""
        return self._open("the mailroom").mailroom

    async def deliver(
        self, grant: str | Grant, raw: bytes, *, source_key: str | None = None
    ) -> InboundMessage:
        """Store a message for a grant (id, address or record) and queue it.

        See :meth:`Mailroom.deliver <mailfleet.runtime.mailroom.Mailroom.deliver>`.
        """
        return await self.mailroom.deliver(grant, raw, source_key=source_key)

    async def cursor(self, grant: str, source: str) -> dict[str, Any] | None:
        """How far ``source`` (e.g. an IMAP mailbox) has been read for a grant."""
        return await self.mailroom.cursor(grant, source)

    async def set_cursor(self, grant: str, source: str, value: dict[str, Any]) -> None:
        """Remember how far ``source`` has been read for a grant (a JSON value)."""
        await self.mailroom.set_cursor(grant, source, value)

    def add_outbound_rule(self, rule: OutboundRule) -> None:
        """Evaluate ``rule`` on every send of this process, after the suppression list:
        given the queuing transaction and the :class:`~mailfleet.model.outbound.OutgoingMail`,
        it answers why the send is blocked (``blocked_by_rule``), or None."""
        self._open("Fleet.add_outbound_rule()").outbox.add_rule(rule)

    async def send(
        self,
        grant: str | Grant,
        to: str | Sequence[str],
        *,
        subject: str,
        text: str,
        html: str | None = None,
        attachments: Sequence[OutgoingAttachment] = (),
        in_reply_to: InboundMessage | str | None = None,
        defer: bool = False,
        category: SendCategory | str = SendCategory.TRANSACTIONAL,
        cc: str | Sequence[str] = (),
        bcc: str | Sequence[str] = (),
        reply_to: str | Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Send as a grant (id, address or record) from outside an agent.

        The same gates, building, signing and outbox as ``Agent.send`` (and, with
        ``in_reply_to``, ``Agent.reply``'s threading: a message, or the id of one of
        the grant's stored messages); the result says whether the message was queued
        or why not. ``cc`` recipients are named in the message, ``bcc`` ones only in
        the envelope; ``headers`` adds fields the builder does not write. A send
        given an ``idempotency_key`` is queued at most once under it: a second send
        with the key answers the first one's result (its ``id``) and queues nothing.
        ``category`` as for ``Agent.send``: ``bulk`` and ``campaign`` sends carry
        one-click unsubscribe headers, and ``campaign`` ones reach only recipients
        who confirmed (``opt_in_pending``). An unknown grant is a
        :class:`~mailfleet.GrantNotFound`, an unknown ``in_reply_to`` a
        :class:`~mailfleet.MessageNotFound`.
        """
        opened = self._open("Fleet.send()")
        record = await opened.mailroom.grant(grant.id if isinstance(grant, Grant) else grant)
        parent = in_reply_to
        if isinstance(parent, str):
            parent = await opened.directory.stored_message(record.id, parent, field="in_reply_to")
        return await opened.outbox.send(
            record,
            _listed(to),
            subject=subject,
            text=text,
            html=html,
            in_reply_to=parent,
            attachments=attachments,
            defer=defer,
            category=category,
            cc=_listed(cc),
            bcc=_listed(bcc),
            reply_to=_listed(reply_to),
            headers=headers,
            idempotency_key=idempotency_key,
        )

    # -- unsubscribes and double opt-in -----------------------------------------------

    async def unsubscribe(self, token: str, *, via: str = "one_click") -> UnsubscribeResult:
        """Unsubscribe the recipient of a bulk or campaign send, by the token of its
        ``List-Unsubscribe`` link (``POST /v1/unsubscribe/TOKEN``, RFC 8058 one-click).

        See :meth:`Consent.unsubscribe <mailfleet.runtime.consent.Consent.unsubscribe>`:
        suppressed at once, idempotent, :class:`~mailfleet.InvalidToken` for a token this
        application did not issue (nothing changes).
        """
        return await self._open("Fleet.unsubscribe()").consent.unsubscribe(token, via=via)

    async def unsubscribe_status(self, token: str) -> UnsubscribeResult:
        """Who ``token`` unsubscribes from whom, and whether it did: changes nothing
        (a page shown before the one-click POST). :class:`~mailfleet.InvalidToken` as
        for :meth:`unsubscribe`."""
        return await self._open("Fleet.unsubscribe_status()").consent.unsubscribe_status(token)

    async def request_opt_in(
        self,
        grant: str | Grant,
        recipient: str,
        *,
        subject: str | None = None,
        text: str | None = None,
    ) -> OptIn:
        """Ask ``recipient`` to confirm ``grant``'s campaign mail (double opt-in): a
        confirmation with a signed link (``public_url``/v1/opt-in/TOKEN) that a reply
        answers too. See :meth:`Consent.request_opt_in
        <mailfleet.runtime.consent.Consent.request_opt_in>`."""
        opened = self._open("Fleet.request_opt_in()")
        record = await self._grant_record(opened, grant)
        return await opened.consent.request_opt_in(record, recipient, subject=subject, text=text)

    async def opt_in(self, grant: str | Grant, recipient: str) -> OptIn:
        """Where ``recipient`` stands with ``grant``'s campaign mail: not requested,
        pending, confirmed or expired (changes nothing)."""
        opened = self._open("Fleet.opt_in()")
        return await opened.consent.opt_in(await self._grant_record(opened, grant), recipient)

    async def confirm_opt_in(self, token: str, *, via: str = "link") -> OptIn:
        """Confirm the opt-in a confirmation's link names (``/v1/opt-in/TOKEN``).

        Idempotent; :class:`~mailfleet.InvalidToken` for a token this application did
        not issue (or a newer request replaced), :class:`~mailfleet.TokenExpired` past
        ``opt_in_expiry_days``: nothing changes then.
        """
        return await self._open("Fleet.confirm_opt_in()").consent.confirm_opt_in(token, via=via)

    async def opt_in_status(self, token: str) -> OptIn:
        """The opt-in a confirmation's token names, without confirming it (a page shown
        before the confirming POST); :class:`~mailfleet.InvalidToken` as for
        :meth:`confirm_opt_in`."""
        return await self._open("Fleet.opt_in_status()").consent.opt_in_status(token)

    @staticmethod
    async def _grant_record(opened: _Opened, grant: str | Grant) -> Grant:
        return await opened.mailroom.grant(grant.id if isinstance(grant, Grant) else grant)

    # -- storage, retention and spam ---------------------------------------------------

    async def delete_messages(self, grant: str | Grant, ids: Iterable[str]) -> DeletedMessages:
        """Delete messages of a grant (id, address or record): inbound or sent ones (not
        a send still pending), with their queue entries. The grant's storage gets their
        bytes back at once; a grant marked full that is under its limit again records
        ``grant.storage_available`` and takes mail again (the MX sees it within a
        second). Ids that are not the grant's are left alone; an unknown grant is a
        :class:`~mailfleet.GrantNotFound`."""
        from ..store import storage

        key = grant.id if isinstance(grant, Grant) else grant
        wanted = list(ids)
        scope = self._open("Fleet.delete_messages()").scope
        return await scope.write(lambda tx: storage.delete_messages(tx, key, wanted))

    async def sweep_retention(self, *, now: datetime | None = None) -> SweepReport:
        """Delete, now, every message older than its workspace's retention at ``now``
        (default: the current time): what a serving fleet does every
        ``retention_sweep_interval``, in batches of ``retention_batch_size``."""
        return await self._sweeper(self._open("Fleet.sweep_retention()").scope).sweep(now=now)

    def _sweeper(self, scope: Scope) -> RetentionSweeper:
        from .retention import RetentionSweeper

        s = self.settings
        return RetentionSweeper(
            scope,
            interval=s.retention_sweep_interval,
            batch_size=s.retention_batch_size,
            holder=s.worker_id or "",
        )

    def add_spam_scorer(self, scorer: SpamScorer) -> None:
        """Consult ``scorer`` (a :class:`~mailfleet.model.spam.SpamScorer`) for every
        message the MX takes from the next :meth:`serve` on, beside the built-in
        signals, the DNS blocklists and the plugins' ``mailfleet_spam_scorers``."""
        if self._serving is not None:
            raise Conflict("spam", "add spam scorers before serve(), not while serving")
        self._spam_scorers.append(scorer)

    def add_recipient_spam_scorer(self, scorer: RecipientScorer) -> None:
        """Add, from the next :meth:`serve` on, signals that depend on the recipient:
        ``await scorer(grant, message)`` for each grant a message is for (its
        workspace's inbound rules that ``mark_spam``:
        :func:`~mailfleet.model.spam.rule_signal`), judged with that grant's verdict."""
        if self._serving is not None:
            raise Conflict("spam", "add spam scorers before serve(), not while serving")
        self._recipient_scorers.append(scorer)

    # -- domain authentication -------------------------------------------------------

    def _keystore(self) -> KeyStore:
        from ..auth.keystore import KeyStore

        return KeyStore.from_settings(self.settings)

    @property
    def resolver(self) -> Resolver:
        """The fleet's one DNS resolver (``dns_nameservers``, ``dns_timeout``): every
        lookup of the fleet goes through it and its cache. Made on first use."""
        if self._resolver is None:
            from ..auth.dns import Resolver

            self._resolver = Resolver.from_settings(self.settings)
        return self._resolver

    async def domain_records(self, name: str) -> list[DnsRecord]:
        """The DNS records to publish for the registered domain ``name``: MX, SPF, one
        DKIM record per key, DMARC, the bounce domain's MX and SPF when it differs,
        and the advised MTA-STS and TLS-RPT records (``required=False``)."""
        return await self._open("Fleet.domain_records()").domain_auth.records(name)

    async def check_domain(self, name: str) -> PreflightReport:
        """Check the published DNS of ``name`` now (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT)
        and store the verdict: the domain becomes ``verified`` or ``failed``."""
        return await self._open("Fleet.check_domain()").domain_auth.check(name)

    async def audit_domains(self) -> int:
        """Audit the domains whose audit is due, now: what a serving fleet does every
        round. Each due domain is checked by one caller, however many workers ask at
        once; returns how many this one checked."""
        return await self._open("Fleet.audit_domains()").domain_auth.audit_due()

    # -- serving ----------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[Serving] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the agents until cancelled, then shut down gracefully.

        Use it as ``serving = await tg.start(fleet.serve)``: it reports
        :class:`~mailfleet.Serving` (the bound SMTP port, the worker id) once the
        MX listens and the worker runs. A failure to start (the port is taken...)
        is raised from ``tg.start`` as itself. At shutdown no new message is
        started; running handlers get ``shutdown_grace`` seconds to finish, their
        completions are committed and the grants' leases given back, so another
        worker (or the next start) continues exactly where this one stopped.
        """
        opened = self._open("Fleet.serve()")
        if self._serving is not None:
            raise Conflict("serve", "the fleet is serving already")
        with _single_errors():
            await self._serve(opened, task_status)

    async def _serve(self, opened: _Opened, task_status: TaskStatus[Serving]) -> None:
        from ..plugins import inbound_sources, plugin_manager, spam_scorers

        s = self.settings
        scope = opened.scope.serving(self._registry.served)
        plugins = plugin_manager(s.plugin_allowlist)
        sources = inbound_sources(plugins, s)
        scorers = [*spam_scorers(plugins, s), *self._spam_scorers]
        async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
            smtp_port = (
                await tg.start(self._serve_smtp, opened, scorers)
                if s.smtp_port is not None
                else None
            )
            if s.retention_sweep_interval > 0:
                await tg.start(self._sweeper(opened.scope).run)
            for source in sources:
                tg.start_soon(_run_source, source, opened.mailroom, name=f"source {source.name}")
            if s.audit_domains:
                await tg.start(opened.domain_auth.run)
            if s.webhook_delivery:
                delivery = self.webhooks.delivery()
                await tg.start(delivery.run)
                ring = _notifier(delivery.notify)
                stack.enter_context(self._work_committed.listening(ring))
                stack.enter_context(self._outbound_queued.listening(ring))
            if not s.run_worker:  # a front end: it stores mail; workers elsewhere run it
                self._serving = Serving(smtp_port, None)
                self._log_serving(opened, scope)
                try:
                    task_status.started(self._serving)
                    with frozen_heap():  # see runtime/heap.py
                        await anyio.sleep_forever()
                finally:
                    self._serving = None
                return
            simulated = await self._start_simulator(tg, smtp_port) if s.simulate else None
            worker = self._new_worker(scope, opened)
            sender = self._new_sender(scope, opened, simulated)
            # The worker runs shielded: cancelling serve() must not interrupt handlers
            # mid-flight; the finally block drains it, then cancels it.
            shield = anyio.CancelScope(shield=True)
            with ExitStack() as listening:
                listening.enter_context(self._work_committed.listening(worker.notify))
                listening.enter_context(self._outbound_queued.listening(sender.notify))
                started = anyio.Event()
                # Not tg.start(): a cancel while it starts would wait for the shielded
                # task to end, forever. Here the finally block stops it in any case.
                tg.start_soon(_run_shielded, shield, worker, sender, started)
                try:
                    await started.wait()
                    self._serving, self._worker = Serving(smtp_port, worker.id), worker
                    self._log_serving(opened, scope)
                    task_status.started(self._serving)
                    with frozen_heap():  # see runtime/heap.py
                        await anyio.sleep_forever()
                finally:
                    self._serving = self._worker = None
                    self._simulator = None
                    log.info("stopping: running handlers get %gs to finish", s.shutdown_grace)
                    with anyio.CancelScope(shield=True):
                        try:
                            await worker.drain(s.shutdown_grace)
                            await sender.drain(s.shutdown_grace)
                        finally:
                            shield.cancel()
                    log.info("stopped; leases given back")

    def _log_serving(self, opened: _Opened, scope: Scope) -> None:
        s, serving = self.settings, self._serving
        assert serving is not None
        agents = sorted(scope.agents.names) + (["(default agent)"] if scope.agents.unnamed else [])
        log.info(
            "serving application %s from %s: SMTP %s, %s, agents %s",
            opened.application.name,
            self.database.display_url,
            "off" if serving.smtp_port is None else f"{s.smtp_host}:{serving.smtp_port}",
            "front end only" if serving.worker_id is None else f"worker {serving.worker_id}",
            ", ".join(agents) or "none",
            extra={"application": opened.application.name, "worker_id": serving.worker_id},
        )

    def _new_worker(self, scope: Scope, opened: _Opened) -> Worker:
        from .host import AgentHost
        from .worker import Worker, WorkerSettings

        s = self.settings
        host = AgentHost(self._registry.resolve, opened.outbox, handler_timeout=s.handler_timeout)
        return Worker(
            scope,
            host,
            WorkerSettings(
                concurrency=s.concurrency,
                queue_limit=s.queue_limit,
                handler_timeout=s.handler_timeout,
                max_attempts=s.max_attempts,
                retry_base=s.retry_base,
                retry_max=s.retry_max,
                idle_timeout=s.idle_timeout,
                lease_ttl=s.lease_ttl,
                poll_interval=s.poll_interval,
            ),
            worker_id=s.worker_id,
            metrics=self.metrics,
        )

    async def _start_simulator(self, tg: TaskGroup, smtp_port: int | None) -> int:
        """Start the simulated internet in ``tg``; its port. Its reports go to the MX
        (``smtp_host``, the bound port), or are dropped when there is none."""
        from ..transports.simulator import SimulatedInternet, profiles_with

        s = self.settings
        simulator = SimulatedInternet(
            profiles_with(s.simulator_profiles),
            seed=s.simulator_seed,
            report_delay=s.simulator_report_delay,
            mx=None if smtp_port is None else (s.smtp_host, smtp_port),
        )
        port: int = await tg.start(simulator.run)
        self._simulator = simulator
        log.info("simulated internet on 127.0.0.1:%d: profiles %s", port, simulator.describe())
        return port

    @property
    def simulator(self) -> SimulatedInternet | None:
        """The simulated internet outbound mail goes to, while serving with ``simulate``."""
        return self._simulator

    def _new_sender(self, scope: Scope, opened: _Opened, simulated: int | None = None) -> Sender:
        """The sender: to the relay, to the simulated internet on port ``simulated``, or
        (neither) local delivery and capture. With the simulator, every message goes to
        it, to the fleet's own addresses too (it delivers them like any domain's)."""
        from ..transports.smtp_out import RelayConfig, SmtpRelay
        from .sender import Sender
        from .worker import new_worker_id

        s = self.settings
        relay = None
        if simulated is not None:
            relay = SmtpRelay(
                RelayConfig(
                    host="127.0.0.1",
                    port=simulated,
                    starttls=False,
                    pool_size=4,
                    timeout=s.relay_timeout,
                )
            )
        elif s.relay_host is not None:
            relay = SmtpRelay(
                RelayConfig(
                    host=s.relay_host,
                    port=s.relay_port,
                    starttls=s.relay_starttls,
                    implicit_tls=s.relay_tls,
                    username=s.relay_username,
                    password=(s.relay_password.get_secret_value() if s.relay_password else None),
                    pool_size=s.relay_pool_size,
                    validate_certs=s.relay_validate_certs,
                    timeout=s.relay_timeout,
                )
            )
        return Sender(
            scope,
            relay=relay,
            local_grant=opened.mailroom.grant_id,
            deliver=opened.intake.deliver,
            retry_schedule=s.retry_schedule,
            worker_id=s.worker_id or new_worker_id(),
            committed=self._work_committed.ring,
            soft_bounce_limit=s.soft_bounce_limit,
            concurrency=max(s.relay_pool_size * 2, 4),
            poll_interval=s.poll_interval,
            lease=s.send_lease,
        )

    async def _serve_smtp(
        self, opened: _Opened, scorers: Sequence[SpamScorer], *, task_status: TaskStatus[int]
    ) -> None:
        import ssl

        from ..auth.verify import InboundVerifier
        from ..transports.smtp_in import serve_smtp
        from .admission import Admission
        from .dnsbl import DnsblScorer
        from .mx import FleetMx
        from .spam import SpamFilter

        s = self.settings
        blocklists = DnsblScorer(
            self.resolver,
            ip_zones=s.dnsbl_zones,
            domain_zones=s.dnsbl_domain_zones,
            score=s.dnsbl_score,
            timeout=s.dnsbl_timeout,
        )
        spam = SpamFilter([blocklists, *scorers] if blocklists.enabled else scorers)
        admission = Admission(opened.scope, spam)
        for recipient_scorer in self._recipient_scorers:
            admission.add_recipient_scorer(recipient_scorer)
        verify = InboundVerifier(self.resolver, authserv_id=s.smtp_hostname)
        tls = None
        if s.smtp_tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(s.smtp_tls_cert, s.smtp_tls_key)
        mx = FleetMx(
            opened.mailroom.grant_or_none,
            opened.intake.deliver,
            hostname=s.smtp_hostname,
            owns_domain=opened.mailroom.owns_domain,
            report=opened.feedback.receive,
            authenticate=verify,
            unsubscribe=opened.consent.unsubscribe_by_mail,
            unsubscribe_known=opened.consent.knows_unsubscribe,
            screen=opened.policy.screen_recipient,
            admission=admission,
        )
        await serve_smtp(
            mx,
            host=s.smtp_host,
            port=s.smtp_port or 0,
            hostname=s.smtp_hostname,
            max_recipients=s.smtp_max_recipients,
            tls_context=tls,
            task_status=task_status,
        )

    @property
    def smtp_port(self) -> int | None:
        """The port the MX listens on while the fleet serves with an SMTP server."""
        return None if self._serving is None else self._serving.smtp_port

    @property
    def worker_id(self) -> str | None:
        """The id this fleet's worker holds leases under, while it serves."""
        return None if self._serving is None else self._serving.worker_id

    # -- reading the runtime's state --------------------------------------------------

    async def wait_idle(self) -> None:
        """Wait until every message committed so far has been handled, by this fleet's
        worker or any other live one (for tests and tools).

        Messages of grants whose class neither this fleet nor a live worker
        serves are not waited for: nothing would handle them.
        """
        scope = self._open("Fleet.wait_idle()").scope
        own = self._registry.served

        def served_waiting(tx: Tx) -> int:
            return queue.ready_count(tx, agents=own | workers.live_agents(tx, now=time.time()))

        # The cheap count while it moves; which grants are served (a join) only when
        # it stands still: is what is left waiting for nobody?
        previous = None
        while waiting := await scope.read(queue.ready_count):
            if waiting == previous and not await scope.read(served_waiting):
                return
            previous = waiting
            await anyio.sleep(0.02)  # other processes' work too: the store is the truth

    async def statistics(self) -> FleetStatistics:
        """A snapshot of this fleet's worker and of its application's queues."""
        opened = self._open("Fleet.statistics()")

        def read(tx: Tx) -> tuple[int, int, int, int, tuple[int, int]]:
            now = time.time()
            return (
                queue.ready_count(tx),
                queue.dead_letter_count(tx),
                outbound.count_outbound(tx, status="pending"),
                workers.live_workers(tx, now=now),
                workers.count_unserved(tx, now=now),
            )

        waiting, dead, pending, live, (unserved, unserved_waiting) = await opened.scope.read(read)
        worker = self._worker
        dispatched = None if worker is None else worker.dispatcher.statistics()
        return FleetStatistics(
            serving=self._serving is not None,
            worker_id=self.worker_id,
            held_grants=0 if worker is None else len(worker.held),
            active_agents=0 if worker is None else worker.active_agents,
            running_handlers=0 if dispatched is None else dispatched.running,
            queued_in_memory=0 if dispatched is None else dispatched.queued,
            waiting=waiting,
            dead_letters=dead,
            outbound_pending=pending,
            live_workers=live,
            unserved_grants=unserved,
            unserved_waiting=unserved_waiting,
        )

    async def unserved_grants(
        self, *, limit: int | None = 100, after: str | None = None
    ) -> list[UnservedGrant]:
        """Grants whose agent class no live worker of the application serves, by address,
        with the messages waiting for them (after the address ``after``)."""
        scope = self._open("Fleet.unserved_grants()").scope
        return await scope.read(
            lambda tx: workers.unserved_grants(tx, now=time.time(), limit=limit, after=after)
        )

    async def outbox(
        self, *, status: str | None = None, limit: int = 100, after: int | None = None
    ) -> list[OutboundView]:
        """Outbound messages, newest first: pending, sent, bounced, or captured in dev mode.

        ``after`` is a cursor: the last (oldest) id of the previous page.
        """
        scope = self._open("Fleet.outbox()").scope
        return await scope.read(
            lambda tx: outbound.list_outbound(tx, status=status, limit=limit, before=after)
        )

    async def outbox_count(self, status: str | None = None) -> int:
        """How many outbound messages are ``pending``, ``sent``, ``bounced`` or
        ``captured`` (all of them without ``status``)."""
        scope = self._open("Fleet.outbox_count()").scope
        return await scope.read(lambda tx: outbound.count_outbound(tx, status=status))

    async def outbox_message(self, outbound_id: int) -> OutboundView | None:
        """One outbound message with its raw bytes (as signed and sent)."""
        scope = self._open("Fleet.outbox_message()").scope
        return await scope.read(lambda tx: outbound.get_outbound(tx, outbound_id))

    async def agent_state(self, grant: str) -> dict[str, Any]:
        """The saved ``state`` of a grant's agent (empty if it never saved one)."""

        def read(tx: Tx) -> dict[str, Any]:
            found = grants.get_grant(tx, grant)
            return queue.states(tx, [found.id]).get(found.id, {})

        return await self._open("Fleet.agent_state()").scope.read(read)

    async def dead_letters(self, *, limit: int = 100, after: int = 0) -> list[DeadLetter]:
        """Messages whose handler failed on every attempt, oldest first (after the
        entry id ``after``)."""
        scope = self._open("Fleet.dead_letters()").scope
        return await scope.read(lambda tx: queue.dead_letters(tx, limit=limit, after=after))

    async def replay_dead_letters(self, entry_ids: Iterable[int] | None = None) -> int:
        """Queue dead letters again (all, or the given ones); return how many."""
        wanted = None if entry_ids is None else list(entry_ids)
        scope = self._open("Fleet.replay_dead_letters()").scope
        count = await scope.write(lambda tx: queue.replay(tx, wanted))
        if count:
            self._work_committed.ring(None)
        return count

    # Last in the class: a member named ``list`` would shadow the builtin in the
    # annotations of every member after it.
    list = get_list
    """A list by id or name (:meth:`get_list`)."""


def _listed(addresses: str | Sequence[str]) -> list[str]:
    """One address or several, as a list."""
    return [addresses] if isinstance(addresses, str) else list(addresses)


async def _run_shielded(
    shield: anyio.CancelScope, worker: Worker, sender: Sender, started: anyio.Event
) -> None:
    """Run the sender and the worker inside ``shield``; set ``started`` once both run."""
    with shield:
        async with anyio.create_task_group() as inner:
            await inner.start(sender.run)
            await inner.start(worker.run)
            started.set()


def _notifier(notify: Callable[[], None]) -> Callable[..., None]:
    """A doorbell listener that calls ``notify`` whatever the ring carries."""

    def ring(*_: Any) -> None:
        notify()

    return ring


async def _run_source(source: InboundSource, mailroom: Mailroom) -> None:
    """Run a plugin's source; a crash is logged and the source restarted with backoff."""
    delay = 1.0
    while True:
        try:
            await source.serve(mailroom)
            return
        except Exception:
            log.exception("inbound source %s failed; restarting in %.0fs", source.name, delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, 60.0)


async def _close(tasks: TaskGroup | None, database: Database | None) -> None:
    """Stop the fleet's background tasks (if started), then close the database (the
    fleet's own, not a shared one), even when the caller is cancelled; an error of
    the tasks comes out as itself."""
    try:
        if tasks is not None:
            tasks.cancel_scope.cancel()
            with _single_errors():
                await tasks.__aexit__(None, None, None)
    finally:
        if database is not None:
            with anyio.CancelScope(shield=True):
                await database.aclose()


@contextmanager
def _single_errors() -> Iterator[None]:
    """Raise the one error inside an exception group (of task groups) as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors = _leaves(group)
        if len(errors) != 1:
            raise
        error = errors[0]
        error.__suppress_context__ = True
        raise error from error.__cause__


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found.extend(_leaves(error))
        else:
            found.append(error)
    return found
