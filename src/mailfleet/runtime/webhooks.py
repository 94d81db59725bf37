"""Application-level webhooks: the subscriptions (``fleet.webhooks``) and their delivery.

:class:`Webhooks` is the service an open fleet has: subscriptions of its
application, their deliveries and attempts, secret rotation, replay.
:class:`WebhookSender` carries the event outbox to the endpoints: it runs
in :meth:`Fleet.serve <mailfleet.Fleet.serve>` (``webhook_delivery``) and on
its own in any process (``await tg.start(fleet.webhooks.serve)``), as many
at once as wanted: the store's leases give each delivery to one of them.

Delivery is at-least-once, in order per grant: a grant's lane posts its
deliveries one after the other and stops at the first that fails; that one
is retried with exponential backoff (±20 % jitter) before the next of its
grant is posted, while other grants go on in parallel. An endpoint that keeps
failing is probed by one delivery at a time, at doubling intervals, marked
``failing`` and at last ``disabled``; events wait meanwhile, and re-enabling
it delivers them (see ``store/webhook_lanes.py``).
"""

from __future__ import annotations

import builtins
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import ObjectReceiveStream, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from ..model.envelope import envelope_bytes
from ..model.errors import InvalidInput
from ..model.webhook_signing import Signer, new_secret
from ..model.webhooks import (
    DeliveryStatus,
    FailurePolicy,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookFilter,
    WebhookStatus,
    check_event_types,
    check_url,
)
from ..settings import Settings
from ..store import grants as grant_store
from ..store import webhook_lanes as lanes_store
from ..store import webhooks as store
from ..store import workspaces as workspace_store
from ..store.database import Database
from ..store.outage import Outage
from ..store.scope import Scope, Tx
from ..store.tables import utcnow
from ..store.webhook_lanes import AttemptResult, LaneDone, LaneWork, WebhookBacklog

if TYPE_CHECKING:  # the HTTP client is imported by the delivery loop, when it runs
    from ..transports.webhook_http import WebhookPoster

__all__ = [
    "DeliveryOptions",
    "WebhookSender",
    "WebhookStatistics",
    "Webhooks",
    "run_webhook_delivery",
    "serve_webhooks",
    "webhook_lag",
]

log = logging.getLogger("mailfleet.webhooks")

_FLUSH_WAIT = 0.01
"""Seconds the attempts made may wait to be written together."""
_COALESCE = 0.005
"""Seconds a woken loop waits for more news before its round."""


