"""Failing to start is loud; SIGTERM stops a fleet as Ctrl-C does, whatever it is doing.

A port that cannot be listened on ends ``serve_smtp`` at once with
:class:`ListenFailed`; ``mailfleet run`` and ``mailfleet worker`` then print one
``error:`` line naming the address and exit 1.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import anyio
import pytest

from mailfleet import MailfleetError
from mailfleet.model.errors import ListenFailed
from mailfleet.transports.smtp_in import serve_smtp


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.anyio
async def test_serve_smtp_on_a_busy_port_raises_listen_failed(busy_port: int) -> None:
    with anyio.fail_after(5), pytest.raises(ListenFailed) as raised:
        await serve_smtp(None, host="127.0.0.1", port=busy_port)  # type: ignore[arg-type]
    failure = raised.value
    assert isinstance(failure, MailfleetError)
    assert isinstance(failure, OSError)
    assert failure.errno == errno.EADDRINUSE
    assert failure.address == f"127.0.0.1:{busy_port}"
    assert str(failure) == (
        f"cannot listen for SMTP on 127.0.0.1:{busy_port}: "
        f"address already in use ([Errno {errno.EADDRINUSE}])"
    )
