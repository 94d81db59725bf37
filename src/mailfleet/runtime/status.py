"""What a fleet reports of itself: readiness when it serves, and a snapshot of its state."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FleetStatistics", "Serving"]


@dataclass(frozen=True, slots=True)
class Serving:
    """What :meth:`Fleet.serve <mailfleet.Fleet.serve>` reports once it is ready.

    ``serving = await tg.start(fleet.serve)`` returns it.
    """

    smtp_port: int | None
    """The port the MX listens on, or None without an SMTP server."""
    worker_id: str | None
    """The id the worker holds leases under, or None for a front end (``run_worker=false``)."""


@dataclass(frozen=True, slots=True)
class FleetStatistics:
    """A snapshot of a fleet: this process's worker, and the application's queues in the store."""

    serving: bool
    """Whether this fleet is in :meth:`~mailfleet.Fleet.serve`."""
    worker_id: str | None
    held_grants: int
    """Grants whose lease this process's worker holds."""
    active_agents: int
    """Agent instances activated in this process."""
    running_handlers: int
    queued_in_memory: int
    """Messages loaded by this worker and not yet handled."""
    waiting: int
    """Messages of the application waiting in the store (dead letters excluded)."""
    dead_letters: int
    outbound_pending: int
    """Outbound messages not yet sent, bounced or captured."""
    live_workers: int
    """Worker processes of the application alive now, this one included."""
    unserved_grants: int
    """Grants whose agent class no live worker serves: their mail waits for one."""
    unserved_waiting: int
    """Messages waiting in the queues of unserved grants."""
