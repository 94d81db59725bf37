"""The sender: takes due messages from the outbound queue and delivers them.

With a relay configured, messages go out over the relay's pooled SMTP
connections. Without one (dev mode), mail to the fleet's own grants is
delivered locally through ``Fleet.deliver`` (agents can mail each other) and
everything else is captured for ``mailfleet outbox`` to show.

The relay's answers become the message's fate, per recipient: ``250`` a
``message.sent``; ``5xx`` a ``message.bounced``, classed by what the relay
said (hard when the address or domain does not exist, soft otherwise) and
recorded as every bounce is (suppression, ``on_bounce``); ``4xx`` a
``message.deferred`` and another try after the next delay of the retry
schedule, and a soft ``message.bounced`` once the schedule is spent.

Guarantee: at-least-once. A message is claimed under a lease (``lease``
seconds) and its fate committed after the relay answered; a worker that dies
in between leaves the lease to expire, and the message is sent again. A send
never outlives its lease: one not started while half the lease is left is given
back unsent, and one still running when a quarter is left is abandoned
(a ``451`` deferral), so that no other sender can take a message while it is
in flight. "Faults: a misbehaving relay" in docs/ARCHITECTURE.md gives the bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ..model.deliverability import Bounce, BounceClass
from ..model.errors import GrantNotFound, QueueFull, StoreUnavailable
from ..store import breaker, outbound
from ..store.feedback import Failure
from ..store.outage import Outage
from ..store.outbound import OutboundItem, OutboundResult
from ..store.scope import Scope, Tx
from ..store.tables import utcnow
from ..transports.smtp_out import SmtpOutcome, SmtpRelay

__all__ = ["Sender"]

log = logging.getLogger("mailfleet.sender")

_CAPTURED = "captured in dev mode (no relay)"

_RECORD_DELAY = 0.02
"""How long the first result of a send waits for others to be recorded with (a record
transaction costs about the same for one result as for dozens); then the claiming loop
records them in its next claim's transaction, or, busy, leaves them to the flusher."""

_Claimed = tuple[OutboundItem, float]
"""A claimed message and when its lease ends (epoch seconds)."""

LocalLookup = Callable[[str], Awaitable[str | None]]
LocalDeliver = Callable[..., Awaitable[Any]]


