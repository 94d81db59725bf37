"""Plugin discovery through the ``mailfleet.plugins`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from mailfleet import Settings
from mailfleet import plugins as plugin_module
from mailfleet.plugins import hookimpl, inbound_sources, plugin_manager


class FakeSource:
    name = "fake"

    async def serve(self, fleet: Any) -> None:
        return None


class GoodPlugin:
    @hookimpl
    def mailfleet_inbound_sources(self, settings: Settings) -> list[FakeSource]:
        return [FakeSource()]


GOOD = GoodPlugin()


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *entries: EntryPoint) -> None:
    monkeypatch.setattr(
        plugin_module, "entry_points", lambda group: [e for e in entries if e.group == group]
    )


def entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group="mailfleet.plugins")


def test_plugins_contribute_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, entry("good", f"{__name__}:GOOD"))
    sources = inbound_sources(plugin_manager(), Settings())
    assert [s.name for s in sources] == ["fake"]


def test_the_allowlist_chooses_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, entry("good", f"{__name__}:GOOD"))
    assert inbound_sources(plugin_manager(frozenset()), Settings()) == []
    assert Settings(plugins="").plugin_allowlist == frozenset()
    assert Settings(plugins=" good , other").plugin_allowlist == {"good", "other"}
    assert Settings().plugin_allowlist is None


def test_a_broken_plugin_is_skipped_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_entry_points(
        monkeypatch,
        entry("broken", "no_such_module_anywhere:plugin"),
        entry("good", f"{__name__}:GOOD"),
    )
    sources = inbound_sources(plugin_manager(), Settings())
    assert [s.name for s in sources] == ["fake"]
    assert "plugin 'broken'" in caplog.text
