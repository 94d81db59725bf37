"""What the runtime observes as it runs, as plain instruments an exporter reads.

The runtime knows no metrics library: a :class:`Fleet` owns one
:class:`RuntimeMetrics` (``fleet.metrics``) for as long as it exists, its
worker feeds it, and whoever exports it (the API's ``/metrics``, in
Prometheus's text format) takes a :meth:`Histogram.snapshot`. Everything
here runs on the fleet's event loop: no locks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LATENCY_BUCKETS", "Histogram", "HistogramSnapshot", "RuntimeMetrics"]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
"""Upper bounds (seconds) of the latency buckets: a millisecond to five minutes."""


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram at one moment: for each upper bound, how many observations were at or
    below it (cumulative, as Prometheus counts), then their sum and count (the ``+Inf``
    bucket)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int


class Histogram:
    """Observations counted in fixed buckets, O(log buckets) each."""

    __slots__ = ("_counts", "_sum", "bounds")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        ordered = tuple(float(b) for b in bounds)
        if list(ordered) != sorted(set(ordered)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = ordered
        self._counts = [0] * (len(ordered) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self._counts[bisect_left(self.bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        """The counts so far."""
        cumulative: list[int] = []
        total = 0
        for count in self._counts[:-1]:
            total += count
            cumulative.append(total)
        return HistogramSnapshot(
            self.bounds, tuple(cumulative), self._sum, total + self._counts[-1]
        )


class RuntimeMetrics:
    """A fleet's instruments: fed by its worker while it serves, read by exporters."""

    __slots__ = ("dispatch_latency", "handler_duration")

    def __init__(self) -> None:
        self.dispatch_latency = Histogram()
        """Seconds from a message being stored (committed by the intake) to its handler
        being called, at its first attempt (retries are not counted)."""
        self.handler_duration = Histogram()
        """Seconds each handler call took (``on_message``, ``on_bounce``...), whether it
        returned, raised or timed out."""
