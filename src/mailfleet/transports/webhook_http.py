"""The webhook poster: POSTs over pooled keep-alive HTTP connections (httpcore).

httpcore is httpx's own connection layer, used directly: the deliveries are
fixed POSTs of ready bytes, and httpx's request and response models would
cost more per delivery than the rest of the path. Every answer, or the lack
of one, comes back as an :class:`HttpOutcome` value; nothing is raised for
what the endpoint does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import anyio
import httpcore

__all__ = ["EXCERPT_BYTES", "HttpOutcome", "WebhookPoster"]

EXCERPT_BYTES = 1024
"""How much of an answer's body is kept."""
_READ_LIMIT = 64 * 1024
"""How much of a body is read so the connection can be reused; past it, it is closed."""


@dataclass(frozen=True, slots=True)
class HttpOutcome:
    """What one POST came to: the status (None without an answer), how long it took,
    the first KiB of the body, and the error when no answer came."""

    status_code: int | None
    latency_ms: float
    response: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer: the delivery succeeded."""
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookPoster:
    """POSTs to any number of endpoints over one pool of keep-alive connections.

    ``timeout`` bounds each POST as a whole (connecting, sending, the answer);
    ``max_connections`` the connections open at once. Use it as an async
    context manager, or call :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_connections: int = 32,
        user_agent: str = "mailfleet-webhooks",
    ) -> None:
        self._timeout = timeout
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        )
        self._agent = user_agent.encode()
        self._extensions = {
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpOutcome:
        """POST ``body`` (JSON) with ``headers`` to ``url``; the outcome, never an error."""
        fields = [
            (b"content-type", b"application/json"),
            (b"user-agent", self._agent),
            *((name.encode(), value.encode()) for name, value in headers.items()),
        ]
        started = time.perf_counter()
        try:
            with anyio.fail_after(self._timeout):
                async with self._pool.stream(
                    "POST", url, headers=fields, content=body, extensions=self._extensions
                ) as response:
                    kept = bytearray()
                    async for chunk in response.aiter_stream():
                        kept += chunk
                        if len(kept) > _READ_LIMIT:
                            break
                    status = response.status
        except TimeoutError:
            return self._failed(started, f"no answer within {self._timeout:g}s")
        except httpcore.TimeoutException:
            return self._failed(started, f"no answer within {self._timeout:g}s")
        except httpcore.ConnectError as exc:
            return self._failed(started, f"cannot connect: {exc or 'refused'}")
        except httpcore.UnsupportedProtocol as exc:
            return self._failed(started, f"unsupported URL: {exc}")
        except (httpcore.ProtocolError, httpcore.NetworkError) as exc:
            name = type(exc).__name__
            return self._failed(started, f"{name}: {exc}" if str(exc) else name)
        except OSError as exc:  # e.g. a TLS failure outside httpcore's own classes
            return self._failed(started, f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        excerpt = bytes(kept[:EXCERPT_BYTES]).decode("utf-8", "replace") if kept else None
        if excerpt is not None and len(excerpt.encode()) > EXCERPT_BYTES:
            excerpt = excerpt.encode()[:EXCERPT_BYTES].decode("utf-8", "ignore")
        return HttpOutcome(status, latency, excerpt)

    @staticmethod
    def _failed(started: float, error: str) -> HttpOutcome:
        return HttpOutcome(None, (time.perf_counter() - started) * 1000, None, error)
