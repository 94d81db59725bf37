"""What lets a UIDVALIDITY change pass without delivering a message twice.

A message's *fingerprint* is a short digest of its Message-ID, or of its
raw bytes when it has none. The source remembers the fingerprints of the
last ``dedupe_window`` messages it took from the mailbox, each with the
UIDVALIDITY it was taken under, in a ring of chunks stored as cursors of
their own (``<source name>#fingerprints/<k>``), so that recording one more
message rewrites one small chunk rather than the whole window.

After a UIDVALIDITY change the old UIDs mean nothing: the mailbox is read
again from UID 1, and a message whose fingerprint was recorded under an
*earlier* UIDVALIDITY is skipped (the grant already has it). Under one
UIDVALIDITY nothing is skipped: each UID is delivered exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import re
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailfleet.plugins import Deliverer

__all__ = ["CHUNK", "FingerprintRing", "fingerprint", "message_id"]

CHUNK = 500
"""Fingerprints per stored chunk."""

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_ANGLE = re.compile(r"<([^<>\s]+)>")


def message_id(raw: bytes) -> str | None:
    """The Message-ID of a raw message (without angle brackets), if it has one."""
    end = _HEADER_END.search(raw)
    header = raw[: end.end()] if end else raw
    try:
        value = BytesHeaderParser(policy=compat32).parsebytes(header).get("Message-ID")
    except Exception:  # a header block the parser cannot read has no usable Message-ID
        return None
    if value is None:
        return None
    text = str(value).strip()
    found = _ANGLE.search(text)
    return (found.group(1) if found else text) or None


def fingerprint(raw: bytes) -> str:
    """A 16-character digest of the Message-ID, else of the whole message."""
    found = message_id(raw)
    basis = b"id:" + found.encode("utf-8", "surrogateescape") if found else b"raw:" + raw
    return base64.urlsafe_b64encode(hashlib.blake2b(basis, digest_size=12).digest()).decode()


class FingerprintRing:
    """The fingerprints of the last ``window`` messages of one source for one grant.

    ``load`` reads the ring; ``add`` records a message; ``save`` writes the
    chunks changed since the last save. Where the ring stands (``position``:
    chunk and entries in it) is kept by the caller in the source's main
    cursor, written after ``save``: a crash between the two leaves entries
    past that position, which are ignored and overwritten.
    """

    def __init__(self, fleet: Deliverer, grant_id: str, source: str, *, window: int) -> None:
        self._fleet = fleet
        self._grant_id = grant_id
        self._source = source
        self._chunks = -(-window // CHUNK) if window > 0 else 0
        self._index = 0
        self._current: dict[str, Any] = {"uidvalidity": None, "fingerprints": []}
        self._dirty: dict[int, dict[str, Any]] = {}
        self._earlier: set[str] = set()

    def _name(self, index: int) -> str:
        return f"{self._source}#fingerprints/{index}"

    async def load(self, position: Any, uidvalidity: int) -> None:
        """Read the ring; fingerprints of other UIDVALIDITYs become :meth:`seen_before`."""
        index, size = _parse_position(position, self._chunks)
        self._index = index
        self._earlier = set()
        self._dirty = {}
        self._current = {"uidvalidity": None, "fingerprints": []}
        for k in range(self._chunks):
            value = await self._fleet.cursor(self._grant_id, self._name(k))
            if not isinstance(value, dict) or not isinstance(value.get("fingerprints"), list):
                continue
            prints = [p for p in value["fingerprints"] if isinstance(p, str)]
            if k == index:
                prints = prints[:size]
                self._current = {"uidvalidity": value.get("uidvalidity"), "fingerprints": prints}
            if value.get("uidvalidity") != uidvalidity:
                self._earlier.update(prints)

    def seen_before(self, print_: str) -> bool:
        """Whether a message with this fingerprint was taken under an earlier UIDVALIDITY."""
        return print_ in self._earlier

    def add(self, print_: str, uidvalidity: int) -> None:
        """Record a message taken (delivered or skipped) under ``uidvalidity``."""
        if self._chunks == 0:
            return
        current = self._current
        if current["uidvalidity"] != uidvalidity and current["fingerprints"]:
            self._advance()
        elif len(current["fingerprints"]) >= CHUNK:
            self._advance()
        self._current["uidvalidity"] = uidvalidity
        self._current["fingerprints"].append(print_)
        self._dirty[self._index] = self._current

    def _advance(self) -> None:
        self._index = (self._index + 1) % self._chunks
        self._current = {"uidvalidity": None, "fingerprints": []}

    def position(self) -> list[int]:
        """Where the ring stands: ``[chunk, entries in it]`` (for the main cursor)."""
        return [self._index, len(self._current["fingerprints"])]

    async def save(self) -> None:
        """Write the chunks changed since the last save."""
        for index, value in sorted(self._dirty.items()):
            await self._fleet.set_cursor(
                self._grant_id,
                self._name(index),
                {"uidvalidity": value["uidvalidity"], "fingerprints": list(value["fingerprints"])},
            )
        self._dirty = {}


def _parse_position(position: Any, chunks: int) -> tuple[int, int]:
    if (
        isinstance(position, list)
        and len(position) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in position)
        and 0 <= position[0] < max(chunks, 1)
        and 0 <= position[1] <= CHUNK
    ):
        return position[0], position[1]
    return 0, 0