class Webhooks:
    """The application's webhook subscriptions: ``fleet.webhooks``.

    One subscription covers the whole fleet, optionally filtered by event
    type, workspace or grant; each delivery is the event's envelope
    (:func:`~mailfleet.model.envelope.envelope`) signed by the Standard
    Webhooks scheme with the subscription's secret.
    """

    def __init__(self, scope: Scope, settings: Settings) -> None:
        self._scope = scope
        self._settings = settings

    async def create(
        self,
        url: str,
        *,
        event_types: Iterable[str] | None = None,
        workspaces: Iterable[str] | None = None,
        grants: Iterable[str] | None = None,
        description: str | None = None,
    ) -> tuple[Webhook, str]:
        """Subscribe ``url`` to the events recorded from now on; the subscription and its
        signing secret (``whsec_...``, shown this once).

        ``event_types`` (exact, ``message.*`` or ``*``), ``workspaces`` (names or ids)
        and ``grants`` (ids or addresses) narrow what it receives; None: everything.
        """
        checked = check_url(url)
        secret = new_secret()

        def work(tx: Tx) -> Webhook:
            wanted = _resolve_filter(tx, event_types, workspaces, grants)
            return store.create_webhook(
                tx,
                url=checked,
                description=description,
                filter=wanted,
                secret=secret,
                now=time.time(),
            )

        webhook = await self._scope.write(work)
        log.info("webhook %s created for %s", webhook.id, webhook.url)
        return webhook, secret

    async def list(self) -> builtins.list[Webhook]:
        """Every subscription of the application, oldest first."""
        return await self._scope.read(partial(store.list_webhooks, now=time.time()))

    async def get(self, webhook_id: str) -> Webhook:
        """A subscription by id; :class:`~mailfleet.WebhookNotFound` otherwise."""
        return await self._scope.read(
            partial(store.get_webhook, webhook_id=webhook_id, now=time.time())
        )

    async def update(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        description: str | None = None,
        event_types: Iterable[str] | None = None,
        workspaces: Iterable[str] | None = None,
        grants: Iterable[str] | None = None,
        status: WebhookStatus | str | None = None,
    ) -> Webhook:
        """Change what is given (an empty filter list: every event of that dimension;
        an empty ``description`` clears it).

        ``status="active"`` re-enables a failing or disabled subscription: its
        failures are forgotten, its waiting deliveries are due at once, and a
        disabled one goes on from the first event it has not yet delivered;
        ``"disabled"`` stops its deliveries (its events wait).
        """
        checked = None if url is None else check_url(url)
        wanted_status = None
        if status is not None:
            try:
                wanted_status = WebhookStatus(status)
            except ValueError:
                raise InvalidInput(
                    "status", f"{status!r} is not active or disabled", value=status
                ) from None

        def work(tx: Tx) -> Webhook:
            current = store.get_webhook(tx, webhook_id, now=time.time())
            given = (event_types, workspaces, grants)
            wanted = None
            if any(part is not None for part in given):
                old = current.filter
                resolved = _resolve_filter(tx, event_types, workspaces, grants)
                wanted = WebhookFilter(
                    resolved.event_types if event_types is not None else old.event_types,
                    resolved.workspaces if workspaces is not None else old.workspaces,
                    resolved.grants if grants is not None else old.grants,
                )
            return store.update_webhook(
                tx,
                webhook_id,
                now=time.time(),
                url=checked,
                description=description or None,
                clear_description=description == "",
                filter=wanted,
                status=wanted_status,
            )

        webhook = await self._scope.write(work)
        if wanted_status is not None:
            log.info("webhook %s set %s", webhook_id, wanted_status.value)
        return webhook

    async def delete(self, webhook_id: str) -> bool:
        """Delete a subscription, its deliveries and attempts; whether it existed."""
        return await self._scope.write(partial(store.delete_webhook, webhook_id=webhook_id))

    async def rotate_secret(
        self, webhook_id: str, *, grace_hours: float | None = None
    ) -> tuple[Webhook, str]:
        """A new signing secret (returned this once). The secrets in use keep signing
        beside it, every delivery carrying both signatures, for ``grace_hours``
        (default ``webhook_secret_grace_hours``), so receivers can switch in between."""
        hours = self._settings.webhook_secret_grace_hours if grace_hours is None else grace_hours
        if hours < 0:
            raise InvalidInput("grace_hours", "cannot be negative", value=grace_hours)
        secret = new_secret()
        webhook = await self._scope.write(
            lambda tx: store.rotate_secret(
                tx, webhook_id, secret, grace=hours * 3600.0, now=time.time()
            )
        )
        log.info("webhook %s: secret rotated, the old one valid for %gh", webhook_id, hours)
        return webhook, secret

    async def deliveries(
        self,
        webhook_id: str,
        *,
        status: DeliveryStatus | str | None = None,
        event: int | str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> builtins.list[WebhookDelivery]:
        """A subscription's deliveries, newest first: all, ``pending`` or ``delivered``,
        of one ``event``; ``before`` is the last id of the previous page."""
        wanted = None if status is None else _delivery_status(status)
        event_id = None if event is None else _event_id(event, "event")
        return await self._scope.read(
            lambda tx: store.list_deliveries(
                tx, webhook_id, status=wanted, before=before, event_id=event_id, limit=limit
            )
        )

    async def attempts(
        self,
        webhook_id: str,
        *,
        delivery: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> builtins.list[WebhookAttempt]:
        """A subscription's attempts (of one ``delivery``), newest first: status, latency,
        the first KiB of the answer, the error."""
        return await self._scope.read(
            lambda tx: store.list_attempts(
                tx, webhook_id, delivery_id=delivery, before=before, limit=limit
            )
        )

    async def replay(
        self,
        webhook_id: str,
        *,
        after_event: int | str | None = None,
        since: datetime | None = None,
        deliveries: Iterable[int] | None = None,
    ) -> int:
        """Deliver again: the events after the event ``after_event``, or recorded
        since ``since``, that the subscription's filter lets through, or the given
        ``deliveries``; how many deliveries were queued. Each replayed event is a new
        delivery, with the same ``webhook-id`` as before, behind those waiting."""
        given = sum(x is not None for x in (after_event, since, deliveries))
        if given != 1:
            raise InvalidInput("replay", "give one of after_event, since or deliveries")
        now = time.time()
        if deliveries is not None:
            ids = builtins.list(deliveries)
            return await self._scope.write(
                lambda tx: store.replay_deliveries(tx, webhook_id, ids, now=now)
            )
        after = None if after_event is None else _event_id(after_event, "after_event")
        if since is not None:  # the store compares UTC times; a naive one is taken as UTC
            since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
        count = await self._scope.write(
            lambda tx: store.replay_events(tx, webhook_id, now=now, after_event=after, since=since)
        )
        log.info("webhook %s: %d events queued again", webhook_id, count)
        return count

    async def backlog(self) -> WebhookBacklog:
        """What is left to deliver to the enabled subscriptions (``pending``, whether some
        event is not fanned out yet, the oldest waiting event's time: ``lag()``)."""
        return await self._scope.read(lanes_store.backlog)

    async def wait_delivered(self, *, poll: float = 0.02) -> None:
        """Wait until every event recorded so far has been delivered to every enabled
        subscription (by any process): for tests and tools."""
        while not (await self.backlog()).idle:  # noqa: ASYNC110 - other processes too
            await anyio.sleep(poll)

    def delivery(self, **options: Any) -> WebhookSender:
        """A delivery loop for this application (its options from the settings,
        overridden by ``options``, see :class:`DeliveryOptions`)."""
        return WebhookSender(self._scope, DeliveryOptions.from_settings(self._settings, **options))

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled: ``await tg.start(fleet.webhooks.serve)``."""
        await self.delivery().run(task_status=task_status)


def _resolve_filter(
    tx: Tx,
    event_types: Iterable[str] | None,
    workspaces: Iterable[str] | None,
    grants: Iterable[str] | None,
) -> WebhookFilter:
    types = () if event_types is None else check_event_types(_strings(event_types, "event_types"))
    workspace_ids: builtins.list[str] = []
    for name in _strings(workspaces or (), "workspaces"):
        found = workspace_store.get_workspace(tx, name).id
        if found not in workspace_ids:
            workspace_ids.append(found)
    grant_ids: builtins.list[str] = []
    for key in _strings(grants or (), "grants"):
        found = grant_store.get_grant(tx, key).id
        if found not in grant_ids:
            grant_ids.append(found)
    return WebhookFilter(types, tuple(workspace_ids), tuple(grant_ids))


def _strings(values: Iterable[str], field: str) -> builtins.list[str]:
    if isinstance(values, str):
        raise InvalidInput(field, "give a list, not one string", value=values)
    found = builtins.list(values)
    for value in found:
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(field, f"{value!r} is not a name or id", value=value)
    return [v.strip() for v in found]


def _delivery_status(status: DeliveryStatus | str) -> DeliveryStatus:
    try:
        return DeliveryStatus(status)
    except ValueError:
        raise InvalidInput(
            "status", f"{status!r} is not pending or delivered", value=status
        ) from None


def _event_id(value: int | str, field: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(field, f"{value!r} is not an event id", value=value) from None
    if number < 0:
        raise InvalidInput(field, "an event id is not negative", value=value)
    return number


# -- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """How one delivery loop runs."""

    policy: FailurePolicy = field(default_factory=FailurePolicy)
    timeout: float = 10.0
    """Seconds an endpoint has to answer one POST."""
    lanes: int = 32
    """Lanes (grants) posted in parallel; also the connections pooled."""
    per_lane: int = 16
    """Deliveries of one lane taken at a time."""
    poll_interval: float = 0.2
    retention_days: float = 30.0
    """Delivered deliveries older than this are deleted, with their attempts (0: never)."""
    prune_interval: float = 3600.0
    fan_out_batch: int = 2000
    owner: str | None = None
    """The name leases are held under (default: a fresh worker id)."""

    @property
    def lease(self) -> float:
        """How long a claimed lane stays this loop's: it stops posting a lane at half."""
        return max(60.0, 4 * self.timeout)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DeliveryOptions:
        """The options the ``webhook_*`` settings give, with ``overrides``."""
        s = settings
        values: dict[str, Any] = {
            "policy": FailurePolicy(
                retry_base=s.webhook_retry_base_seconds,
                retry_max=s.webhook_retry_max_seconds,
                failing_after=s.webhook_failing_after,
                disable_after_failures=s.webhook_disable_after_failures,
                disable_after_seconds=s.webhook_disable_after_hours * 3600.0,
            ),
            "timeout": s.webhook_timeout_seconds,
            "lanes": s.webhook_lanes,
            "poll_interval": s.webhook_poll_interval,
            "retention_days": s.webhook_retention_days,
            "owner": s.worker_id,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class WebhookStatistics:
    """A snapshot of one delivery loop."""

    delivered: int
    """Deliveries this loop got a 2xx for."""
    failed: int
    """Attempts of this loop that failed."""
    held_lanes: int
    """Lanes it holds now (claimed, not yet given back)."""


class WebhookSender:
    """Carries the event outbox of one application to its subscriptions' endpoints.

    Each round, in one transaction, it fans new events out into deliveries and
    claims due lanes; ``lanes`` tasks post them, each over its own small pool of
    keep-alive connections, and their attempts are written in batches. ``run`` until
    cancelled; at the end, attempts made are written and unposted lanes given
    back at once, and every connection is closed.
    """

    def __init__(
        self,
        scope: Scope,
        options: DeliveryOptions | None = None,
        *,
        poster_factory: Callable[[], WebhookPoster] | None = None,
    ) -> None:
        from .worker import new_worker_id

        self._scope = scope
        self._options = options = options or DeliveryOptions()
        self._owner = options.owner or new_worker_id()
        self._poster_factory = poster_factory
        self._held: dict[tuple[str, str], LaneWork] = {}
        self._attempts: list[AttemptResult] = []
        self._done: list[LaneDone] = []
        self._wakeup = anyio.Event()
        self._flush_wakeup = anyio.Event()
        self._signers: dict[tuple[str, ...], Signer] = {}
        self._random = random.Random()
        self._delivered = 0
        self._failed = 0
        self._closing = False
        self._rung = False
        self._send: MemoryObjectSendStream[LaneWork] | None = None
        # The loop outlives a store that is away for a while: nothing is lost (the events
        # wait in the outbox, the attempts made in memory); it backs off, logs once.
        self._claim_outage = Outage("webhook delivery round", log)
        self._record_outage = Outage("recording webhook attempts", log)

    @property
    def owner(self) -> str:
        """The name this loop holds its leases under."""
        return self._owner

    def notify(self) -> None:
        """Events were recorded: look now rather than at the next poll."""
        self._rung = True
        self._wakeup.set()

    def statistics(self) -> WebhookStatistics:
        """What this loop has done so far."""
        return WebhookStatistics(self._delivered, self._failed, len(self._held))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled."""
        options = self._options
        # One small pool per lane task: a task posts one delivery at a time, and
        # httpcore scans every pooled connection on each request, so one pool of
        # N connections costs N times more per request than N pools of one.
        posters = [self._new_poster() for _ in range(options.lanes)]
        send, receive = anyio.create_memory_object_stream[LaneWork](options.lanes * 4)
        self._send = send
        try:
            async with anyio.create_task_group() as tg, send, receive:
                for poster in posters:
                    tg.start_soon(self._posting, poster, receive.clone())
                tg.start_soon(self._flusher)
                if options.retention_days > 0:
                    tg.start_soon(self._pruning)
                task_status.started()
                await self._claiming()
        finally:
            self._closing = True
            with anyio.CancelScope(shield=True):
                try:
                    await self._flush()
                    await self._release_held()
                finally:
                    for poster in posters:
                        await poster.aclose()

    def _new_poster(self) -> WebhookPoster:
        if self._poster_factory is not None:
            return self._poster_factory()
        from ..transports.webhook_http import WebhookPoster

        return WebhookPoster(timeout=self._options.timeout, max_connections=4)

    async def _claiming(self) -> None:
        options = self._options
        busy = True
        made: int
        work: list[LaneWork]
        while True:
            self._wakeup = anyio.Event()
            room = self._room()
            now = time.time()
            try:
                # A read first: most polls of a quiet fleet find nothing to do, and
                # need not take the writer.
                if not busy and not await self._scope.read(partial(lanes_store.has_work, now=now)):
                    made, work = 0, []
                else:
                    made, work = await self._scope.write(
                        partial(self._fan_out_and_claim, now=now, room=room)
                    )
            except Exception as exc:
                await self._claim_outage.pause(exc)
                continue
            self._claim_outage.succeeded()
            await self._hand_out(work)
            busy = bool(made or work)
            if made >= options.fan_out_batch or (room and len(work) == room):
                await anyio.lowlevel.checkpoint()
                continue
            with anyio.move_on_after(options.poll_interval):
                await self._wakeup.wait()
                if self._rung:
                    # Rung (events committed): let the rings of the next few ms come too,
                    # so a busy intake costs one round per batch, not one per commit.
                    self._rung = False
                    await anyio.sleep(_COALESCE)

    def _room(self) -> int:
        """How many more lanes this loop may hold."""
        return self._options.lanes * 4 - len(self._held)

    async def _hand_out(self, work: list[LaneWork]) -> None:
        """Hold claimed lanes and queue them for the posting tasks (never more than
        the stream takes: the room is its size)."""
        send = self._send
        if send is None or not work:
            return
        for lane in work:
            self._held[(lane.webhook_id, lane.grant_key)] = lane
        for lane in work:
            await send.send(lane)

    def _record_and_claim(
        self, tx: Tx, *, attempts: list[AttemptResult], done: list[LaneDone], room: int
    ) -> tuple[list[tuple[str, WebhookStatus]], list[LaneWork]]:
        now = time.time()
        changed = lanes_store.record_attempts(
            tx, self._owner, attempts, done, self._options.policy, now=now, random=self._random
        )
        if room <= 0:
            return changed, []
        work = lanes_store.claim(
            tx,
            self._owner,
            now=now,
            lease=self._options.lease,
            lanes=room,
            per_lane=self._options.per_lane,
        )
        return changed, work

    def _fan_out_and_claim(self, tx: Tx, *, now: float, room: int) -> tuple[int, list[LaneWork]]:
        options = self._options
        made = lanes_store.fan_out(tx, now=now, limit=options.fan_out_batch)
        if room <= 0:
            return made, []
        work = lanes_store.claim(
            tx,
            self._owner,
            now=now,
            lease=options.lease,
            lanes=room,
            per_lane=options.per_lane,
        )
        return made, work

    async def _posting(self, poster: WebhookPoster, lanes: ObjectReceiveStream[LaneWork]) -> None:
        async with lanes:
            async for lane in lanes:
                if self._closing:
                    continue  # given back by the shutdown
                try:
                    await self._post_lane(poster, lane)
                except Exception:  # a bug: the lane is given back, its delivery retried
                    log.exception("posting lane %s/%s failed", lane.webhook_id, lane.grant_key)
                    self._done.append(
                        LaneDone(lane.webhook_id, lane.grant_key, failed=True, healthy=False)
                    )
                    self._flush_wakeup.set()

    def _signer(self, secrets: tuple[str, ...]) -> Signer:
        signer = self._signers.get(secrets)
        if signer is None:
            if len(self._signers) > 256:
                self._signers.clear()
            signer = self._signers[secrets] = Signer(secrets)
        return signer

    async def _post_lane(self, poster: WebhookPoster, lane: LaneWork) -> None:
        options = self._options
        signer = self._signer(lane.secrets)
        deadline = time.monotonic() + options.lease / 2
        failed = False
        posted = 0
        for delivery in lane.deliveries:
            if self._closing or time.monotonic() > deadline:
                break
            event = delivery.event
            body = envelope_bytes(event)
            now = time.time()
            headers = signer.headers(str(event.id), int(now), body)
            outcome = await poster.post(lane.url, body, headers)
            posted += 1
            self._attempts.append(
                AttemptResult(
                    delivery_id=delivery.id,
                    webhook_id=lane.webhook_id,
                    event_id=event.id,
                    ok=outcome.ok,
                    status_code=outcome.status_code,
                    latency_ms=outcome.latency_ms,
                    response=outcome.response,
                    error=outcome.error,
                    at=now,
                )
            )
            if outcome.ok:
                self._delivered += 1
            else:
                self._failed += 1
                failed = True
                log.info(
                    "webhook %s: event %s to %s failed: %s",
                    lane.webhook_id,
                    event.id,
                    lane.url,
                    outcome.error or f"HTTP {outcome.status_code}",
                    extra={"webhook_id": lane.webhook_id, "event_id": event.id},
                )
                break
        drained = (
            not failed
            and posted == len(lane.deliveries)
            and len(lane.deliveries) < options.per_lane
        )
        self._done.append(LaneDone(lane.webhook_id, lane.grant_key, failed, drained, lane.healthy))
        self._flush_wakeup.set()

    async def _flusher(self) -> None:
        while True:
            await self._flush_wakeup.wait()
            self._flush_wakeup = anyio.Event()
            # Let more lanes finish into the same write: up to a few ms, less when
            # many are done already (each write costs about the same, whatever its size).
            with anyio.move_on_after(_FLUSH_WAIT):
                while len(self._done) < self._options.lanes // 2:
                    await self._flush_wakeup.wait()
                    self._flush_wakeup = anyio.Event()
            await self._flush()

    async def _flush(self) -> None:
        attempts, self._attempts = self._attempts, []
        done, self._done = self._done, []
        if not attempts and not done:
            return
        # The same transaction claims lanes for the room the given-back ones leave
        # (those among them with more to deliver, due at once, included).
        room = 0 if self._closing or self._send is None else self._room() + len(done)
        try:
            with anyio.CancelScope(shield=True):  # what was posted must be written
                changed, work = await self._scope.write(
                    partial(self._record_and_claim, attempts=attempts, done=done, room=room)
                )
        except Exception as exc:  # nothing was written: kept, and tried again
            self._attempts = attempts + self._attempts
            self._done = done + self._done
            if self._closing:
                self._record_outage.failed(exc)
            else:
                await self._record_outage.pause(exc)
            self._flush_wakeup.set()
            return
        self._record_outage.succeeded()
        for lane in done:
            self._held.pop((lane.webhook_id, lane.grant_key), None)
        await self._hand_out(work)
        for webhook_id, status in changed:
            level = logging.INFO if status is WebhookStatus.ACTIVE else logging.WARNING
            log.log(
                level,
                "webhook %s is %s",
                webhook_id,
                status.value,
                extra={"webhook_id": webhook_id, "status": status.value},
            )
        self._wakeup.set()

    async def _pruning(self) -> None:
        """Every ``prune_interval``, delete what is past ``retention_days``, a batch at a time."""
        options = self._options
        await anyio.sleep(min(60.0, options.prune_interval))
        outage = Outage("pruning old webhook deliveries", log)
        while True:
            before = utcnow() - timedelta(days=options.retention_days)
            try:
                deleted = await self.prune(before)
            except Exception as exc:  # tried again at the next interval
                outage.failed(exc)
            else:
                outage.succeeded()
                if deleted:
                    log.info("%d webhook deliveries older than %s deleted", deleted, before)
            await anyio.sleep(options.prune_interval)

    async def prune(self, before: datetime) -> int:
        """Delete the deliveries delivered before ``before`` with their attempts; how many."""
        deleted = 0
        while True:
            count = await self._scope.write(partial(store.prune, before=before))
            deleted += count
            if count < 1000:
                return deleted
            await anyio.lowlevel.checkpoint()

    async def _release_held(self) -> None:
        """Give back the lanes claimed and not posted (a shutdown)."""
        held = builtins.list(self._held)
        if not held:
            return
        try:
            await self._scope.write(lambda tx: lanes_store.release(tx, self._owner, held))
        except Exception:
            log.exception("giving back %d webhook lanes failed; their leases expire", len(held))
        self._held.clear()


async def serve_webhooks(
    database: Database,
    settings: Settings,
    *,
    rescan: float = 5.0,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Deliver the webhooks of every application of ``database`` until cancelled: one
    :class:`WebhookSender` per application with an enabled subscription, started as
    they appear (looked for every ``rescan`` seconds). For a process that serves many
    applications (``mailfleet api``); ``options`` override :class:`DeliveryOptions`."""
    running: set[str] = set()
    outage = Outage("looking for applications with webhooks", log)
    async with anyio.create_task_group() as tg:
        task_status.started()
        while True:
            try:
                found = await database.read(store.applications_with_webhooks)
            except Exception as exc:  # tried again at the next rescan
                outage.failed(exc)
                found = set()
            else:
                outage.succeeded()
            for application_id in sorted(found - running):
                sender = WebhookSender(
                    Scope(database, application_id),
                    DeliveryOptions.from_settings(settings, **options),
                )
                await tg.start(sender.run)
                running.add(application_id)
            await anyio.sleep(rescan)


async def webhook_lag(scope: Scope) -> float | None:
    """How long the oldest event not yet delivered to ``scope``'s application's webhooks
    has waited, in seconds; None when nothing waits (the ``/metrics`` gauge)."""
    found = await scope.read(lanes_store.backlog)
    return found.lag(utcnow())


async def run_webhook_delivery(
    scope: Scope,
    settings: Settings,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Deliver the webhooks of ``scope``'s application until cancelled (in a process
    that does not serve the fleet: ``mailfleet api``); ``options`` override
    :class:`DeliveryOptions`. Same as ``await tg.start(fleet.webhooks.serve)``."""
    delivery = WebhookSender(scope, DeliveryOptions.from_settings(settings, **options))
    await delivery.run(task_status=task_status)
