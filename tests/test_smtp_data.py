"""The MX reads DATA in blocks; it must answer and store exactly what stock aiosmtpd does.

Both servers listen on loopback; one raw client sends each the same bytes, cut
into pieces at random points (sent apart, so the server sees partial blocks
and terminators split across reads), and the replies and the stored content
are compared, and the connection must still answer the next command.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfleet.transports.smtp_in import AIOSMTPD_OVERRIDDEN, AIOSMTPD_USED, MxSMTP

SIZE_LIMIT = 3000


class Capture:
    def __init__(self) -> None:
        self.content: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.content.append(envelope.original_content)
        return "250 OK stored"


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One SMTP reply, all its lines."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


async def _session(server_class: type[SMTP], pieces: list[bytes]) -> tuple[Any, ...]:
    handler = Capture()
    server = await asyncio.get_running_loop().create_server(
        lambda: server_class(handler, decode_data=False, data_size_limit=SIZE_LIMIT),
        "127.0.0.1",
        0,
    )
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        replies = [await _reply(reader)]
        for command in (b"EHLO client\r\n", b"MAIL FROM:<a@example.org>\r\n"):
            writer.write(command)
            replies.append(await _reply(reader))
        writer.write(b"RCPT TO:<b@example.com>\r\nDATA\r\n")  # two replies expected
        replies += [await _reply(reader), await _reply(reader)]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.0005)  # sent apart: the server reads them apart
        replies.append(await _reply(reader))
        writer.write(b"NOOP\r\n")  # nothing of the message was left unread, nor too much read
        replies.append(await _reply(reader))
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    return tuple(replies[1:]), tuple(handler.content)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# The intended difference: the MX's own replies (to MAIL and RCPT, and at the end of
# DATA) carry RFC 3463 enhanced status codes, which aiosmtpd's lack (see the
# reply table in smtp_in). Replies after the greeting: EHLO, MAIL, RCPT, 354,
# the end of DATA, NOOP.
ENHANCED_MAIL = {b"250 OK\r\n": b"250 2.1.0 OK\r\n"}
ENHANCED_RCPT = {b"250 OK\r\n": b"250 2.1.5 OK\r\n"}
ENHANCED_DATA = {
    b"500 Line too long (see RFC5321 4.5.3.1.6)\r\n": (
        b"500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)\r\n"
    ),
    b"552 Error: Too much mail data\r\n": b"552 5.3.4 Error: Too much mail data\r\n",
}


def _enhanced(replies: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Stock aiosmtpd's replies as the MX words them."""
    ehlo, mail, rcpt, go_ahead, end, noop = replies
    end = ENHANCED_DATA.get(end, end)
    return ehlo, ENHANCED_MAIL[mail], ENHANCED_RCPT[rcpt], go_ahead, end, noop


def _compare(data: bytes, cuts: list[int]) -> None:
    async def both() -> tuple[Any, Any]:
        pieces = _cut(data, cuts)
        return await _session(SMTP, pieces), await _session(MxSMTP, pieces)

    (stock_replies, stock_content), ours = asyncio.run(both())
    stock = _enhanced(stock_replies), stock_content
    content = data[:-3]
    long_line = any(len(line) + 2 > SMTP.line_length_limit for line in content.split(b"\r\n"))
    if long_line and len(content) > SIZE_LIMIT:
        # Both faults: aiosmtpd names the one it met first while reading line
        # by line; the MX, reading in blocks, always names the size. Either
        # way nothing is stored and the session goes on.
        assert ours[0][-2].startswith(b"552 ")
        assert stock[0][-2][:4] in (b"500 ", b"552 ")
        assert ours[0][:-2] == stock[0][:-2]
        assert ours[0][-1] == stock[0][-1]
        assert ours[1] == stock[1] == ()
    else:
        assert ours == stock


LINE = st.one_of(
    st.text(alphabet=".a \r\n\t", max_size=12),
    st.builds(lambda n, c: c * n, st.integers(995, 1003), st.sampled_from(["a", "."])),
).map(str.encode)


def _valid(lines: list[bytes]) -> bytes | None:
    """Lines joined by CRLF and terminated, or None if a terminator hides inside."""
    body = b"".join(line + b"\r\n" for line in lines)
    if body.startswith(b".\r\n") or b"\r\n.\r\n" in body:
        return None
    return body + b".\r\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINE, max_size=8), st.lists(st.integers(0, 10_000), max_size=6))
def test_data_is_read_as_aiosmtpd_reads_it(lines: list[bytes], cuts: list[int]) -> None:
    data = _valid(lines)
    if data is None:
        return
    _compare(data, cuts)


def test_the_edges_of_data() -> None:
    cases = [
        b".\r\n",  # an empty message
        b"\r\n.\r\n",  # one empty line
        b"..\r\n.\r\n",  # a dot-stuffed lone dot
        b".hidden\r\n..two\r\nplain.\r\n...\r\n.\r\n",  # dot-stuffing on every kind of line
        b"\r\r\n.\r\n",  # a bare CR before the CRLF
        b"a\nb\r\n.\r\n",  # a bare LF is not a line end
        b"a\n.\r\nb\r\n.\r\n",  # nor does it make the dot after it a terminator
        b".\n.\r\n.\r\n",  # a dot line with a bare LF
        b"\n.\r\n.\r\n",
        b"\r" * 3000 + b"\r\n.\r\n",  # a long run of CRs: 500, read in bounded blocks
        b"\r\n" * 50 + b".\r\n",  # many empty lines
        b"x" * 999 + b"\r\n.\r\n",  # the longest line aiosmtpd takes
        b"x" * 1000 + b"\r\n.\r\n",  # one more: 500
        (b"y" * 998 + b"\r\n") * 4 + b".\r\n",  # over the size limit: 552
        b"x" * 4000 + b"\r\n.\r\n",  # both faults: 552
    ]
    for data in cases:
        for cuts in ([], [1], [1, 2, 3], [len(data) - 3], [len(data) - 4, len(data) - 1]):
            _compare(data, cuts)


def test_the_aiosmtpd_members_the_mx_relies_on_are_there() -> None:
    """Why aiosmtpd is pinned: an upgrade that drops or reshapes one fails here, by name."""

    async def connected_stock_server() -> SMTP:
        made: list[SMTP] = []

        def factory() -> SMTP:
            made.append(SMTP(Capture(), decode_data=False))
            return made[-1]

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _reply(reader)  # the greeting: the connection is set up
            writer.close()
            await writer.wait_closed()
        finally:
            server.close()
            await server.wait_closed()
        return made[0]

    stock = asyncio.run(connected_stock_server())
    missing = [name for name in (*AIOSMTPD_OVERRIDDEN, *AIOSMTPD_USED) if not hasattr(stock, name)]
    assert not missing, f"aiosmtpd.smtp.SMTP no longer has {missing}: see the pin in smtp_in.py"
    for name in AIOSMTPD_OVERRIDDEN:
        assert name in vars(MxSMTP), f"MxSMTP overrides {name} no more: update the list"
        theirs = inspect.signature(getattr(SMTP, name)).parameters
        ours = inspect.signature(getattr(MxSMTP, name)).parameters
        assert list(ours) == list(theirs), f"aiosmtpd's SMTP.{name} takes {list(theirs)} now"
