"""A doorbell: producers ring it, whoever is serving at the moment listens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, ParamSpec

__all__ = ["Doorbell"]

P = ParamSpec("P")


class Doorbell(Generic[P]):
    """Wakes the listeners of the moment; ringing with nobody listening costs nothing.

    Components that live as long as the fleet (the intake, the outbox) ring;
    components that live as long as one ``serve()`` (the worker, the sender)
    listen for that lifetime only, so nothing is re-wired after a stop.
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[P, None]] = []

    def ring(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener with the arguments."""
        for listener in self._listeners:
            listener(*args, **kwargs)

    @contextmanager
    def listening(self, listener: Callable[P, None]) -> Iterator[None]:
        """Call ``listener`` on every ring within the block."""
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)
