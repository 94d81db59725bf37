"""``/v1/webhooks`` over the real server: a subscription made over HTTP, its secret
verifying each delivery to a real loopback receiver (checked with the independent
``standardwebhooks`` package), its deliveries and attempts listed, disabled and
re-enabled, rotated, replayed and deleted; and the errors."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from apiserver import api_server
from mailfleet import Fleet
from test_webhooks import delivered, serving
from webhook_receiver import receiver

pytestmark = pytest.mark.anyio


async def provision(fleet: Fleet, *addresses: str) -> None:
    for address in addresses:
        await fleet.provision(address)


async def test_a_subscription_over_http_gets_signed_events(database_url: str) -> None:
    async with receiver() as hooks, serving(database_url) as fleet, api_server(fleet) as api:
        client = await api.client()
        made = await client.post("/v1/webhooks", json={"url": hooks.url, "description": "ops"})
        assert made.status_code == 201, made.text
        hook = made.json()
        secret = hook.pop("secret")
        assert secret.startswith("whsec_")
        assert hook["status"] == "active"
        assert (await client.get(f"/v1/webhooks/{hook['id']}")).json() == hook
        listed = (await client.get("/v1/webhooks")).json()
        assert [w["id"] for w in listed["items"]] == [hook["id"]]
        assert "secret" not in listed["items"][0]

        await provision(fleet, "ada@example.com", "bob@example.com")
        await delivered(fleet)
        envelopes = [r.verified(secret) for r in hooks.ok()]
        created = [e for e in envelopes if e["type"] == "grant.created"]
        assert {e["data"]["object"]["address"] for e in created} == {
            "ada@example.com",
            "bob@example.com",
        }
        assert all(e["data"]["grant_id"] for e in created)
        assert all(e["data"]["application_id"] == fleet.application.id for e in envelopes)

        deliveries = (await client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()
        assert len(deliveries["items"]) == len(hooks.ok())
        assert {d["status"] for d in deliveries["items"]} == {"delivered"}
        first = deliveries["items"][-1]
        attempts = (
            await client.get(
                f"/v1/webhooks/{hook['id']}/attempts", params={"delivery": first["id"]}
            )
        ).json()["items"]
        assert [(a["ok"], a["status_code"]) for a in attempts] == [(True, 200)]
        assert attempts[0]["latency_ms"] >= 0
        assert attempts[0]["response"] == "ok"
        paged = (
            await client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 1})
        ).json()
        assert len(paged["items"]) == 1
        rest = await client.get(
            f"/v1/webhooks/{hook['id']}/deliveries",
            params={"limit": 1000, "after": paged["next_cursor"]},
        )
        assert len(rest.json()["items"]) == len(deliveries["items"]) - 1


async def test_disable_enable_rotate_replay_delete(database_url: str) -> None:
    async with receiver() as hooks, serving(database_url) as fleet, api_server(fleet) as api:
        client = await api.client()
        hook = (await client.post("/v1/webhooks", json={"url": hooks.url})).json()
        path = f"/v1/webhooks/{hook['id']}"
        disabled = await client.patch(path, json={"status": "disabled"})
        assert disabled.json()["status"] == "disabled"
        await provision(fleet, "ada@example.com")
        await anyio.sleep(0.5)
        assert hooks.ok() == []  # a disabled subscription's events wait
        assert (await client.patch(path, json={"status": "active"})).json()["status"] == "active"
        await delivered(fleet)
        assert [r.verified(hook["secret"])["type"] for r in hooks.ok()] == ["grant.created"]

        rotated = await client.post(f"{path}/rotate", json={"grace_hours": 1})
        assert rotated.status_code == 200
        new_secret = rotated.json()["secret"]
        assert new_secret != hook["secret"]
        assert len(rotated.json()["secrets_valid_until"]) == 2
        (first,) = (await client.get(f"{path}/deliveries")).json()["items"]
        replayed = await client.post(f"{path}/replay", json={"deliveries": [first["id"]]})
        assert replayed.json() == {"queued": 1}
        await delivered(fleet)
        again = hooks.ok()[-1]
        assert again.verified(new_secret)["type"] == "grant.created"  # the new secret...
        assert again.verified(hook["secret"])["type"] == "grant.created"  # ...and the old one
        assert again.headers["webhook-id"] == hooks.ok()[0].headers["webhook-id"]

        assert (await client.delete(path)).status_code == 204
        gone = await client.get(path)
        assert gone.status_code == 404
        assert gone.json()["code"] == "webhook_not_found"
        assert (await client.delete(path)).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"url": "ftp://example.org/hook"}, 422, "invalid_input", "url"),
        ({"url": "not a url"}, 422, "invalid_input", "url"),
        ({"url": "https://example.org/h", "colour": "red"}, 422, "validation_failed", "colour"),
        (
            {"url": "https://example.org/h", "workspaces": ["nowhere"]},
            404,
            "workspace_not_found",
            "workspace",
        ),
    ],
)
async def test_bad_subscriptions_are_refused_with_the_field(
    fleet: Fleet, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    async with api_server(fleet) as api:
        client = await api.client()
        answer = await client.post("/v1/webhooks", json=body)
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        assert answer.json()["field"] == field
        assert (await client.get("/v1/webhooks")).json()["items"] == []


async def test_replay_needs_exactly_one_choice(fleet: Fleet) -> None:
    async with api_server(fleet) as api:
        client = await api.client()
        hook = (await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h"})).json()
        for body in ({}, {"after_event": "0", "since": "2026-01-01T00:00:00Z"}):
            answer = await client.post(f"/v1/webhooks/{hook['id']}/replay", json=body)
            assert answer.status_code == 422, body
            assert answer.json()["code"] == "invalid_input"