class Sender:
    """Delivers the outbound queue; one per worker process."""

    def __init__(
        self,
        scope: Scope,
        *,
        relay: SmtpRelay | None,
        local_grant: LocalLookup,
        deliver: LocalDeliver,
        retry_schedule: Sequence[float],
        worker_id: str,
        committed: Callable[[set[str]], None],
        soft_bounce_limit: int = 3,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        lease: float = 300.0,
    ) -> None:
        self._scope = scope
        self._relay = relay
        self._local_grant = local_grant
        self._deliver = deliver
        self._schedule = tuple(retry_schedule)
        self._worker = worker_id
        self._committed = committed
        self._soft_bounce_limit = soft_bounce_limit
        self._concurrency = concurrency
        self._poll = poll_interval
        self._lease = lease
        self._wakeup = anyio.Event()
        self._flush_wakeup = anyio.Event()
        self._results: list[OutboundResult] = []
        self._given_back: list[int] = []
        self._in_flight = 0
        self._closing = False
        # While the store is away, nothing is claimed and the results of sends made
        # stay in memory; both loops back off and log the outage once (store/outage.py).
        self._claiming = Outage("claiming outbound mail", log)
        self._recording = Outage("recording send results", log)

    def notify(self) -> None:
        """New mail was queued: look now rather than at the next poll."""
        self._wakeup.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send until cancelled."""
        send, receive = anyio.create_memory_object_stream[_Claimed](self._concurrency)
        async with anyio.create_task_group() as tg, send, receive:
            for _ in range(self._concurrency):
                tg.start_soon(self._sending, receive.clone())
            tg.start_soon(self._flusher)
            task_status.started()
            while not self._closing:
                items: list[OutboundItem] = []
                results, given_back = self._take_results()
                try:
                    # A read first: most polls find nothing, and need not take the writer.
                    due = await self._scope.read(outbound.next_due)
                    claiming = due is not None and due <= time.time()
                    claimed = 0
                    if claiming or results or given_back:
                        lease_until = time.time() + self._lease  # no later than the store's
                        # The results waiting to be recorded go in the claim's transaction.
                        with anyio.CancelScope(shield=True):  # taken results are not dropped
                            claimed, items, given_work = await self._scope.write(
                                partial(
                                    self._claim,
                                    results=results,
                                    given_back=given_back,
                                    claiming=claiming,
                                )
                            )
                        if results or given_back:
                            self._recording.succeeded()
                        self._recorded(results, given_back, given_work)
                except Exception as exc:  # nothing was claimed, nor recorded
                    self._put_back(results, given_back)
                    await self._claiming.pause(exc)
                    continue
                except BaseException:  # cancelled before the write: the drain records them
                    self._put_back(results, given_back)
                    raise
                self._claiming.succeeded()
                for item in items:
                    await send.send((item, lease_until))
                if claimed == self._concurrency * 8:
                    await anyio.lowlevel.checkpoint()
                    continue
                wait = self._poll if due is None else min(self._poll, max(due - time.time(), 0))
                with anyio.move_on_after(wait):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()

    def _claim(
        self, tx: Tx, *, results: list[OutboundResult], given_back: list[int], claiming: bool
    ) -> tuple[int, list[OutboundItem], set[str]]:
        """Record the results of sends made (and the messages given back), then (if
        ``claiming``) lease due messages, and keep those their grant's breaker holds back
        (or its pause, or a restriction): how many were due, those that may leave now,
        and the grants the results gave work."""
        given_work = self._record(tx, results=results, given_back=given_back)
        if not claiming:
            return 0, [], given_work
        now = time.time()
        claimed = outbound.claim_due(
            tx, self._worker, now=now, lease=self._lease, limit=self._concurrency * 8
        )
        return len(claimed), breaker.hold_back(tx, claimed, now=now), given_work

    async def drain(self, grace: float) -> None:
        """Stop claiming, let sends in flight finish (up to ``grace``), record them."""
        self._closing = True
        with anyio.move_on_after(grace):
            while self._in_flight:  # noqa: ASYNC110 - a counter, polled briefly at shutdown
                await anyio.sleep(0.01)
        await self._flush()
        if self._relay is not None:
            await self._relay.aclose()

    async def _sending(self, items: Any) -> None:
        async with items:
            async for item, lease_until in items:
                if self._closing:
                    continue  # leased but not sent: another worker takes it after the lease
                if time.time() > lease_until - self._lease / 2:
                    # Waited too long for a free sender (a slow relay): the rest of its lease
                    # may not cover a send. Given back unsent, it is claimed again afresh.
                    self._given_back.append(item.id)
                    self._flush_wakeup.set()
                    continue
                self._in_flight += 1
                try:
                    result = await self._send_within(item, lease_until - self._lease / 4)
                except StoreUnavailable as exc:  # delivering locally: the store is away
                    log.warning("delivering outbound message %s locally failed: %s", item.id, exc)
                    result = self._temporary(item, item.recipients, 451, "store unavailable")
                except Exception:
                    log.exception("sending outbound message %s failed", item.id)
                    result = self._temporary(item, item.recipients, 451, "internal error")
                finally:
                    self._in_flight -= 1
                self._results.append(result)
                self._flush_wakeup.set()

    async def _send_within(self, item: OutboundItem, deadline: float) -> OutboundResult:
        """Send, or abandon the send at ``deadline`` (a deferral): the lease, which ends a
        quarter of it later, must still be ours when the result is recorded."""
        with anyio.move_on_after(deadline - time.time()):
            return await self._send(item)
        text = f"4.4.7 send abandoned: not done within its lease ({self._lease:g} s)"
        return self._temporary(item, item.recipients, 451, text)

    async def _flusher(self) -> None:
        while True:
            await self._flush_wakeup.wait()
            self._flush_wakeup = anyio.Event()
            await anyio.sleep(_RECORD_DELAY)
            self._wakeup.set()  # the claiming loop records them with its next claim...
            await anyio.sleep(_RECORD_DELAY)
            await self._flush()  # ...unless busy handing out the last one: then here

    def _take_results(self) -> tuple[list[OutboundResult], list[int]]:
        """The results and given-back messages waiting to be recorded, taken."""
        results, self._results = self._results, []
        given_back, self._given_back = self._given_back, []
        return results, given_back

    def _put_back(self, results: list[OutboundResult], given_back: list[int]) -> None:
        """Taken but not recorded (the store is away): kept, and recorded later."""
        self._results = results + self._results
        self._given_back = given_back + self._given_back
        if results or given_back:
            self._flush_wakeup.set()

    async def _flush(self) -> None:
        results, given_back = self._take_results()
        if results or given_back:
            try:
                with anyio.CancelScope(shield=True):  # taken results must not be dropped
                    given_work = await self._scope.write(
                        partial(self._record, results=results, given_back=given_back)
                    )
            except Exception as exc:  # nothing was recorded: kept, and tried again
                self._put_back(results, given_back)
                if not self._closing:
                    await self._recording.pause(exc)
                else:
                    self._recording.failed(exc)
                return
            self._recording.succeeded()
            self._recorded(results, given_back, given_work)

    def _recorded(
        self, results: list[OutboundResult], given_back: list[int], given_work: set[str]
    ) -> None:
        """After the results' commit: log them, ring the grants given work, look again."""
        if given_back:
            log.info(
                "gave back %d claimed messages unsent: too little of their lease was "
                "left (a slow relay); they are claimed again",
                len(given_back),
                extra={"worker_id": self._worker, "messages": len(given_back)},
            )
            self.notify()
        if given_work:
            self._committed(given_work)
        if log.isEnabledFor(logging.INFO):
            _log_outcomes(results)
        if any(r.status == "pending" for r in results):
            self.notify()

    def _record(self, tx: Tx, *, results: list[OutboundResult], given_back: list[int]) -> set[str]:
        outbound.give_back(tx, given_back, self._worker)
        return outbound.record_results(
            tx, results=results, soft_bounce_limit=self._soft_bounce_limit
        )

    # -- one message ---------------------------------------------------------------

    async def _send(self, item: OutboundItem) -> OutboundResult:
        if self._relay is None:
            return await self._send_locally(item)
        outcome = await self._relay.send(item.mail_from, item.recipients, item.raw)
        return self._judge(item, outcome)

    def _judge(self, item: OutboundItem, outcome: SmtpOutcome) -> OutboundResult:
        # The whole message refused (at MAIL or DATA, or the connection): one answer for
        # all. Recipients refused one by one are judged each by its own answer.
        if outcome.code >= 500 and not outcome.refused:
            return self._bounced(item, item.recipients, outcome.code, outcome.text)
        if outcome.temporary and not outcome.refused:
            return self._temporary(item, item.recipients, outcome.code, outcome.text)
        events: list[tuple[str, dict[str, Any]]] = []
        if outcome.accepted:
            events.append(self._event(item, "message.sent", outcome.accepted, 250, outcome.text))
        retry = [r for r, (code, _) in outcome.refused.items() if 400 <= code < 500]
        failures = [
            _failure(item, rcpt, code, text)
            for rcpt, (code, text) in outcome.refused.items()
            if code >= 500
        ]
        if retry:
            code, text = outcome.refused[retry[0]]
            deferred = self._temporary(item, tuple(retry), code, text)
            return _with_events(deferred, events + deferred.events, failures + deferred.failures)
        if not outcome.accepted:
            return OutboundResult(
                item, "bounced", outcome.code, outcome.text, events=events, failures=failures
            )
        return OutboundResult(item, "sent", 250, outcome.text, events=events, failures=failures)

    async def _send_locally(self, item: OutboundItem) -> OutboundResult:
        events: list[tuple[str, dict[str, Any]]] = []
        failures: list[Failure] = []
        captured: list[str] = []
        retry: list[str] = []
        for rcpt in item.recipients:
            grant_id = await self._local_grant(rcpt)
            if grant_id is None:
                captured.append(rcpt)
                continue
            try:
                await self._deliver(grant_id, item.raw, source_key=f"local:{item.verp_token}")
            except QueueFull as exc:
                retry.append(rcpt)
                events.append(self._event(item, "message.deferred", (rcpt,), 451, str(exc)))
            except GrantNotFound as exc:
                failures.append(_failure(item, rcpt, 550, f"5.1.1 {exc}"))
            else:
                events.append(self._event(item, "message.sent", (rcpt,), 250, "delivered locally"))
        if captured:
            events.append(self._event(item, "message.captured", tuple(captured), 250, _CAPTURED))
        if retry:
            deferred = self._temporary(item, tuple(retry), 451, "local queue full")
            return _with_events(deferred, events, failures + deferred.failures)
        if captured:
            return OutboundResult(
                item, "captured", 250, _CAPTURED, events=events, failures=failures
            )
        if not events:
            return OutboundResult(item, "bounced", 550, "no such local grant", failures=failures)
        return OutboundResult(
            item, "sent", 250, "delivered locally", events=events, failures=failures
        )

    def _temporary(
        self, item: OutboundItem, recipients: Sequence[str], code: int, text: str
    ) -> OutboundResult:
        attempt = item.attempts + 1
        if attempt > len(self._schedule):
            return self._bounced(item, recipients, code, text)
        retry_at = time.time() + self._schedule[attempt - 1]
        event = self._event(item, "message.deferred", recipients, code, text)
        event[1]["attempt"] = attempt
        event[1]["retry_at"] = retry_at
        return OutboundResult(
            item,
            "pending",
            code,
            text,
            not_before=retry_at,
            recipients=tuple(recipients),
            events=[event],
        )

    def _bounced(
        self, item: OutboundItem, recipients: Sequence[str], code: int, text: str
    ) -> OutboundResult:
        failures = [_failure(item, rcpt, code, text) for rcpt in recipients]
        return OutboundResult(item, "bounced", code, text, failures=failures)

    def _event(
        self,
        item: OutboundItem,
        kind: str,
        recipients: Sequence[str],
        code: int,
        text: str,
        **extra: Any,
    ) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {
            "grant_id": item.grant_id,
            "message_id": item.message_id,
            "header_message_id": item.header_message_id,
            "recipients": list(recipients),
            "code": code,
            "response": text,
            **extra,
        }
        return kind, payload


