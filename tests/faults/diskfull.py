"""A small file system that a test fills: a tmpfs mounted in a temporary folder.

``small_disk_at(folder, size="16m")`` mounts it (``mount -t tmpfs``, which
needs root) and unmounts it at the end. Without root the test is skipped
with the reason, except under CI (``CI=true``), where it fails: CI runs as
root and must run these tests. :meth:`SmallDisk.fill` writes a filler file
until the file system has no room left; :meth:`SmallDisk.free` deletes it.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support import unavailable


def _unavailable(reason: str) -> None:
    unavailable(reason, "CI runs as root and must run the full-disk tests")


@dataclass
class SmallDisk:
    """A mounted tmpfs: ``path`` is its root."""

    path: Path

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def free_bytes(self) -> int:
        """The room left, as the file system reports it."""
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self) -> int:
        """Write the filler file until no byte more fits; how many bytes it holds."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Delete the filler file: the room it took is back."""
        self.filler.unlink(missing_ok=True)


@contextmanager
def small_disk_at(folder: Path, *, size: str = "16m", mode: str = "0755") -> Iterator[SmallDisk]:
    """A tmpfs of ``size`` mounted at ``folder`` (made if absent) for the block."""
    if os.geteuid() != 0:
        _unavailable("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        _unavailable(f"mount -t tmpfs failed: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield SmallDisk(folder)
    finally:
        done = subprocess.run(["umount", str(folder)], capture_output=True, text=True, check=False)
        if done.returncode != 0:  # still busy (a process of the test holds a file): detach
            subprocess.run(["umount", "-l", str(folder)], check=False)
