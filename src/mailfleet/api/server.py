"""Serving the API with uvicorn inside the caller's event loop.

:func:`serve_api` binds the socket itself (so a taken port is one clear
:class:`~mailfleet.ListenFailed`, and port 0 reports the port it got), runs
uvicorn's server in the running loop without its signal handlers (the CLI
owns the signals), and on cancellation lets open requests finish for a
moment before it returns.
"""

from __future__ import annotations

import logging
import socket

import anyio
import uvicorn
from anyio.abc import TaskStatus
from fastapi import FastAPI

from ..model.errors import ListenFailed

__all__ = ["serve_api"]

log = logging.getLogger("mailfleet.api")


class _Server(uvicorn.Server):
    """uvicorn's server, leaving the process's signals alone."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None

    def capture_signals(self):  # type: ignore[no-untyped-def]  # a generator context in uvicorn
        import contextlib

        return contextlib.nullcontext()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; :class:`ListenFailed` if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each accepted connection (it skips
    # sockets of protocol 0): uvicorn writes a response's head and body apart, and Nagle's
    # algorithm would hold the body for the client's delayed ACK, 40 ms a request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ListenFailed.from_os_error("HTTP", host, port, exc) from exc
    sock.setblocking(False)
    return sock


async def serve_api(
    app: FastAPI,
    host: str,
    port: int,
    *,
    grace: float = 2.0,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; report the bound port once it listens.

    At cancellation, requests in flight get ``grace`` seconds (a Server-Sent
    Events stream is ended then).
    """
    sock = bind(host, port)
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(int(grace), 1),
        server_header=False,
    )
    server = _Server(config)
    finished = anyio.Event()

    async def run() -> None:
        # Shielded: a cancel must reach uvicorn as should_exit, never cut it mid-request.
        with anyio.CancelScope(shield=True):
            try:
                await server.serve(sockets=[sock])
            finally:
                sock.close()
                finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            while not server.started:
                if finished.is_set():
                    raise ListenFailed("HTTP", f"{host}:{bound}", None, "the server did not start")
                await anyio.sleep(0.01)
            log.info("HTTP API listening on http://%s:%d", host, bound)
            task_status.started(bound)
            await anyio.sleep_forever()
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True):
                await finished.wait()
