"""``Idempotency-Key`` over the HTTP API: a retry gets the first answer and acts once, the
same key on another request is 409, a retry while the first runs is 409 too, and a send
stays single across a crash between its commit and its answer."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from apiserver import ApiServer
from mailfleet import Fleet, Grant
from mailfleet.api.idempotency import fingerprint
from mailfleet.store import idempotency
from mailfleet.store.scope import Scope
from mailfleet.store.tables import idempotency_table, outbound_table

pytestmark = pytest.mark.anyio

OPEN = {"warmup": {"grant": [], "domain": []}, "breaker": {"enabled": False}}
SENDER = "sales@example.com"


async def sender(fleet: Fleet, policy: dict[str, Any] | None = None) -> Grant:
    await fleet.create_workspace("outreach", policy={**OPEN, **(policy or {})})
    return await fleet.provision(SENDER, workspace="outreach")


def message(**changes: Any) -> dict[str, Any]:
    return {"to": ["someone@example.org"], "subject": "Offer", "text": "Hello.", **changes}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def outbound_rows(fleet: Fleet) -> int:
    def count(conn: Any) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(outbound_table)).scalar())

    return await fleet.database.read(count)


async def cached_keys(fleet: Fleet) -> int:
    def count(conn: Any) -> int:
        query = sa.select(sa.func.count()).select_from(idempotency_table)
        return int(conn.execute(query).scalar())

    return await fleet.database.read(count)


async def forget_keys(fleet: Fleet) -> None:
    """What a crash between the send's commit and the cached answer leaves: no answer."""
    await fleet.database.write(lambda conn: conn.execute(sa.delete(idempotency_table)))


def problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["code"] == code, body
    return body


