"""``GET /metrics``: the fleet in Prometheus's text format, gathered per scrape.

:class:`Metrics` owns a ``CollectorRegistry`` of its own (never the
process-global one, so two apps in a process never clash). Each scrape
reads, for every application of the store, in one read transaction:

- grants by status, the inbound queue, dead letters and the outbound queue
  (indexed counts);
- messages in and out, delivery outcomes, bounces and complaints by class,
  counted from the event log (``message.received``, ``message.queued``,
  ``message.sent``..., ``message.bounced``, ``message.complained``). The log
  is counted once per process, then only the events settled since the last
  scrape (:class:`~mailfleet.runtime.eventfeed.EventFeed`): the counters are
  totals since the store began, the same from every API instance.

and, from the fleets open in this process, what their runtime observed
(:class:`~mailfleet.runtime.metrics.RuntimeMetrics`): dispatch latency and
handler durations. Every sample is labelled with the application's name.

The webhook delivery lag comes from a callable given to :func:`create_app`
(``webhook_lag``); without one the family has no samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

import anyio
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy.engine import Connection

from ..model.records import Application, GrantStatus
from ..runtime.metrics import HistogramSnapshot
from ..store import applications, events, grants, outbound, queue
from ..store.scope import Scope, Tx
from .tenants import Tenants

__all__ = ["COUNTED_EVENTS", "Metrics", "WebhookLag"]

WebhookLag = Callable[[Scope], Awaitable[float | None]]
"""The webhook delivery lag of one application, in seconds (how long its oldest event
not yet delivered has waited), or None when it has none to deliver or no webhooks."""

COUNTED_EVENTS = (
    "message.received",
    "message.queued",
    "message.sent",
    "message.captured",
    "message.deferred",
    "message.bounced",
    "message.complained",
)
"""The event types the counters count."""

_DELIVERIES = {
    "message.sent": "sent",
    "message.captured": "captured",
    "message.deferred": "deferred",
}
_BOUNCE_CLASSES = ("hard", "soft")
_LIVE_STATUSES = tuple(s for s in GrantStatus if s is not GrantStatus.DELETED)  # deleted: gone


@dataclass(slots=True)
class _Counted:
    """An application's event counts up to ``position``: (type, class) -> count."""

    position: int
    counts: Counter[tuple[str, str | None]]


@dataclass(frozen=True, slots=True)
class _Sample:
    """What one scrape read of one application."""

    application: Application
    grants: dict[GrantStatus, int]
    inbound: int
    dead_letters: int
    outbound: int
    new_counts: list[tuple[str, str | None, int]]
    position: int


