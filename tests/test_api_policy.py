"""``/v1/lists``, ``/v1/rules`` and ``/v1/grants/{id}/rule-evaluations`` over the real
server: per-entry results, problem codes, and a key of ``other`` seeing nothing of ``test``."""

from __future__ import annotations

from typing import Any

import pytest

from apiserver import ApiServer
from mailfleet import SendStatus

pytestmark = pytest.mark.anyio


def rule_body(list_id: str, **values: Any) -> dict[str, Any]:
    return {
        "name": "blocked senders",
        "trigger": "inbound",
        "action": "block",
        "conditions": [{"field": "sender_address", "operator": "in_list", "value": [list_id]}],
        **values,
    }


async def test_lists_and_their_items(api: ApiServer) -> None:
    client = await api.client()
    made = await client.post("/v1/lists", json={"name": "blocked", "type": "address"})
    assert made.status_code == 201
    list_id = made.json()["id"]
    assert made.json()["size"] == 0
    taken = await client.post("/v1/lists", json={"name": "blocked", "type": "domain"})
    assert (taken.status_code, taken.json()["code"]) == (409, "list_exists")
    wrong = await client.post("/v1/lists", json={"name": "x", "type": "colour"})
    assert (wrong.status_code, wrong.json()["code"]) == (422, "validation_failed")

    items = ["Ada@Example.org", "bob@example.org", "ada@example.org"]
    added = await client.post(f"/v1/lists/{list_id}/items", json={"items": items})
    assert added.status_code == 200
    body = added.json()
    assert [(i["normalized"], i["status"]) for i in body["items"]] == [
        ("ada@example.org", "added"),
        ("bob@example.org", "added"),
        ("ada@example.org", "duplicate"),
    ]
    assert (body["size"], body["changed"]) == (2, 2)

    bad = await client.post(
        f"/v1/lists/{list_id}/items", json={"items": ["carl@example.org", "nope", "x@"]}
    )
    assert bad.status_code == 422
    problem = bad.json()
    assert problem["code"] == "invalid_list_items"
    assert [(e["field"], e["value"]) for e in problem["errors"]] == [
        ("items[1]", "nope"),
        ("items[2]", "x@"),
    ]
    assert (await client.get(f"/v1/lists/{list_id}")).json()["size"] == 2  # nothing applied

    removed = await client.request(
        "DELETE", f"/v1/lists/{list_id}/items", json={"items": ["BOB@example.org", "z@example.org"]}
    )
    assert [i["status"] for i in removed.json()["items"]] == ["removed", "absent"]
    too_many = await client.post(
        f"/v1/lists/{list_id}/items", json={"items": ["a@example.org"] * 10_001}
    )
    assert (too_many.status_code, too_many.json()["code"]) == (422, "validation_failed")

    listed = (await client.get("/v1/lists", params={"limit": 1})).json()
    assert [x["id"] for x in listed["items"]] == [list_id]
    assert listed["next_cursor"] is None
    assert (await client.get("/v1/lists/blocked")).json()["id"] == list_id  # by name too

    gone = await client.delete(f"/v1/lists/{list_id}")
    assert gone.status_code == 204
    missing = await client.get(f"/v1/lists/{list_id}")
    assert (missing.status_code, missing.json()["code"]) == (404, "list_not_found")


async def test_rules_their_errors_and_a_list_in_use(api: ApiServer) -> None:
    client = await api.client()
    list_id = (await client.post("/v1/lists", json={"name": "b", "type": "address"})).json()["id"]
    made = await client.post("/v1/rules", json=rule_body(list_id))
    assert made.status_code == 201
    rule = made.json()
    assert rule["conditions"][0]["value"] == [list_id]
    assert rule["workspace_id"] is None

    in_use = await client.delete(f"/v1/lists/{list_id}")
    assert (in_use.status_code, in_use.json()["code"]) == (409, "list_in_use")
    unknown_list = await client.post("/v1/rules", json=rule_body("no-such-list"))
    assert unknown_list.status_code == 404
    assert unknown_list.json()["code"] == "list_not_found"
    assert unknown_list.json()["field"] == "conditions[0].value"
    no_folder = await client.post("/v1/rules", json=rule_body(list_id, action="assign_folder"))
    assert (no_folder.status_code, no_folder.json()["code"]) == (422, "invalid_input")
    assert no_folder.json()["field"] == "folder"
    lost = await client.post("/v1/rules", json=rule_body(list_id, workspace="nowhere"))
    assert (lost.status_code, lost.json()["code"]) == (404, "workspace_not_found")

    patched = await client.patch(f"/v1/rules/{rule['id']}", json={"priority": 7})
    assert patched.status_code == 200
    assert (patched.json()["priority"], patched.json()["action"]) == (7, "block")
    listed = (await client.get("/v1/rules", params={"trigger": "inbound"})).json()
    assert [r["id"] for r in listed["items"]] == [rule["id"]]
    assert (await client.get("/v1/rules", params={"trigger": "outbound"})).json()["items"] == []
    assert (await client.delete(f"/v1/rules/{rule['id']}")).status_code == 204
    missing = await client.get(f"/v1/rules/{rule['id']}")
    assert (missing.status_code, missing.json()["code"]) == (404, "rule_not_found")
    assert (await client.delete(f"/v1/lists/{list_id}")).status_code == 204


