"""Plugin discovery through the ``mailfleet.plugins`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import anyio
import pytest

from mailfleet import Fleet, Mailroom, Settings
from mailfleet import plugins as plugin_module
from mailfleet.plugins import Deliverer, hookimpl, inbound_sources, plugin_manager


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


class RecordingSource:
    """Delivers one message through what it is given, and keeps what that was."""

    name = "recording"
    given: Any = None

    async def serve(self, deliverer: Deliverer) -> None:
        type(self).given = deliverer
        grant = await deliverer.grant("inbox@example.com")
        await deliverer.set_cursor(grant.id, "recording", {"done": 1})
        await deliverer.deliver(
            grant.id, b"Subject: via plugin\r\n\r\nHi.\r\n", source_key="recording:1"
        )


class RecordingPlugin:
    @hookimpl
    def mailfleet_inbound_sources(self, settings: Settings) -> list[RecordingSource]:
        return [RecordingSource()]


RECORDING = RecordingPlugin()


@pytest.mark.anyio
async def test_a_served_source_gets_the_mailroom_not_the_fleet(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    fake_entry_points(monkeypatch, entry("recording", f"{__name__}:RECORDING"))
    async with Fleet(database_url=database_url) as fleet:
        await fleet.add_domain("example.com")
        grant = await fleet.provision("inbox@example.com")
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            with anyio.fail_after(10):
                while not await fleet.events(type="message.received"):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        assert isinstance(RecordingSource.given, Mailroom)
        assert not isinstance(RecordingSource.given, Fleet)
        assert await fleet.cursor(grant.id, "recording") == {"done": 1}