class Metrics:
    """The metrics of an API app: a registry of its own, filled at each scrape."""

    def __init__(self, tenants: Tenants, *, webhook_lag: WebhookLag | None = None) -> None:
        self._tenants = tenants
        self.webhook_lag = webhook_lag
        """Where ``mailfleet_webhook_delivery_lag_seconds`` comes from (None: no samples)."""
        self.registry = CollectorRegistry(auto_describe=False)
        self._counted: dict[str, _Counted] = {}
        self._families: list[Metric] = []
        self._scraping = anyio.Lock()
        self.registry.register(_Families(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """One scrape: the exposition in the format ``accept`` asks for (Prometheus text
        by default, or OpenMetrics), and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        async with self._scraping:
            self._families = await self._gather()
            try:
                return encoder(self.registry), content_type
            finally:
                self._families = []

    async def _gather(self) -> list[Metric]:
        tenants = self._tenants
        database = tenants.database
        upto = await tenants.feed.settled()
        counted = self._counted

        def read(conn: Connection) -> list[_Sample]:
            found = []
            for application in applications.list_applications(conn):
                tx = Tx(conn, Scope(database, application.id))
                known = counted.get(application.id)
                after = 0 if known is None else known.position
                found.append(
                    _Sample(
                        application=application,
                        grants=grants.count_by_status(tx),
                        inbound=queue.ready_count(tx),
                        dead_letters=queue.dead_letter_count(tx),
                        outbound=outbound.count_outbound(tx, status="pending"),
                        new_counts=events.event_counts(tx, COUNTED_EVENTS, after=after, upto=upto)
                        if upto > after
                        else [],
                        position=max(upto, after),
                    )
                )
            return found

        samples = await database.read(read)
        for sample in samples:
            entry = counted.setdefault(sample.application.id, _Counted(0, Counter()))
            for type, kind, count in sample.new_counts:
                entry.counts[(type, kind)] += count
            entry.position = sample.position
        lags: dict[str, float | None] = {}
        if self.webhook_lag is not None:
            for sample in samples:
                scope = Scope(database, sample.application.id)
                lags[sample.application.id] = await self.webhook_lag(scope)
        return list(self._families_of(samples, lags))

    def _families_of(
        self, samples: list[_Sample], lags: dict[str, float | None]
    ) -> Iterator[Metric]:
        grant_family = GaugeMetricFamily(
            "mailfleet_grants", "Grants by status.", labels=["application", "status"]
        )
        messages = CounterMetricFamily(
            "mailfleet_messages",
            "Messages stored for grants (in) and queued to send (out).",
            labels=["application", "direction"],
        )
        deliveries = CounterMetricFamily(
            "mailfleet_deliveries",
            "Outbound delivery outcomes recorded: sent, captured (dev mode), deferred.",
            labels=["application", "outcome"],
        )
        bounces = CounterMetricFamily(
            "mailfleet_bounces", "Bounces by class (hard, soft).", labels=["application", "class"]
        )
        complaints = CounterMetricFamily(
            "mailfleet_complaints",
            "Complaints by class (the report's feedback type: abuse, fraud...).",
            labels=["application", "class"],
        )
        depth = GaugeMetricFamily(
            "mailfleet_queue_depth",
            "Work waiting: inbound entries for handlers, dead letters, outbound messages.",
            labels=["application", "queue"],
        )
        lag = GaugeMetricFamily(
            "mailfleet_webhook_delivery_lag_seconds",
            "How long the oldest event not yet delivered to webhooks has waited.",
            labels=["application"],
        )
        for sample in samples:
            name = sample.application.name
            for status in _LIVE_STATUSES:
                grant_family.add_metric([name, status.value], sample.grants.get(status, 0))
            counts = self._counted[sample.application.id].counts
            by_type: Counter[str] = Counter()
            bounce_classes: Counter[str] = Counter(dict.fromkeys(_BOUNCE_CLASSES, 0))
            complaint_classes: Counter[str] = Counter({"abuse": 0})
            for (type, kind), count in counts.items():
                by_type[type] += count
                if type == "message.bounced":
                    bounce_classes[kind or "unknown"] += count
                elif type == "message.complained":
                    complaint_classes[kind or "unknown"] += count
            messages.add_metric([name, "in"], by_type["message.received"])
            messages.add_metric([name, "out"], by_type["message.queued"])
            for type, outcome in _DELIVERIES.items():
                deliveries.add_metric([name, outcome], by_type[type])
            for kind, count in sorted(bounce_classes.items()):
                bounces.add_metric([name, kind], count)
            for kind, count in sorted(complaint_classes.items()):
                complaints.add_metric([name, kind], count)
            depth.add_metric([name, "inbound"], sample.inbound)
            depth.add_metric([name, "dead_letters"], sample.dead_letters)
            depth.add_metric([name, "outbound"], sample.outbound)
            value = lags.get(sample.application.id)
            if value is not None:
                lag.add_metric([name], value)
        yield from (grant_family, messages, deliveries, bounces, complaints, depth)
        yield from self._runtime_families()
        yield lag

    def _runtime_families(self) -> Iterator[Metric]:
        dispatch = HistogramMetricFamily(
            "mailfleet_dispatch_latency_seconds",
            "Seconds from a message being stored to its handler being called (first attempts;"
            " fleets serving in this process).",
            labels=["application"],
        )
        handlers = HistogramMetricFamily(
            "mailfleet_handler_duration_seconds",
            "Seconds each handler call took (fleets serving in this process).",
            labels=["application"],
        )
        for fleet in sorted(self._tenants.fleets.values(), key=lambda f: f.settings.application):
            name = fleet.settings.application
            _add_histogram(dispatch, name, fleet.metrics.dispatch_latency.snapshot())
            _add_histogram(handlers, name, fleet.metrics.handler_duration.snapshot())
        yield dispatch
        yield handlers


def _add_histogram(family: HistogramMetricFamily, name: str, snapshot: HistogramSnapshot) -> None:
    buckets = [
        (_bound(bound), count)
        for bound, count in zip(snapshot.bounds, snapshot.cumulative, strict=True)
    ]
    buckets.append(("+Inf", snapshot.count))
    family.add_metric([name], buckets, snapshot.sum)


def _bound(value: float) -> str:
    return repr(value)


class _Families:
    """The registry's collector: the families the scrape in progress gathered."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics._families)