async def test_a_blocked_send_is_recorded_and_listed_for_its_grant(api: ApiServer) -> None:
    fleet = api.fleet
    grant = await fleet.provision("sales@example.com")
    client = await api.client()
    rule = await client.post(
        "/v1/rules",
        json={
            "name": "no rivals",
            "trigger": "outbound",
            "action": "block",
            "conditions": [
                {"field": "recipient_domain", "operator": "is", "value": "rival.example"}
            ],
        },
    )
    assert rule.status_code == 201
    for _ in range(2):
        result = await fleet.send(grant, "ceo@rival.example", subject="Offer", text="Hi.")
        assert result.status is SendStatus.BLOCKED_BY_RULE
    page = (await client.get(f"/v1/grants/{grant.id}/rule-evaluations", params={"limit": 1})).json()
    (first,) = page["items"]
    assert (first["rule_id"], first["action"], first["trigger"]) == (
        rule.json()["id"],
        "block",
        "outbound",
    )
    assert page["next_cursor"] == str(first["id"])
    rest = await client.get(
        f"/v1/grants/{grant.id}/rule-evaluations", params={"after": page["next_cursor"]}
    )
    assert len(rest.json()["items"]) == 1
    assert rest.json()["next_cursor"] is None
    missing = await client.get("/v1/grants/nobody/rule-evaluations")
    assert (missing.status_code, missing.json()["code"]) == (404, "grant_not_found")


async def test_the_dry_run(api: ApiServer) -> None:
    fleet = api.fleet
    grant = await fleet.provision("desk@example.com")
    for subject in ("Invoice 7", "Hello"):
        raw = f"From: ada@example.org\r\nSubject: {subject}\r\n\r\nHi\r\n".encode()
        await fleet.deliver(grant, raw)
    client = await api.client()
    rule = {
        "name": "invoices",
        "trigger": "inbound",
        "action": "mark_spam",
        "conditions": [{"field": "subject", "operator": "contains", "value": "invoice"}],
    }
    answer = await client.post("/v1/rules/dry-run", json={"rule": rule, "grant": grant.id})
    assert answer.status_code == 200
    assert [(i["subject"], i["outcome"]) for i in answer.json()["items"]] == [
        ("Hello", "no match"),
        ("Invoice 7", "folder spam"),
    ]
    by_workspace = await client.post(
        "/v1/rules/dry-run", json={"rule": rule, "workspace": "default", "limit": 1}
    )
    assert len(by_workspace.json()["items"]) == 1
    neither = await client.post("/v1/rules/dry-run", json={"rule": rule})
    assert (neither.status_code, neither.json()["code"]) == (422, "invalid_input")
    assert (await client.get("/v1/rules")).json()["items"] == []


async def test_a_key_of_another_application_sees_and_changes_nothing(api: ApiServer) -> None:
    mine, theirs = await api.client(), await api.client(application="other")
    grant = await api.fleet.provision("desk@example.com")
    list_id = (await mine.post("/v1/lists", json={"name": "b", "type": "tld"})).json()["id"]
    await mine.post(f"/v1/lists/{list_id}/items", json={"items": ["zz"]})
    rule_id = (await mine.post("/v1/rules", json=rule_body(list_id, name="r"))).json()
    rule_id = rule_id["id"]
    rule = rule_body(list_id)
    rule["conditions"][0]["field"] = "sender_tld"
    await api.fleet.send(grant, "x@example.org", subject="s", text="t")

    assert (await theirs.get("/v1/lists")).json()["items"] == []
    assert (await theirs.get("/v1/rules")).json()["items"] == []
    for method, path, body in [
        ("GET", f"/v1/lists/{list_id}", None),
        ("DELETE", f"/v1/lists/{list_id}", None),
        ("POST", f"/v1/lists/{list_id}/items", {"items": ["yy"]}),
        ("DELETE", f"/v1/lists/{list_id}/items", {"items": ["zz"]}),
    ]:
        answer = await theirs.request(method, path, json=body)
        assert (answer.status_code, answer.json()["code"]) == (404, "list_not_found"), path
    for method, path, body in [
        ("GET", f"/v1/rules/{rule_id}", None),
        ("PATCH", f"/v1/rules/{rule_id}", {"priority": 1}),
        ("DELETE", f"/v1/rules/{rule_id}", None),
    ]:
        answer = await theirs.request(method, path, json=body)
        assert (answer.status_code, answer.json()["code"]) == (404, "rule_not_found"), path
    # their rule cannot name our list, their dry run cannot read our grant
    refused = await theirs.post("/v1/rules", json=rule)
    assert (refused.status_code, refused.json()["code"]) == (404, "list_not_found")
    dry = await theirs.post(
        "/v1/rules/dry-run",
        json={
            "rule": {**rule, "conditions": [{"field": "subject", "operator": "is", "value": "s"}]},
            "grant": grant.id,
        },
    )
    assert (dry.status_code, dry.json()["code"]) == (404, "grant_not_found")
    evaluations = await theirs.get(f"/v1/grants/{grant.id}/rule-evaluations")
    assert (evaluations.status_code, evaluations.json()["code"]) == (404, "grant_not_found")
    assert (await mine.get(f"/v1/lists/{list_id}")).json()["size"] == 1  # all still there
    assert (await mine.get(f"/v1/rules/{rule_id}")).json()["priority"] == 100
