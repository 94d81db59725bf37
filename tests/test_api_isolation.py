"""Every operation of the served OpenAPI document, tried with an admin key of another
application on the resources of this one: none may read or change them.

The resources of application ``test`` (a domain, a workspace, a grant with an
inbound message and its thread, a list and a rule, a restriction, a suppression,
a webhook) are made through the Python API. Then each operation with a path
parameter is called by application ``other``'s admin key with ``test``'s ids:
it must answer a 4xx (404 for almost all) and never a 2xx or a 5xx; each list
operation must name none of ``test``'s ids. Last, ``test``'s state is read back
unchanged. Operations are taken from the served document, so a new route is
tried as soon as it exists.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from apiserver import ApiServer
from mailfleet import Fleet

pytestmark = pytest.mark.anyio

KEYLESS = {"/v1/unsubscribe/{token}", "/v1/opt-in/{token}"}  # the token is the proof
OPERATOR = {"/healthz", "/metrics", "/openapi.json", "/docs"}
# Bodies that would act if the resource were the caller's.
BODIES: dict[tuple[str, str], Any] = {
    ("post", "/v1/grants/{grant}/messages"): {
        "to": ["bob@example.org"],
        "subject": "hi",
        "text": "hello",
    },
    ("post", "/v1/grants/{grant}/reinstate"): {"reason": "someone else's"},
    ("post", "/v1/lists/{list_id}/items"): {"items": ["mallory@example.org"]},
    ("delete", "/v1/lists/{list_id}/items"): {"items": ["ada@example.org"]},
    ("patch", "/v1/rules/{rule_id}"): {"priority": 1},
    ("patch", "/v1/workspaces/{workspace}"): {"policy": {"daily_send_quota": 1}},
    ("post", "/v1/workspaces/{workspace}/assign"): {"grants": ["help@example.com"]},
    ("patch", "/v1/webhooks/{webhook}"): {"url": "http://127.0.0.1:9/hijacked"},
    ("post", "/v1/webhooks/{webhook}/replay"): {},
    ("post", "/v1/webhooks/{webhook}/rotate"): {},
}


async def resources(fleet: Fleet) -> dict[str, str]:
    """``test``'s resources, by the path parameter names that take them."""
    workspace = await fleet.create_workspace("outreach")
    grant = await fleet.provision("help@example.com", workspace="outreach")
    message = await fleet.deliver(
        grant.id,
        b"From: ada@example.org\r\nTo: help@example.com\r\nSubject: private\r\n"
        b"Message-ID: <private-1@example.org>\r\n\r\nsecret body\r\n",
    )
    listed = await fleet.create_list("vip", "address")
    await fleet.add_list_items(listed.id, ["ada@example.org"])
    rule = await fleet.create_rule(
        {
            "name": "vip-first",
            "trigger": "inbound",
            "priority": 10,
            "conditions": [
                {"field": "sender_address", "operator": "in_list", "value": [listed.id]}
            ],
            "action": "mark_read",
        }
    )
    restriction = await fleet.restrict(grant.id, reason="held by test", by="test")
    await fleet.suppress("carol@example.org", detail="asked")
    found = {
        "domain": "example.com",
        "workspace": workspace.id,
        "grant": grant.id,
        "grant_id": grant.id,
        "message": message.id,
        "thread": message.thread_id or "",
        "index": "0",
        "list_id": listed.id,
        "rule_id": rule.id,
        "restriction": f"{restriction.kind}:{restriction.subject}",
        "address": "carol@example.org",
    }
    webhooks = getattr(fleet, "webhooks", None)
    if webhooks is not None and hasattr(webhooks, "create"):
        created = await webhooks.create("http://127.0.0.1:9/hook")
        hook = created[0] if isinstance(created, tuple) else created
        found["webhook"] = hook.id
    return found


async def state(fleet: Fleet, ids: dict[str, str]) -> dict[str, Any]:
    """What the operations must leave as it is."""
    grant = await fleet.grant(ids["grant"])
    workspace = await fleet.workspace(ids["workspace"])
    snapshot: dict[str, Any] = {
        "grant": (grant.status, grant.workspace, grant.address),
        "workspace": (workspace.name, workspace.policy),
        "messages": len(await fleet.messages(ids["grant"], limit=100)),
        "list": await fleet.list_items(ids["list_id"], limit=100),
        "rule": (await fleet.rule(ids["rule_id"])).priority,
        "restrictions": [(r.kind, r.subject) for r in await fleet.restrictions()],
        "suppressed": [s.address for s in await fleet.suppressions()],
        "outbox": await fleet.outbox_count(),
        "domains": [d.name for d in await fleet.domains()],
    }
    if "webhook" in ids:
        hook = await fleet.webhooks.get(ids["webhook"])
        snapshot["webhook"] = (hook.url, hook.status)
    return snapshot


def fill(path: str, ids: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1]
        assert name in ids, f"no resource of test for {{{name}}} in {path}: add one"
        return ids[name]

    return re.sub(r"\{([^}]+)\}", value, path)


async def test_another_applications_admin_key_reaches_nothing(api: ApiServer) -> None:
    fleet = api.fleet
    ids = await resources(fleet)
    before = await state(fleet, ids)
    intruder = await api.client(application="other", admin=True)
    document = (await api.anonymous().get("/openapi.json")).json()
    secrets = {v for k, v in ids.items() if k not in {"index", "domain"} and v}
    tried: list[str] = []
    for path, operations in document["paths"].items():
        if path in KEYLESS or path in OPERATOR:
            continue
        for method in operations:
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            if "{" not in path and method != "get":
                continue  # creations in the caller's own application: tested per resource
            if path == "/v1/events/stream":
                continue  # endless; its isolation is in tests/test_api_events.py
            url = fill(path, ids)
            body = BODIES.get((method, path))
            answer = await intruder.request(
                method.upper(), url, **({} if body is None else {"json": body})
            )
            tried.append(f"{method.upper()} {path}")
            where = f"{method.upper()} {url} answered {answer.status_code}: {answer.text[:300]}"
            if "{" in path:
                assert 400 <= answer.status_code < 500, where
                assert answer.status_code != 401, where
            else:
                assert answer.status_code == 200, where
                text = json.dumps(answer.json())
                leaked = [value for value in secrets if value in text]
                assert not leaked, f"{where}: names {leaked}"
                assert "help@example.com" not in text, where
    assert len(tried) >= 30, tried
    assert await state(fleet, ids) == before
