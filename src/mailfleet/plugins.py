"""Plugins: the hook specifications, and discovery through entry points.

A plugin is an object (usually a module) with hook implementations, published
in the ``mailfleet.plugins`` entry-point group of its distribution::

    [project.entry-points."mailfleet.plugins"]
    imap = "mailfleet_imap.plugin"

Hooks are synchronous and run at set-up time (pluggy); what they return are
the asynchronous extension points the runtime awaits. Set ``MAILFLEET_PLUGINS``
to a comma-separated list of entry-point names to load only those (empty:
none).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import pluggy

from .mail.inbound import InboundMessage
from .model.records import Grant
from .model.spam import SpamScorer
from .settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "Deliverer",
    "InboundSource",
    "hookimpl",
    "hookspec",
    "plugin_manager",
    "spam_scorers",
]

log = logging.getLogger("mailfleet.plugins")
ENTRY_POINT_GROUP = "mailfleet.plugins"
hookspec = pluggy.HookspecMarker("mailfleet")
hookimpl = pluggy.HookimplMarker("mailfleet")


class Deliverer(Protocol):
    """What an inbound source gets of the fleet: delivery, grants, read positions.

    The fleet hands sources its mailroom (``Fleet.mailroom``), never itself; a
    ``Fleet`` has the same four methods, so a source can also be served by hand
    with ``await source.serve(fleet)``.
    """

    async def deliver(
        self, grant: str, raw: bytes, *, source_key: str | None = None
    ) -> InboundMessage:
        """Store a message for a grant and queue it; returns once committed."""
        ...

    async def grant(self, key: str) -> Grant:
        """A grant of the application by id or address (``GrantNotFound`` otherwise)."""
        ...

    async def cursor(self, grant: str, source: str) -> dict[str, Any] | None:
        """How far ``source`` has been read for a grant."""
        ...

    async def set_cursor(self, grant: str, source: str, value: dict[str, Any]) -> None:
        """Remember how far ``source`` has been read for a grant (a JSON value)."""
        ...


@runtime_checkable
class InboundSource(Protocol):
    """Something that feeds mail into the fleet (an IMAP mailbox, a provider webhook...).

    ``serve`` runs until cancelled and hands every message to
    ``deliverer.deliver(grant, raw, source_key=...)``, the same pipeline as the
    SMTP server; it may keep its read position with ``deliverer.cursor`` /
    ``deliverer.set_cursor``.
    """

    name: str

    async def serve(self, deliverer: Deliverer) -> None:
        """Feed messages until cancelled."""
        ...


class HookSpecs:
    """The hooks a plugin may implement."""

    @hookspec
    def mailfleet_inbound_sources(self, settings: Settings) -> Iterable[InboundSource]:
        """Return the inbound sources to run alongside the fleet's workers."""
        raise NotImplementedError

    @hookspec
    def mailfleet_spam_scorers(self, settings: Settings) -> Iterable[SpamScorer]:
        """Return spam scorers (:class:`~mailfleet.model.spam.SpamScorer`): each is awaited
        for every message the MX takes, and the signals it finds add to its spam score."""
        raise NotImplementedError


def plugin_manager(allow: Collection[str] | None = None) -> pluggy.PluginManager:
    """A plugin manager with every installed plugin (or only those in ``allow``) registered."""
    manager = pluggy.PluginManager("mailfleet")
    manager.add_hookspecs(HookSpecs)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if allow is not None and entry.name not in allow:
            continue
        try:
            plugin = entry.load()
        except Exception:
            # One broken plugin must not take the fleet down: say which, and go on.
            log.exception(
                "plugin %r (%s) failed to load and is skipped; MAILFLEET_PLUGINS chooses "
                "which plugins load",
                entry.name,
                entry.value,
            )
            continue
        manager.register(plugin, name=entry.name)
    return manager


def inbound_sources(manager: pluggy.PluginManager, settings: Settings) -> list[InboundSource]:
    """Every inbound source the registered plugins contribute."""
    found: list[InboundSource] = []
    for contributed in manager.hook.mailfleet_inbound_sources(settings=settings):
        found.extend(contributed)
    return found


def spam_scorers(manager: pluggy.PluginManager, settings: Settings) -> list[SpamScorer]:
    """Every spam scorer the registered plugins contribute."""
    found: list[SpamScorer] = []
    for contributed in manager.hook.mailfleet_spam_scorers(settings=settings):
        found.extend(contributed)
    return found