async def test_a_retry_gets_the_first_answer_and_sends_once(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    client = await api.client()
    url = f"/v1/grants/{grant.id}/messages"
    first = await client.post(url, json=message(), headers=keyed("order-1"))
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    again = await client.post(url, json=message(), headers=keyed("order-1"))
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    # the same JSON, spaced and ordered differently, is the same request
    spaced = await client.post(
        url,
        content=b'{ "text": "Hello.", "subject": "Offer", "to": ["someone@example.org"] }',
        headers={**keyed("order-1"), "Content-Type": "application/json"},
    )
    assert spaced.json() == first.json()
    assert await api.fleet.outbox_count() == 1
    assert len(await api.fleet.events(type="message.queued")) == 1

    reused = problem(
        await client.post(url, json=message(subject="Another"), headers=keyed("order-1")),
        409,
        "idempotency_key_reused",
    )
    assert "Idempotency-Key" in reused["detail"]
    problem(
        await client.post(
            "/v1/suppressions", json={"address": "a@example.org"}, headers=keyed("order-1")
        ),
        409,
        "idempotency_key_reused",
    )
    other_key = await client.post(url, json=message(), headers=keyed("order-2"))
    assert other_key.json()["id"] != first.json()["id"]
    assert await api.fleet.outbox_count() == 2


async def test_a_send_committed_before_a_crash_is_answered_not_sent_again(
    api: ApiServer,
) -> None:
    grant = await sender(api.fleet)
    # the send committed through the Python API, with the key; the answer never left
    committed = await api.fleet.send(
        grant, "someone@example.org", subject="Offer", text="Hello.", idempotency_key="crash-1"
    )
    assert committed.ok
    assert committed.id is not None
    client = await api.client()
    retry = await client.post(
        f"/v1/grants/{grant.id}/messages", json=message(), headers=keyed("crash-1")
    )
    assert retry.status_code == 202, retry.text
    assert retry.json()["id"] == committed.id
    assert retry.json()["message_id"] == committed.message_id
    assert await outbound_rows(api.fleet) == 1

    # over HTTP: the first answer sent, then its cache row lost
    first = await client.post(
        f"/v1/grants/{grant.id}/messages", json=message(), headers=keyed("crash-2")
    )
    await forget_keys(api.fleet)
    assert await cached_keys(api.fleet) == 0
    second = await client.post(
        f"/v1/grants/{grant.id}/messages", json=message(), headers=keyed("crash-2")
    )
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert "idempotent-replayed" not in second.headers  # answered by the outbox, not the cache
    assert await outbound_rows(api.fleet) == 2
    # the Python API is idempotent on its own too
    again = await api.fleet.send(
        grant, "someone@example.org", subject="Offer", text="Hello.", idempotency_key="crash-2"
    )
    assert again.id == first.json()["id"]
    assert await outbound_rows(api.fleet) == 2


async def test_concurrent_retries_send_one_message(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    client = await api.client()
    answers: list[httpx.Response] = []

    async def post() -> None:
        answers.append(
            await client.post(
                f"/v1/grants/{grant.id}/messages", json=message(), headers=keyed("burst")
            )
        )

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(post)
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {202, 409}
    assert 202 in statuses
    ids = {a.json()["id"] for a in answers if a.status_code == 202}
    assert len(ids) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["code"] == "idempotency_key_in_flight"
            assert int(answer.headers["retry-after"]) >= 1
    assert await outbound_rows(api.fleet) == 1


async def test_a_request_in_flight_holds_its_key_until_its_lock_runs_out(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    client = await api.client()
    scope = Scope(api.fleet.database, api.fleet.application.id)
    url = f"/v1/grants/{grant.id}/messages"
    body = json.dumps(message()).encode()
    print_ = fingerprint("POST", url, b"", body)
    now = time.time()
    # another process claimed the key and is still sending
    await scope.write(
        lambda tx: idempotency.claim(
            tx, idempotency.digest("slow"), print_, now=now, lock=30, ttl=86_400
        )
    )
    answer = await client.post(
        url, content=body, headers={**keyed("slow"), "Content-Type": "application/json"}
    )
    body_ = problem(answer, 409, "idempotency_key_in_flight")
    assert body_["retry_after"] == int(answer.headers["retry-after"]) >= 1
    problem(
        await client.post(url, json=message(subject="Else"), headers=keyed("slow")),
        409,
        "idempotency_key_reused",
    )
    assert await outbound_rows(api.fleet) == 0
    # it died: once its lock ran out, a retry takes over
    await api.fleet.database.write(
        lambda conn: conn.execute(sa.update(idempotency_table).values(locked_until=now - 1))
    )
    taken = await client.post(
        url, content=body, headers={**keyed("slow"), "Content-Type": "application/json"}
    )
    assert taken.status_code == 202, taken.text
    assert await outbound_rows(api.fleet) == 1


async def test_answers_that_did_nothing_are_not_kept(api: ApiServer) -> None:
    grant = await sender(api.fleet, {"daily_send_quota": 1, "quota_pacing_from": 1.0})
    client = await api.client()
    url = f"/v1/grants/{grant.id}/messages"
    assert (await client.post(url, json=message(), headers=keyed("q-1"))).status_code == 202
    limited = await client.post(url, json=message(to=["b@example.org"]), headers=keyed("q-2"))
    problem(limited, 429, "rate_limited")
    await api.fleet.update_policy("outreach", {"daily_send_quota": 10})
    retried = await client.post(url, json=message(to=["b@example.org"]), headers=keyed("q-2"))
    assert retried.status_code == 202, retried.text  # acted this time
    assert "idempotent-replayed" not in retried.headers
    # a refusal that is the request's outcome is kept: its retry is the same refusal
    await api.fleet.suppress("gone@example.org")
    refused = await client.post(url, json=message(to=["gone@example.org"]), headers=keyed("q-3"))
    problem(refused, 400, "recipient_suppressed")
    await api.fleet.unsuppress("gone@example.org")
    again = await client.post(url, json=message(to=["gone@example.org"]), headers=keyed("q-3"))
    problem(again, 400, "recipient_suppressed")
    assert again.headers["idempotent-replayed"] == "true"
    # an admin act tried with a plain key is not remembered against the admin key
    admin = await api.client(admin=True)
    act = {"kind": "grant", "subject": grant.id, "reason": "abuse"}
    problem(
        await client.post("/v1/restrictions", json=act, headers=keyed("r-1")), 403, "admin_required"
    )
    assert (await admin.post("/v1/restrictions", json=act, headers=keyed("r-1"))).status_code == 201


async def test_keys_are_per_application_checked_and_expire(api: ApiServer) -> None:
    client = await api.client()
    other = await api.client(application="other")
    mine = await client.post(
        "/v1/suppressions", json={"address": "a@example.org"}, headers=keyed("shared")
    )
    assert mine.json() == {"added": 1, "received": 1}
    replay = await client.post(
        "/v1/suppressions", json={"address": "a@example.org"}, headers=keyed("shared")
    )
    assert replay.json() == {"added": 1, "received": 1}  # the first answer, not "added": 0
    theirs = await other.post(
        "/v1/suppressions", json={"address": "b@example.org"}, headers=keyed("shared")
    )
    assert theirs.status_code == 200  # another application's key space
    assert "idempotent-replayed" not in theirs.headers
    assert [e.address for e in await api.fleet.suppressions()] == ["a@example.org"]

    for bad in ("", "x" * 256, "caf\u00e9"):
        answer = await client.post(
            "/v1/suppressions",
            json={"address": "c@example.org"},
            headers={"Idempotency-Key": bad.encode("utf-8")},  # type: ignore[dict-item]
        )
        problem(answer, 400, "invalid_idempotency_key")
    assert await api.fleet.suppression("c@example.org") is None
    # without a valid key the route answers 401 itself
    assert (
        await api.anonymous().post(
            "/v1/suppressions", json={"address": "c@example.org"}, headers=keyed("k")
        )
    ).status_code == 401

    # an expired key is forgotten: the same key acts anew, and the sweep deletes old ones
    await api.fleet.database.write(
        lambda conn: conn.execute(sa.update(idempotency_table).values(expires_at=time.time() - 1))
    )
    fresh = await client.post(
        "/v1/suppressions", json={"address": "d@example.org"}, headers=keyed("shared")
    )
    assert fresh.json() == {"added": 1, "received": 1}
    assert "idempotent-replayed" not in fresh.headers
    scope = Scope(api.fleet.database, api.others["other"].application.id)
    swept = await scope.write(lambda tx: idempotency.sweep(tx, now=time.time()))
    assert swept == 1  # other's expired key; test's was taken over
    assert await cached_keys(api.fleet) == 1


async def test_unknown_keys_of_posts_without_the_header_are_untouched(api: ApiServer) -> None:
    client = await api.client()
    for _ in range(2):
        answer = await client.post(
            "/v1/suppressions", json={"address": f"{uuid.uuid4().hex}@example.org"}
        )
        assert answer.json()["added"] == 1
    assert await cached_keys(api.fleet) == 0
