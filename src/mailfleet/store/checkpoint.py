"""Background WAL checkpoints for SQLite, off the writers' path.

In WAL mode every commit appends pages to the write-ahead log, and by
default the commit that takes the log past 1,000 pages also copies them back
into the database file (a *checkpoint*) before it returns: one writer in
a few hundred pays for everyone, on the critical path of a group commit.
:class:`Checkpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` from a thread
of its own every ``interval`` seconds instead. A passive checkpoint never
blocks readers or writers, and SQLite's C code runs without the GIL, so the
copy uses a core the event loop does not. The connections keep an automatic
checkpoint at a much larger size (:data:`BACKSTOP_PAGES`) for processes
without a checkpointer.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from .outage import Outage

__all__ = ["BACKSTOP_PAGES", "Checkpointer"]

log = logging.getLogger("mailfleet.store")

BACKSTOP_PAGES = 16_000
"""``wal_autocheckpoint`` of the application's connections (64 MiB of 4 KiB pages)."""


class Checkpointer:
    """Checkpoints one SQLite database's WAL every ``interval`` seconds until stopped."""

    def __init__(self, path: str, *, interval: float = 0.25) -> None:
        self._path = path
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"mailfleet-checkpoint:{path}", daemon=True
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (a checkpoint under way is finished)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        except sqlite3.Error:
            log.exception("the WAL checkpointer could not open %s", self._path)
            return
        # A full disk fails the checkpoint (the database file cannot grow) as it fails
        # commits: logged once, tried again with backoff until there is room.
        outage = Outage(f"WAL checkpoint of {self._path}", log)
        wait = self._interval
        try:
            while not self._stopped.wait(wait):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.OperationalError as exc:  # full, locked, or the file removed
                    wait = max(self._interval, outage.failed(exc, expected=True))
                except sqlite3.Error as exc:  # the backstop remains
                    wait = max(self._interval, outage.failed(exc, expected=False))
                else:
                    outage.succeeded()
                    wait = self._interval
        finally:
            conn.close()
