"""``python -m mailfleet`` and the ``mailfleet`` command."""

from __future__ import annotations

import ctypes
import gc
import os
import sys

MALLOC_ARENAS = 2
"""glibc malloc arenas of a ``mailfleet`` process unless ``MALLOC_ARENA_MAX`` says otherwise."""

_M_ARENA_MAX = -8  # glibc's mallopt parameter


def main() -> None:
    """Run the ``mailfleet`` command line.

    Its modules are imported with the cyclic garbage collector paused: an import
    builds objects that live as long as the process, and collecting over them
    while they are made is a tenth of a command's start-up, for nothing.
    """
    cap_malloc_arenas()
    gc.disable()
    try:
        from mailfleet.cli import main as run  # imported here: the point of this module
    finally:
        gc.enable()
    run()


def cap_malloc_arenas() -> bool:
    """Limit glibc's malloc to :data:`MALLOC_ARENAS` arenas, before any thread starts;
    whether it was done (not on another C library, nor when ``MALLOC_ARENA_MAX`` is set).

    glibc gives threads arenas of their own, up to eight per core, and memory freed
    in one arena serves only that arena's threads. The store's transactions run in
    worker threads that come and go, so SQLite's page caches are allocated and freed
    across many arenas: the soak (``bench/soak.py``) measured the resident set of
    ``mailfleet run`` growing by 0.15 MiB/s under a steady load with the default
    arenas, and by a third of that with two. This is what ``MALLOC_ARENA_MAX=2``
    does for services run under glibc; an operator's own setting wins.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


if __name__ == "__main__":
    main()
