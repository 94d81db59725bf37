"""SQLite returns naive datetimes; every timestamp mailfleet hands out is UTC-aware."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["aware"]


def aware(value: datetime) -> datetime:
    """``value`` with UTC attached when the backend dropped the zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
