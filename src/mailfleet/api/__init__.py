"""The HTTP API: FastAPI on uvicorn, under ``/v1``.

It sits on top of the runtime, as the CLI does: every route authenticates
its caller (a bearer API key scoped to one application), takes that
application's :class:`~mailfleet.Fleet` from :class:`Tenants` and calls it.
Nothing below imports this package.
"""

from __future__ import annotations

from .app import create_app
from .server import serve_api
from .tenants import Caller, Tenants

__all__ = ["Caller", "Tenants", "create_app", "serve_api"]
