"""The start-up heap, kept out of the garbage collector's full collections while serving.

CPython's cyclic collector walks every tracked object at each full collection,
and the durable path allocates enough (rows, messages, futures) to trigger one
every few seconds. Most of what it walks was made at start-up and lives as long
as the process: modules, SQLAlchemy's tables and compiled statements, the
fleet's components, and whatever the application holds. Measured with
``bench/dispatch.py`` (durable part, SQLite, in a process with a large heap),
collections took about a fifth of the process's CPU per message, and about half
of that went once this heap was frozen (``gc.freeze``); in a fresh process with
a small heap the gain is within the noise. While a fleet serves,
the heap as it was when serving started is frozen (after one collection); when
the last serving fleet of the process stops, it is unfrozen, so that whatever
of it becomes cyclic garbage later is collected as usual. Reference counting
frees everything else as always: freezing only spares the collector the walk.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["frozen_heap"]

_lock = threading.Lock()
_serving = 0


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the heap for as long as the block runs (nested uses share one freeze)."""
    global _serving
    with _lock:
        _serving += 1
        if _serving == 1:
            gc.collect()
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _serving -= 1
            if _serving == 0:
                gc.unfreeze()