_OUTCOMES = {
    "message.sent": ("sent", logging.INFO),
    "message.captured": ("captured", logging.INFO),
    "message.deferred": ("deferred", logging.INFO),
    "message.bounced": ("bounced", logging.WARNING),
}


def _log_outcomes(results: Sequence[OutboundResult]) -> None:
    """One line per send outcome: the message, its grant, the recipients and the reply."""
    for result in results:
        for kind, payload in result.events:
            outcome, level = _OUTCOMES.get(kind, (kind, logging.INFO))
            if payload.get("bounce"):
                outcome = f"{outcome} ({payload['bounce']})"
            log.log(
                level,
                "message %s of grant %s %s to %s: %s %s",
                payload["message_id"],
                payload["grant_id"],
                outcome,
                ", ".join(payload["recipients"]),
                payload["code"],
                payload["response"],
                extra={
                    "grant_id": payload["grant_id"],
                    "message_id": payload["message_id"],
                    "outcome": kind,
                    "recipients": payload["recipients"],
                    "code": payload["code"],
                },
            )


def _with_events(
    result: OutboundResult, events: list[tuple[str, dict[str, Any]]], failures: list[Failure]
) -> OutboundResult:
    return replace(result, events=events, failures=failures)


def _failure(item: OutboundItem, recipient: str, code: int, text: str) -> Failure:
    """A recipient the relay refused (5xx), or whose retries ran out (4xx), classed
    by what the relay said, exactly as a bounce report would be."""
    from ..mail.reasons import classify_failure, find_status

    status = find_status(text)
    reason, bounce_class = classify_failure(status, code, text)
    if code < 500:
        bounce_class = BounceClass.SOFT  # a temporary failure that ran out of time
    bounce = Bounce(
        recipient=recipient,
        bounce_class=bounce_class,
        reason=reason,
        status=status,
        reply_code=code,
        diagnostic=text,
        message_id=item.header_message_id,
        outbound_id=item.id,
        source="relay",
        received_at=utcnow(),
    )
    return Failure(item.as_send(), bounce)
