"""``GET /v1/events`` and ``GET /v1/events/stream`` over real sockets: envelopes, filters,
the cursor, the stream resumed with ``Last-Event-ID`` without gaps or duplicates, and an
event committed out of id order on PostgreSQL never skipped."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa

from apiserver import ApiServer, api_server
from mailfleet import Fleet
from mailfleet.model.envelope import envelope
from mailfleet.store.database import normalize_url
from mailfleet.store.tables import events_table, utcnow
from sse import open_stream

pytestmark = pytest.mark.anyio

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def _all(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every event the key sees, through the cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 1000, **({"after": cursor} if cursor else {})}
        answer = await client.get("/v1/events", params=query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def _types(items: list[dict[str, Any]]) -> list[str]:
    return [item["type"] for item in items]


async def test_events_are_listed_oldest_first_as_envelopes(api: ApiServer) -> None:
    grant = await api.fleet.provision("alice@example.com")
    client = await api.client()
    items = await _all(client)
    assert _types(items)[-1] == "grant.created"
    ids = [int(item["id"]) for item in items]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    stored = {event.id: event for event in await api.fleet.events(limit=1000)}
    for item in items:
        assert set(item) == {"id", "type", "time", "data"}
        assert TIME.match(item["time"]), item["time"]
        assert item == envelope(stored[int(item["id"])])
        assert item["data"]["application_id"] == api.fleet.application.id
    created = items[-1]
    assert created["data"]["grant_id"] == grant.id
    assert created["data"]["object"]["address"] == "alice@example.com"


async def test_filters_by_type_grant_and_workspace(api: ApiServer) -> None:
    fleet = api.fleet
    outreach = await fleet.create_workspace("outreach")
    a = await fleet.provision("a@example.com", workspace="outreach")
    b = await fleet.provision("b@example.com", workspace="outreach")
    c = await fleet.provision("c@example.com")
    await fleet.move_grants([c.id], "outreach")
    await fleet.deprovision(b.id)
    client = await api.client()

    created = await _all(client, type="grant.created")
    assert [i["data"]["grant_id"] for i in created] == [a.id, b.id, c.id]
    several = await _all(client, type=["grant.created", "grant.deleted"])
    assert _types(several) == ["grant.created"] * 3 + ["grant.deleted"]
    assert await _all(client, type="grant.created,grant.deleted") == several
    assert await _all(client, type="no.such_type") == []

    of_b = await _all(client, grant=b.id)
    assert _types(of_b) == ["grant.created", "grant.deleted"]

    # The workspace's own events, those of the grants in it now, and b's (deleted, its
    # events name the workspace).
    in_outreach = await _all(client, workspace=outreach.id)
    assert _types(in_outreach) == [
        "workspace.created",
        "grant.created",
        "grant.created",
        "grant.created",
        "grant.workspace_changed",
        "grant.deleted",
    ]
    assert await _all(client, workspace="outreach") == in_outreach  # by name too
    narrowed = await _all(client, workspace=outreach.id, type="grant.created", grant=c.id)
    assert [i["data"]["grant_id"] for i in narrowed] == [c.id]


async def test_the_cursor_pages_through_the_log(api: ApiServer) -> None:
    await api.fleet.provision_many([f"p{i}@example.com" for i in range(7)])
    client = await api.client()
    everything = await _all(client)
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["after"] = cursor
        page = (await client.get("/v1/events", params=params)).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == page["items"][-1]["id"]
    assert [item for page in pages for item in page] == everything
    assert all(len(page) == 3 for page in pages[:-1])
    last = everything[-1]["id"]
    assert (await client.get("/v1/events", params={"after": last})).json() == {
        "items": [],
        "next_cursor": None,
    }


async def test_a_key_of_another_application_sees_none_of_its_events(api: ApiServer) -> None:
    grant = await api.fleet.provision("mine@example.com")
    workspace = await api.fleet.create_workspace("private")
    theirs = await api.client(application="other")
    other_id = api.others["other"].application.id
    seen = await _all(theirs)
    assert seen, "other has its own events (its default workspace)"
    assert all(item["data"]["application_id"] == other_id for item in seen)
    assert await _all(theirs, grant=grant.id) == []
    assert await _all(theirs, workspace=workspace.id) == []
    assert await _all(theirs, type="grant.created") == []
    async with open_stream(theirs, params={"after": "0", "grant": grant.id}) as stream:
        await api.fleet.provision("more@example.com")
        await stream.nothing_for(1.0)


_BAD = [
    ({"after": "abc"}, "after"),
    ({"after": "-1"}, "after"),
    ({"after": "1" * 19}, "after"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"type": "grant created"}, "type.0"),
    ({"grant": "x" * 65}, "grant"),
    ({"workspace": "tab\there"}, "workspace"),
]


async def test_bad_parameters_are_422_naming_the_field(api: ApiServer) -> None:
    client = await api.client()
    for params, field in _BAD:
        paths = ["/v1/events"] if "limit" in params else ["/v1/events", "/v1/events/stream"]
        for path in paths:
            answer = await client.get(path, params=params)
            assert answer.status_code == 422, (path, params, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            body = answer.json()
            assert body["code"] == "validation_failed"
            assert body["field"] == field


async def test_a_bad_last_event_id_and_a_missing_key(api: ApiServer) -> None:
    client = await api.client()
    answer = await client.get("/v1/events/stream", headers={"Last-Event-ID": "yesterday"})
    assert answer.status_code == 422
    assert answer.json()["field"] == "Last-Event-ID"
    for path in ("/v1/events", "/v1/events/stream"):
        refused = await api.anonymous().get(path)
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthorized"


async def test_the_stream_pushes_new_events_promptly(api: ApiServer) -> None:
    client = await api.client()
    async with open_stream(client) as stream:
        started = anyio.current_time()
        grant = await api.fleet.provision("fresh@example.com")
        (event,) = await stream.take(1, within=5)
        assert anyio.current_time() - started < 2.0
        assert event.event == "grant.created"
        assert event.data["data"]["grant_id"] == grant.id
        (listed,) = await _all(client, grant=grant.id)
        assert event.data == listed
        assert event.id == listed["id"]


async def test_a_resumed_stream_gets_exactly_the_missed_events(api: ApiServer) -> None:
    fleet = api.fleet
    client = await api.client()
    async with open_stream(client) as stream:
        await fleet.provision_many([f"first{i}@example.com" for i in range(3)])
        first = await stream.take(3)
    last_seen = first[-1].id
    # Missed while disconnected: provisioning, a workspace, a move, a deletion.
    await fleet.provision_many([f"missed{i}@example.com" for i in range(40)])
    await fleet.create_workspace("later")
    missed_grant = await fleet.grant("missed0@example.com")
    await fleet.move_grants([missed_grant.id], "later")
    await fleet.deprovision("missed1@example.com")
    expected = [i for i in await _all(client) if int(i["id"]) > int(last_seen)]
    assert len(expected) == 43

    async with open_stream(
        client, headers={"Last-Event-ID": last_seen}, params={"after": "0"}
    ) as stream:
        resumed = await stream.take(len(expected))
        assert [e.data for e in resumed] == expected
        # Live again: events written while the stream runs follow without a gap.
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.provision_many, [f"live{i}@example.com" for i in range(25)])
            live = await stream.take(25)
        await stream.nothing_for(0.5)
    ids = [int(e.id) for e in first + resumed + live]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert [e.data for e in live] == [i for i in await _all(client) if int(i["id"]) > ids[-26]]

    async with open_stream(client, params={"after": last_seen}) as stream:  # `?after=` too
        assert [e.data for e in await stream.take(3)] == expected[:3]


async def test_the_stream_filters_by_type_grant_and_workspace(api: ApiServer) -> None:
    fleet = api.fleet
    outreach = await fleet.create_workspace("outreach")
    target = await fleet.provision("target@example.com")
    client = await api.client()
    theirs = await api.client(application="other")
    async with (
        open_stream(client, params={"type": "grant.workspace_changed,grant.deleted"}) as by_type,
        open_stream(client, params={"grant": target.id}) as by_grant,
        open_stream(client, params={"workspace": outreach.id}) as by_workspace,
        open_stream(theirs) as other,
    ):
        joined = await fleet.provision("joined@example.com", workspace="outreach")
        await fleet.move_grants([target.id], "outreach")
        await fleet.deprovision(target.id)

        assert [(e.event, e.data["data"]["grant_id"]) for e in await by_type.take(2)] == [
            ("grant.workspace_changed", target.id),
            ("grant.deleted", target.id),
        ]
        assert [e.event for e in await by_grant.take(2)] == [
            "grant.workspace_changed",
            "grant.deleted",
        ]
        assert [(e.event, e.data["data"]["grant_id"]) for e in await by_workspace.take(3)] == [
            ("grant.created", joined.id),
            ("grant.workspace_changed", target.id),
            ("grant.deleted", target.id),
        ]
        await other.nothing_for(0.5)  # nothing of application test
        await api.others["other"].add_domain("other.example")
        await api.others["other"].provision("theirs@other.example")
        (own,) = await other.take(1)
        assert own.data["data"]["application_id"] == api.others["other"].application.id
        await by_type.nothing_for(0.3)


async def test_an_idle_stream_sends_keep_alive_comments(fleet: Fleet) -> None:
    async with api_server(fleet, api_sse_keepalive=0.2) as server:
        client = await server.client()
        async with open_stream(client) as stream:
            assert await stream.comment(within=3) == "keep-alive"
            assert await stream.comment(within=3) == "keep-alive"
            await fleet.provision("after-a-while@example.com")
            (event,) = await stream.take(1)
            assert event.event == "grant.created"


# -- PostgreSQL: an event id visible before a lower one --------------------------------------


@asynccontextmanager
async def _open_insert(url: str, application_id: str) -> AsyncIterator[_Pending]:
    """A transaction of another connection that inserted an event and has not committed."""
    engine = sa.create_engine(normalize_url(url))
    conn = engine.connect()
    transaction = conn.begin()

    def insert() -> int:
        row = {
            "application_id": application_id,
            "grant_id": None,
            "type": "test.slow_transaction",
            "payload": {"slow": True},
            "created_at": utcnow(),
        }
        return int(
            conn.execute(sa.insert(events_table).returning(events_table.c.id), row).scalar_one()
        )

    pending = _Pending(await anyio.to_thread.run_sync(insert), conn, transaction)
    try:
        yield pending
    finally:
        if transaction.is_active:
            await anyio.to_thread.run_sync(transaction.rollback)
        await anyio.to_thread.run_sync(conn.close)
        engine.dispose()


class _Pending:
    def __init__(self, event_id: int, conn: sa.Connection, transaction: sa.RootTransaction) -> None:
        self.event_id = event_id
        self._transaction = transaction

    async def commit(self) -> None:
        await anyio.to_thread.run_sync(self._transaction.commit)

    async def rollback(self) -> None:
        await anyio.to_thread.run_sync(self._transaction.rollback)


@pytest.mark.postgres
async def test_an_event_committed_after_a_later_one_is_not_skipped(postgres_url: str) -> None:
    async with (
        Fleet(database_url=postgres_url, application="test") as fleet,
        api_server(fleet, api_events_settle=5.0) as server,
    ):
        await fleet.add_domain("example.com")
        client = await server.client()
        async with open_stream(client) as stream:
            position = (await _all(client))[-1]["id"]
            async with _open_insert(postgres_url, fleet.application.id) as slow:
                grant = await fleet.provision("quick@example.com")  # a higher id, committed
                assert (await fleet.events(grant=grant.id))[0].id > slow.event_id
                await stream.nothing_for(1.0)
                listed = await _all(client)
                assert listed[-1]["id"] == position  # neither is listed yet
                await slow.commit()
                first, second = await stream.take(2, within=5)
            assert (first.event, int(first.id)) == ("test.slow_transaction", slow.event_id)
            assert (second.event, second.data["data"]["grant_id"]) == ("grant.created", grant.id)
            assert _types(await _all(client))[-2:] == ["test.slow_transaction", "grant.created"]


@pytest.mark.postgres
async def test_an_id_rolled_back_is_passed_after_the_settle_time(postgres_url: str) -> None:
    async with (
        Fleet(database_url=postgres_url, application="test") as fleet,
        api_server(fleet, api_events_settle=0.8) as server,
    ):
        await fleet.add_domain("example.com")
        client = await server.client()
        async with open_stream(client) as stream:
            async with _open_insert(postgres_url, fleet.application.id) as doomed:
                await fleet.provision("after@example.com")
                await doomed.rollback()
            started = anyio.current_time()
            (event,) = await stream.take(1, within=5)
            waited = anyio.current_time() - started
            assert event.event == "grant.created"
            assert int(event.id) > doomed.event_id
            assert 0.3 < waited < 3.0, waited  # the settle time, not forever
