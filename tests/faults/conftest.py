"""Fixtures of the fault tests (tests/faults/).

``private_pg``: a started private PostgreSQL server (tests/faults/privatepg.py) that the
test may stop, restart or crash.
"""

from __future__ import annotations

from privatepg import private_pg

__all__ = ["private_pg"]
