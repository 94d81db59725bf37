"""Domains, workspaces and grants over the HTTP API: a real uvicorn server on loopback,
on both backends. Every endpoint is also tried with a key of another application,
which sees nothing of ``test`` (404, empty lists) and changes nothing of it."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest

from apiserver import ApiServer, api_server
from dnsserver import DnsServer
from mailfleet import Fleet, GrantStatus
from mailfleet.model.records import DnsRecord
from support import publish

pytestmark = pytest.mark.anyio

DOMAIN = "example.com"  # registered to `test` by the fleet fixture
MX_HOST = "mx.example.net"


def problem(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    """``answer`` is a problem+json of ``status`` and ``code`` (blaming ``field``)."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == code, body
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field, body


async def everything(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, page after page."""
    items: list[dict[str, Any]] = []
    after = None
    while True:
        query = {**params, **({"after": after} if after is not None else {})}
        answer = await client.get(path, params=query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items.extend(page["items"])
        after = page["next_cursor"]
        if after is None:
            return items


# -- domains -----------------------------------------------------------------------------------


async def test_a_domain_is_registered_once_listed_and_paged(api: ApiServer) -> None:
    client = await api.client()
    made = await client.post("/v1/domains", json={"name": "Mail.Example.ORG."})
    assert made.status_code == 201, made.text
    domain = made.json()
    assert domain["name"] == "mail.example.org"
    assert (domain["state"], domain["authenticated"], domain["audit"]) == ("pending", False, None)
    assert {key["algorithm"] for key in domain["dkim_keys"]} == {"rsa", "ed25519"}
    assert {key["selector"] for key in domain["dkim_keys"]} == {"mailfleet", "mailfleet-ed25519"}
    rsa = next(key for key in domain["dkim_keys"] if key["algorithm"] == "rsa")
    assert rsa["record"]["name"] == "mailfleet._domainkey.mail.example.org"
    assert rsa["record"]["value"].startswith("v=DKIM1; k=rsa; p=")
    assert "".join(rsa["record"]["strings"]) == rsa["record"]["value"]
    assert "private" not in made.text.lower()

    again = await client.post("/v1/domains", json={"name": "mail.example.org"})
    assert again.status_code == 200
    assert again.json() == domain
    assert len(await api.fleet.events(type="domain.created")) == 2  # the fixture's and this one

    listed = await client.get("/v1/domains")
    assert [d["name"] for d in listed.json()["items"]] == ["example.com", "mail.example.org"]
    first = await client.get("/v1/domains", params={"limit": 1})
    assert [d["name"] for d in first.json()["items"]] == ["example.com"]
    assert first.json()["next_cursor"]
    assert [d["name"] for d in await everything(client, "/v1/domains", limit=1)] == [
        "example.com",
        "mail.example.org",
    ]
    assert (await client.get("/v1/domains", params={"state": "verified"})).json()["items"] == []
    problem(await client.get("/v1/domains", params={"state": "nonsense"}), 422, "validation_failed")
    problem(await client.get("/v1/domains", params={"limit": 0}), 422, "validation_failed", "limit")


async def test_a_domain_refused_says_which_field(api: ApiServer) -> None:
    client = await api.client()
    problem(
        await client.post("/v1/domains", json={"name": "not a domain"}),
        422,
        "invalid_input",
        "name",
    )
    problem(
        await client.post("/v1/domains", json={"name": "a@b.com"}), 422, "invalid_input", "name"
    )
    refused = await client.post("/v1/domains", json={"name": "ok.example", "selector": "bad sel!"})
    problem(refused, 422, "invalid_input", "selector")
    problem(await client.post("/v1/domains", json={}), 422, "validation_failed", "name")
    unknown = await client.post("/v1/domains", json={"name": "ok.example", "dkim": "x"})
    problem(unknown, 422, "validation_failed", "dkim")
    assert [d.name for d in await api.fleet.domains()] == [DOMAIN]


async def test_the_records_to_publish(api: ApiServer) -> None:
    client = await api.client()
    answer = await client.get(f"/v1/domains/{DOMAIN}/records")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["domain"] == DOMAIN
    expected = await api.fleet.domain_records(DOMAIN)
    assert body["records"] == [{"strings": None, **record.as_json()} for record in expected]
    purposes = [record["purpose"] for record in body["records"]]
    assert purposes[:2] == ["mx", "spf"]
    assert "dmarc" in purposes
    assert any(p.startswith("dkim:") for p in purposes)
    upper = await client.get(f"/v1/domains/{DOMAIN.upper()}/records")
    assert upper.json() == body
    problem(await client.get("/v1/domains/nowhere.example/records"), 404, "domain_not_found")


async def test_a_domain_of_another_application_is_invisible_and_taken(api: ApiServer) -> None:
    theirs = await api.client(application="other")
    assert (await theirs.get("/v1/domains")).json() == {"items": [], "next_cursor": None}
    problem(await theirs.get(f"/v1/domains/{DOMAIN}/records"), 404, "domain_not_found", "domain")
    problem(await theirs.post(f"/v1/domains/{DOMAIN}/check"), 404, "domain_not_found")
    taken = await theirs.post("/v1/domains", json={"name": DOMAIN})
    problem(taken, 409, "domain_taken", "domain")
    (domain,) = await api.fleet.domains()
    assert domain.application_id == api.fleet.application.id
    assert await api.others["other"].domains() == []


@pytest.fixture
async def dns_api(database_url: str, dns_server: DnsServer) -> AsyncIterator[ApiServer]:
    """The API over a fleet that asks the loopback DNS server (``dns_nameservers``)."""
    async with Fleet(
        database_url=database_url,
        application="test",
        dns_nameservers=[dns_server.address],
        dns_timeout=2,
        mx_host=MX_HOST,
        relay_addresses=["192.0.2.25"],
    ) as fleet:
        await fleet.add_domain(DOMAIN)
        async with api_server(fleet) as server:
            yield server


def records_of(body: dict[str, Any]) -> list[DnsRecord]:
    return [
        DnsRecord(r["name"], r["value"], r["type"], r["purpose"], r["required"])
        for r in body["records"]
    ]


async def test_a_check_over_real_dns_verifies_then_catches_a_drift(
    dns_api: ApiServer, dns_server: DnsServer
) -> None:
    client = await dns_api.client()
    records = records_of((await client.get(f"/v1/domains/{DOMAIN}/records")).json())
    publish(dns_server, records)

    answer = await client.post(f"/v1/domains/{DOMAIN}/check")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["domain"], report["state"]) == (DOMAIN, "verified")
    assert {check["name"]: check["status"] for check in report["checks"]} == {
        "mx": "pass",
        "spf": "pass",
        "dkim:mailfleet": "pass",
        "dkim:mailfleet-ed25519": "pass",
        "dmarc": "pass",
        "mta_sts": "pass",
        "tls_rpt": "pass",
    }
    spf = next(check for check in report["checks"] if check["name"] == "spf")
    assert spf["found"] == ["v=spf1 ip4:192.0.2.25 -all"]
    assert spf["fix"] is None
    (domain,) = (await client.get("/v1/domains")).json()["items"]
    assert (domain["state"], domain["authenticated"]) == ("verified", True)
    assert domain["audit"]["checks"] == report["checks"]
    assert domain["audited_at"]

    dns_server.set(f"_dmarc.{DOMAIN}", "TXT", [])  # the DMARC record is removed
    drifted = (await client.post(f"/v1/domains/{DOMAIN}/check")).json()
    assert drifted["state"] == "failed"
    dmarc = next(check for check in drifted["checks"] if check["name"] == "dmarc")
    assert dmarc["status"] == "fail"
    assert f"_dmarc.{DOMAIN}" in (dmarc["fix"] or "")
    assert dmarc["dns_error"] is None
    (domain,) = (await client.get("/v1/domains", params={"state": "failed"})).json()["items"]
    assert domain["name"] == DOMAIN

    theirs = await dns_api.client(application="other")
    problem(await theirs.post(f"/v1/domains/{DOMAIN}/check"), 404, "domain_not_found")
    problem(await client.post("/v1/domains/nowhere.example/check"), 404, "domain_not_found")


# -- workspaces ------------------------------------------------------------------------------


OUTREACH = {
    "name": "outreach",
    "policy": {"daily_send_quota": 200, "thresholds": {"bounce_pause": 0.08}},
    "patterns": ["*.leads.example.com", "sales.example.com"],
}


async def test_a_workspace_is_created_once_and_read_by_id_or_name(api: ApiServer) -> None:
    client = await api.client()
    made = await client.post("/v1/workspaces", json=OUTREACH)
    assert made.status_code == 201, made.text
    workspace = made.json()
    assert workspace["name"] == "outreach"
    assert workspace["is_default"] is False
    assert workspace["policy"]["daily_send_quota"] == 200
    assert workspace["policy"]["thresholds"]["bounce_pause"] == 0.08
    assert workspace["policy"]["thresholds"]["bounce_review"] == 0.05  # the default kept
    assert workspace["patterns"] == ["*.leads.example.com", "sales.example.com"]
    assert (workspace["grant_count"], workspace["policy_version"]) == (0, 1)

    same = await client.post("/v1/workspaces", json=OUTREACH)
    assert (same.status_code, same.json()) == (200, workspace)
    other_policy = {**OUTREACH, "policy": {"daily_send_quota": 300}}
    problem(await client.post("/v1/workspaces", json=other_policy), 409, "workspace_exists")

    by_id = await client.get(f"/v1/workspaces/{workspace['id']}")
    by_name = await client.get("/v1/workspaces/outreach")
    assert by_id.json() == by_name.json() == workspace
    problem(await client.get("/v1/workspaces/nothing"), 404, "workspace_not_found", "workspace")

    await client.post("/v1/workspaces", json={"name": "triage"})
    listed = await everything(client, "/v1/workspaces", limit=1)
    assert [w["name"] for w in listed] == ["default", "outreach", "triage"]
    assert listed[0]["is_default"] is True
    page = (await client.get("/v1/workspaces", params={"limit": 2})).json()
    assert [w["name"] for w in page["items"]] == ["default", "outreach"]
    rest = (await client.get("/v1/workspaces", params={"after": page["next_cursor"]})).json()
    assert [w["name"] for w in rest["items"]] == ["triage"]
    assert rest["next_cursor"] is None


async def test_an_invalid_policy_or_pattern_names_its_field(api: ApiServer) -> None:
    client = await api.client()
    cases = [
        ({"daily_send_quota": -1}, "invalid_policy", "policy.daily_send_quota"),
        ({"nonsense": 1}, "invalid_policy", "policy.nonsense"),
        ({"thresholds": {"bounce_pause": 0.5}}, "invalid_policy", "policy.thresholds.bounce_pause"),
        (
            {"inbox_retention_days": 10, "spam_retention_days": 20},
            "invalid_policy",
            "policy.inbox_retention_days",
        ),
    ]
    for policy, code, field in cases:
        answer = await client.post("/v1/workspaces", json={"name": "w", "policy": policy})
        problem(answer, 422, code, field)
        assert answer.json()["errors"][0]["field"] == field
    problem(
        await client.post("/v1/workspaces", json={"name": "w", "patterns": ["not a pattern!"]}),
        422,
        "invalid_pattern",
        "patterns",
    )
    problem(
        await client.post("/v1/workspaces", json={"name": ""}), 422, "validation_failed", "name"
    )
    problem(
        await client.post("/v1/workspaces", json={"name": "w", "colour": "red"}),
        422,
        "validation_failed",
        "colour",
    )
    await client.post("/v1/workspaces", json=OUTREACH)
    clash = await client.post(
        "/v1/workspaces", json={"name": "w", "patterns": ["sales.example.com"]}
    )
    problem(clash, 409, "pattern_in_use", "patterns")
    assert [w.name for w in await api.fleet.workspaces()] == ["default", "outreach"]


async def test_patch_changes_policy_and_patterns_together_or_not_at_all(api: ApiServer) -> None:
    client = await api.client()
    workspace = (await client.post("/v1/workspaces", json=OUTREACH)).json()
    path = f"/v1/workspaces/{workspace['id']}"
    grant = (
        await client.post(
            "/v1/grants", json={"address": f"a@{DOMAIN}", "workspace": workspace["id"]}
        )
    ).json()
    assert grant["policy"]["daily_send_quota"] == 200

    changed = await client.patch(path, json={"policy": {"thresholds": {"bounce_review": 0.03}}})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["policy"]["thresholds"] == {
        **workspace["policy"]["thresholds"],
        "bounce_review": 0.03,
    }
    assert body["policy"]["daily_send_quota"] == 200
    assert (body["policy_version"], body["grant_count"]) == (2, 1)

    body = (await client.patch(path, json={"patterns": ["new.example.com"]})).json()
    assert body["patterns"] == ["new.example.com"]
    assert body["policy_version"] == 2  # the policy untouched
    body = (
        await client.patch(
            "/v1/workspaces/outreach", json={"policy": {"daily_send_quota": 5}, "patterns": []}
        )
    ).json()
    assert (body["policy"]["daily_send_quota"], body["patterns"]) == (5, [])
    inherited = (await client.get(f"/v1/grants/{grant['id']}")).json()
    assert inherited["policy"] == body["policy"]  # by reference, at once

    refused = await client.patch(
        path, json={"policy": {"send_burst": 0}, "patterns": ["x.example"]}
    )
    problem(refused, 422, "invalid_policy", "policy.send_burst")
    await client.post("/v1/workspaces", json={"name": "triage", "patterns": ["taken.example"]})
    clash = await client.patch(
        path, json={"policy": {"daily_send_quota": 7}, "patterns": ["taken.example"]}
    )
    problem(clash, 409, "pattern_in_use", "patterns")
    unchanged = (await client.get(path)).json()
    assert unchanged == {**body, "grant_count": 1}  # neither refused change was applied
    problem(await client.patch(path, json={"name": "renamed"}), 422, "validation_failed", "name")
    problem(await client.patch("/v1/workspaces/nothing", json={}), 404, "workspace_not_found")
    updates = await api.fleet.events(type="workspace.policy_updated")
    assert len(updates) == 2


async def test_delete_only_an_empty_workspace_other_than_the_default(api: ApiServer) -> None:
    client = await api.client()
    empty = (await client.post("/v1/workspaces", json={"name": "empty"})).json()
    held = (await client.post("/v1/workspaces", json={"name": "held"})).json()
    await client.post("/v1/grants", json={"address": f"h@{DOMAIN}", "workspace": "held"})

    problem(await client.delete(f"/v1/workspaces/{held['id']}"), 409, "workspace_not_empty")
    problem(await client.delete("/v1/workspaces/default"), 409, "default_workspace_protected")
    problem(await client.delete("/v1/workspaces/nothing"), 404, "workspace_not_found")
    gone = await client.delete(f"/v1/workspaces/{empty['id']}")
    assert (gone.status_code, gone.content) == (204, b"")
    problem(await client.get(f"/v1/workspaces/{empty['id']}"), 404, "workspace_not_found")
    assert [w.name for w in await api.fleet.workspaces()] == ["default", "held"]


async def test_assign_moves_grants_in_bulk_and_pins_them(api: ApiServer) -> None:
    client = await api.client()
    await client.post("/v1/workspaces", json={"name": "target"})
    batch = await client.post(
        "/v1/grants/batch", json={"addresses": [f"m{n}@{DOMAIN}" for n in range(5)]}
    )
    ids = [result["grant"]["id"] for result in batch.json()["results"]]
    moved = await client.post(
        "/v1/workspaces/target/assign", json={"grants": [ids[0], ids[1], f"M2@{DOMAIN}"]}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"moved": 3}
    again = await client.post("/v1/workspaces/target/assign", json={"grants": [ids[0]]})
    assert again.json() == {"moved": 0}  # already there
    inside = await everything(client, "/v1/grants", workspace="target")
    assert sorted(g["id"] for g in inside) == sorted(ids[:3])
    assert all(g["pinned"] for g in inside)

    unknown = await client.post("/v1/workspaces/target/assign", json={"grants": [ids[3], "nope"]})
    problem(unknown, 404, "grant_not_found", "grants")
    assert (await api.fleet.grant(ids[3])).workspace == "default"  # nothing moved
    problem(
        await client.post("/v1/workspaces/nothing/assign", json={"grants": [ids[3]]}),
        404,
        "workspace_not_found",
    )
    too_many = {"grants": [f"g{n}" for n in range(10_001)]}
    problem(
        await client.post("/v1/workspaces/target/assign", json=too_many),
        422,
        "validation_failed",
        "grants",
    )
    problem(
        await client.post("/v1/workspaces/target/assign", json={"grants": []}),
        422,
        "validation_failed",
        "grants",
    )


async def test_regroup_applies_patterns_to_unpinned_grants(api: ApiServer) -> None:
    client = await api.client()
    await api.fleet.add_domain("leads.example.com")
    await client.post("/v1/grants", json={"address": "a@leads.example.com"})
    await client.post("/v1/grants", json={"address": "b@leads.example.com", "workspace": "default"})
    await client.post("/v1/workspaces", json={"name": "leads", "patterns": ["leads.example.com"]})
    regrouped = await client.post("/v1/workspaces/regroup")
    assert regrouped.status_code == 200
    assert regrouped.json()["moved"] == 1
    assert (regrouped.json()["total"], regrouped.json()["done"]) == (1, 1)  # b is pinned
    assert (await client.get("/v1/grants/a@leads.example.com")).json()["workspace"] == "leads"
    assert (await client.get("/v1/grants/b@leads.example.com")).json()["workspace"] == "default"
    assert (await client.post("/v1/workspaces/regroup")).json()["moved"] == 0


async def test_regroup_with_filters_answers_its_counts(api: ApiServer) -> None:
    client = await api.client()
    fleet = api.fleet
    await fleet.add_domain("leads.example.com")
    await fleet.add_domain("cold.example.com")
    await fleet.provision_many([f"old{i}@leads.example.com" for i in range(3)])
    await fleet.provision_many([f"c{i}@cold.example.com" for i in range(2)])
    cut = datetime.now(UTC)
    await anyio.sleep(0.01)
    await fleet.provision_many([f"new{i}@leads.example.com" for i in range(4)])
    await fleet.create_workspace("leads", patterns=["leads.example.com", "cold.example.com"])
    body = {"created_after": cut.isoformat(), "domain": "Leads.Example.com."}
    regrouped = await client.post("/v1/workspaces/regroup", json=body)
    assert regrouped.status_code == 200
    answer = regrouped.json()
    assert (answer["moved"], answer["total"], answer["done"]) == (4, 4, 4)
    assert answer["domain"] == "leads.example.com"
    (finished,) = await fleet.events(type="workspace.regroup_finished")
    assert finished.payload["job_id"] == answer["job_id"]
    assert await fleet.count_grants(workspace="leads") == 4
    only_cold = await client.post("/v1/workspaces/regroup", json={"domain": "cold.example.com"})
    assert only_cold.json()["moved"] == 2
    assert (await client.post("/v1/workspaces/regroup", json={})).json()["moved"] == 3
    problem(
        await client.post("/v1/workspaces/regroup", json={"domain": "nowhere.example"}),
        404,
        "domain_not_found",
        "domain",
    )
    problem(
        await client.post("/v1/workspaces/regroup", json={"created_after": "yesterday"}),
        422,
        "validation_failed",
        "created_after",
    )
    problem(
        await client.post("/v1/workspaces/regroup", json={"since": cut.isoformat()}),
        422,
        "validation_failed",
        "since",
    )
    theirs = await api.client(application="other")  # our domain is not theirs
    problem(
        await theirs.post("/v1/workspaces/regroup", json={"domain": "leads.example.com"}),
        404,
        "domain_not_found",
        "domain",
    )


async def test_workspaces_of_another_application_are_out_of_reach(api: ApiServer) -> None:
    mine, theirs = await api.client(), await api.client(application="other")
    workspace = (await mine.post("/v1/workspaces", json=OUTREACH)).json()
    grant = (await mine.post("/v1/grants", json={"address": f"x@{DOMAIN}"})).json()
    other = api.others["other"]
    await other.add_domain("other.example")
    await other.provision("y@other.example")
    await other.create_workspace("theirs", patterns=["x.example.com"])

    listed = (await theirs.get("/v1/workspaces")).json()["items"]
    assert [w["name"] for w in listed] == ["default", "theirs"]
    assert workspace["id"] not in {w["id"] for w in listed}
    for key in (workspace["id"], "outreach"):
        path = f"/v1/workspaces/{key}"
        problem(await theirs.get(path), 404, "workspace_not_found")
        problem(
            await theirs.patch(path, json={"policy": {"daily_send_quota": 1}}),
            404,
            "workspace_not_found",
        )
        problem(await theirs.delete(path), 404, "workspace_not_found")
        problem(
            await theirs.post(f"{path}/assign", json={"grants": ["y@other.example"]}),
            404,
            "workspace_not_found",
        )
    for key in (grant["id"], f"x@{DOMAIN}"):  # their workspace, our grant
        problem(
            await theirs.post("/v1/workspaces/theirs/assign", json={"grants": [key]}),
            404,
            "grant_not_found",
        )
    # Their pattern "x.example.com" captures none of ours: their regroup moves nothing of ours.
    assert (await theirs.post("/v1/workspaces/regroup")).json()["moved"] == 0
    # Their default is theirs: the same name, another workspace; a pattern of ours is free for them.
    same_name = await theirs.post("/v1/workspaces", json={**OUTREACH})
    assert same_name.status_code == 201
    assert same_name.json()["id"] != workspace["id"]

    ours = await api.fleet.workspace("outreach")
    assert (ours.policy.daily_send_quota, ours.patterns) == (200, tuple(OUTREACH["patterns"]))
    assert (await api.fleet.grant(grant["id"])).workspace == "default"


# -- grants ----------------------------------------------------------------------------------


async def test_one_call_provisions_a_complete_identity(api: ApiServer) -> None:
    client = await api.client()
    await client.post("/v1/workspaces", json=OUTREACH)
    wanted = {
        "address": f"Support@{DOMAIN.upper()}",
        "workspace": "outreach",
        "agent": "helpdesk:Helpdesk",
        "metadata": {"team": "emea", "tier": 2},
    }
    made = await client.post("/v1/grants", json=wanted)
    assert made.status_code == 201, made.text
    grant = made.json()
    assert grant["address"] == f"support@{DOMAIN}"
    assert (grant["domain"], grant["workspace"], grant["pinned"]) == (DOMAIN, "outreach", True)
    assert (grant["status"], grant["agent"]) == ("active", "helpdesk:Helpdesk")
    assert grant["metadata"] == {"team": "emea", "tier": 2}
    assert grant["policy"]["daily_send_quota"] == 200  # the effective policy: its workspace's
    assert grant["policy"]["thresholds"]["bounce_pause"] == 0.08
    assert grant["stored_bytes"] == 0
    assert grant["created_at"].endswith(("Z", "+00:00"))

    again = await client.post(
        "/v1/grants", json={"address": f"support@{DOMAIN}", "metadata": {"other": True}}
    )
    assert again.status_code == 200
    assert again.json() == grant  # the existing grant, unchanged
    (event,) = await api.fleet.events(type="grant.created")
    assert event.grant_id == grant["id"]

    by_id = await client.get(f"/v1/grants/{grant['id']}")
    by_address = await client.get(f"/v1/grants/SUPPORT@{DOMAIN}")
    assert by_id.json() == by_address.json() == grant


async def test_patterns_choose_the_workspace_unless_one_is_given(api: ApiServer) -> None:
    client = await api.client()
    await api.fleet.add_domain("eu.leads.example.com")
    await client.post("/v1/workspaces", json=OUTREACH)
    routed = (await client.post("/v1/grants", json={"address": "a@eu.leads.example.com"})).json()
    assert (routed["workspace"], routed["pinned"]) == ("outreach", False)
    plain = (await client.post("/v1/grants", json={"address": f"b@{DOMAIN}"})).json()
    assert (plain["workspace"], plain["policy"]["daily_send_quota"]) == ("default", 1000)


async def test_provisioning_refusals_have_precise_codes(api: ApiServer) -> None:
    client = await api.client()
    cases = [
        ({"address": "not an address"}, 422, "invalid_address", "address"),
        ({"address": "a@unregistered.example"}, 404, "domain_not_found", "address"),
        (
            {"address": f"a@{DOMAIN}", "workspace": "nothing"},
            404,
            "workspace_not_found",
            "workspace",
        ),
        (
            {"address": f"a@{DOMAIN}", "metadata": ["not", "an", "object"]},
            422,
            "validation_failed",
            "metadata",
        ),
        ({"address": f"a@{DOMAIN}", "owner": "me"}, 422, "validation_failed", "owner"),
        ({}, 422, "validation_failed", "address"),
    ]
    for body, status, code, field in cases:
        problem(await client.post("/v1/grants", json=body), status, code, field)
    not_json = await client.post(
        "/v1/grants", content=b"{", headers={"content-type": "application/json"}
    )
    problem(not_json, 422, "validation_failed")
    assert await api.fleet.count_grants() == 0
    assert await api.fleet.events(type="grant.created") == []


async def test_a_batch_gives_one_result_per_address(api: ApiServer) -> None:
    client = await api.client()
    await client.post("/v1/grants", json={"address": f"old@{DOMAIN}"})
    await client.post("/v1/workspaces", json={"name": "bulk", "policy": {"daily_send_quota": 50}})
    given = [
        f"new1@{DOMAIN}",
        f"old@{DOMAIN}",
        "broken",
        "x@unregistered.example",
        f"NEW1@{DOMAIN}",  # the same address again
        f"new2@{DOMAIN}",
    ]
    answer = await client.post(
        "/v1/grants/batch",
        json={"addresses": given, "workspace": "bulk", "agent": "a:B", "metadata": {"k": 1}},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["address"] for r in body["results"]] == given
    assert [r["outcome"] for r in body["results"]] == [
        "created",
        "existing",
        "invalid",
        "invalid",
        "created",
        "created",
    ]
    assert (body["created"], body["existing"], body["invalid"]) == (3, 1, 2)
    broken, unregistered = body["results"][2], body["results"][3]
    assert (broken["code"], broken["grant"]) == ("invalid_address", None)
    assert "broken" in broken["reason"]
    assert unregistered["code"] == "domain_not_found"
    assert "unregistered.example" in unregistered["reason"]
    new1, old = body["results"][0]["grant"], body["results"][1]["grant"]
    assert body["results"][4]["grant"] == new1
    assert (new1["workspace"], new1["agent"], new1["metadata"]) == ("bulk", "a:B", {"k": 1})
    assert old["workspace"] == "default"  # an existing grant stays where it is
    assert "policy" not in new1
    assert body["policies"][new1["workspace_id"]]["daily_send_quota"] == 50
    assert body["policies"][old["workspace_id"]]["daily_send_quota"] == 1000
    assert len(await api.fleet.events(type="grant.created")) == 3


async def test_a_batch_takes_ten_thousand_and_refuses_more(api: ApiServer) -> None:
    client = await api.client()
    many = [f"agent-{n:05d}@{DOMAIN}" for n in range(10_000)]
    answer = await client.post("/v1/grants/batch", json={"addresses": many})
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == 10_000
    assert await api.fleet.count_grants() == 10_000
    refused = await client.post(
        "/v1/grants/batch", json={"addresses": [*many, f"one-more@{DOMAIN}"]}
    )
    problem(refused, 422, "validation_failed", "addresses")
    problem(
        await client.post("/v1/grants/batch", json={"addresses": []}),
        422,
        "validation_failed",
        "addresses",
    )
    problem(
        await client.post("/v1/grants/batch", json={"addresses": many[:1], "workspace": "nothing"}),
        404,
        "workspace_not_found",
    )
    assert await api.fleet.count_grants() == 10_000


async def test_grants_are_listed_with_filters_and_pages(api: ApiServer) -> None:
    client = await api.client()
    await client.post("/v1/workspaces", json={"name": "bulk"})
    await client.post("/v1/grants/batch", json={"addresses": [f"d{n}@{DOMAIN}" for n in range(7)]})
    await client.post(
        "/v1/grants/batch",
        json={
            "addresses": [f"b{n}@{DOMAIN}" for n in range(5)],
            "workspace": "bulk",
            "agent": "x:Y",
        },
    )
    await api.fleet.set_grant_status(f"d3@{DOMAIN}", GrantStatus.PAUSED)

    every = await everything(client, "/v1/grants", limit=4)
    assert len(every) == 12
    assert [g["address"] for g in every] == sorted(g["address"] for g in every)
    assert all("policy" in g for g in every)
    in_bulk = await everything(client, "/v1/grants", workspace="bulk", limit=2)
    assert {g["address"] for g in in_bulk} == {f"b{n}@{DOMAIN}" for n in range(5)}
    ws_id = in_bulk[0]["workspace_id"]
    assert len(await everything(client, "/v1/grants", workspace=ws_id)) == 5
    assert [g["address"] for g in await everything(client, "/v1/grants", status="paused")] == [
        f"d3@{DOMAIN}"
    ]
    agents = await everything(client, "/v1/grants", agent="x:Y", status="active")
    assert len(agents) == 5
    page = (await client.get("/v1/grants", params={"limit": 12})).json()
    assert (len(page["items"]), page["next_cursor"]) == (12, None)
    problem(
        await client.get("/v1/grants", params={"status": "sleepy"}),
        422,
        "validation_failed",
        "status",
    )
    problem(
        await client.get("/v1/grants", params={"workspace": "nothing"}), 404, "workspace_not_found"
    )
    problem(
        await client.get("/v1/grants", params={"limit": 1001}), 422, "validation_failed", "limit"
    )


async def test_delete_tears_a_grant_down(api: ApiServer) -> None:
    client = await api.client()
    grant = (await client.post("/v1/grants", json={"address": f"bye@{DOMAIN}"})).json()
    gone = await client.delete(f"/v1/grants/{grant['id']}")
    assert (gone.status_code, gone.content) == (204, b"")
    problem(await client.get(f"/v1/grants/{grant['id']}"), 404, "grant_not_found", "grant")
    problem(await client.delete(f"/v1/grants/{grant['id']}"), 404, "grant_not_found")
    problem(await client.delete("/v1/grants/nobody@example.com"), 404, "grant_not_found")
    (event,) = await api.fleet.events(type="grant.deleted")
    assert event.grant_id == grant["id"]
    again = await client.post("/v1/grants", json={"address": f"bye@{DOMAIN}"})
    assert again.status_code == 201
    assert again.json()["id"] != grant["id"]


async def test_grants_of_another_application_are_out_of_reach(api: ApiServer) -> None:
    mine, theirs = await api.client(), await api.client(application="other")
    ours = (await mine.post("/v1/grants", json={"address": f"mine@{DOMAIN}"})).json()
    default = (await mine.get("/v1/workspaces/default")).json()
    other = api.others["other"]
    await other.add_domain("other.example")

    assert (await theirs.get("/v1/grants")).json() == {"items": [], "next_cursor": None}
    assert (await theirs.get("/v1/grants", params={"status": "active"})).json()["items"] == []
    problem(
        await theirs.get("/v1/grants", params={"workspace": default["id"]}),
        404,
        "workspace_not_found",
    )
    for key in (ours["id"], f"mine@{DOMAIN}"):
        problem(await theirs.get(f"/v1/grants/{key}"), 404, "grant_not_found")
        problem(await theirs.delete(f"/v1/grants/{key}"), 404, "grant_not_found")
    # Not into our domain, nor into our workspaces.
    problem(
        await theirs.post("/v1/grants", json={"address": f"spy@{DOMAIN}"}), 404, "domain_not_found"
    )
    problem(
        await theirs.post("/v1/grants", json={"address": f"mine@{DOMAIN}"}), 404, "domain_not_found"
    )
    into_ours = {"address": "a@other.example", "workspace": default["id"]}
    problem(await theirs.post("/v1/grants", json=into_ours), 404, "workspace_not_found")
    batch = await theirs.post(
        "/v1/grants/batch", json={"addresses": [f"spy@{DOMAIN}", "b@other.example"]}
    )
    assert [(r["outcome"], r["code"]) for r in batch.json()["results"]] == [
        ("invalid", "domain_not_found"),
        ("created", None),
    ]
    problem(
        await theirs.post(
            "/v1/grants/batch", json={"addresses": ["c@other.example"], "workspace": default["id"]}
        ),
        404,
        "workspace_not_found",
    )
    assert [g.address for g in await api.fleet.grants()] == [f"mine@{DOMAIN}"]
    assert (await mine.get(f"/v1/grants/{ours['id']}")).json() == ours
    assert [g.address for g in await other.grants()] == ["b@other.example"]


async def test_a_batch_answer_matches_its_schema(api: ApiServer) -> None:
    from mailfleet.api.routes.grants import BatchOut

    client = await api.client()
    answer = await client.post("/v1/grants/batch", json={"addresses": [f"s@{DOMAIN}", "bad"]})
    body = answer.json()
    assert BatchOut.model_validate(body).model_dump(mode="json") == body
    single = (await client.get(f"/v1/grants/s@{DOMAIN}")).json()
    summary = {key: value for key, value in single.items() if key != "policy"}
    assert body["results"][0]["grant"] == summary  # the same JSON as a single grant's


async def test_a_kept_alive_connection_is_not_held_by_nagle(api: ApiServer) -> None:
    """Each accepted connection has TCP_NODELAY: without it, the body of every answer waited
    for the client's delayed ACK (40 ms on Linux), whatever the work behind it."""
    client = await api.client()
    timings = []
    for _ in range(15):
        with anyio.fail_after(10):
            started = time.perf_counter()
            assert (await client.get("/v1/me")).status_code == 200
            timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.030, timings


async def test_a_nul_character_is_refused_not_a_server_error(api: ApiServer) -> None:
    """PostgreSQL stores no NUL, in text or JSON: the API refuses one wherever it comes."""
    client = await api.client()
    problem(await client.get("/v1/workspaces/a%00b"), 422, "validation_failed", "path")
    problem(await client.get("/v1/grants/a%00b@example.com"), 422, "validation_failed", "path")
    problem(
        await client.get("/v1/grants", params={"after": "a\x00"}), 422, "validation_failed", "query"
    )
    problem(
        await client.get("/v1/grants", params={"agent": "\x00"}), 422, "validation_failed", "query"
    )
    cases = [
        ("/v1/workspaces", {"name": "a\x00b"}, "name"),
        ("/v1/workspaces", {"name": "w", "policy": {"x\x00": 1}}, "policy"),
        ("/v1/workspaces", {"name": "w", "patterns": ["a\x00.example"]}, "patterns"),
        ("/v1/grants", {"address": f"a@{DOMAIN}", "metadata": {"k": ["\x00"]}}, "metadata"),
        ("/v1/grants", {"address": f"a\x00@{DOMAIN}"}, "address"),
        ("/v1/grants/batch", {"addresses": [f"a@{DOMAIN}", "\x00"]}, "addresses"),
        ("/v1/domains", {"name": "a\x00.example"}, "name"),
    ]
    for path, body, field in cases:
        problem(await client.post(path, json=body), 422, "validation_failed", field)
    assert await api.fleet.count_grants() == 0
    assert [w.name for w in await api.fleet.workspaces()] == ["default"]


async def test_concurrent_calls_share_transactions_and_keep_each_answer(api: ApiServer) -> None:
    """Single provisionings that arrive together are committed together: each caller still
    gets its own answer (one 201 for an address asked many times, the others 200; an
    unknown workspace refuses its own callers only)."""
    client = await api.client()
    await client.post("/v1/workspaces", json={"name": "team"})
    answers: dict[str, list[httpx.Response]] = {"same": [], "many": [], "lost": []}

    async def post(kind: str, body: dict[str, Any]) -> None:
        answers[kind].append(await client.post("/v1/grants", json=body))

    async with anyio.create_task_group() as tg:
        for n in range(12):
            tg.start_soon(post, "same", {"address": f"shared@{DOMAIN}", "metadata": {"n": n}})
            tg.start_soon(post, "many", {"address": f"own{n}@{DOMAIN}", "workspace": "team"})
            tg.start_soon(post, "lost", {"address": f"lost{n}@{DOMAIN}", "workspace": "gone"})
    same = sorted(answer.status_code for answer in answers["same"])
    assert same == [200] * 11 + [201]
    assert len({answer.json()["id"] for answer in answers["same"]}) == 1
    assert len({str(answer.json()["metadata"]) for answer in answers["same"]}) == 1
    assert sorted(a.status_code for a in answers["many"]) == [201] * 12
    assert {a.json()["workspace"] for a in answers["many"]} == {"team"}
    for answer in answers["lost"]:
        problem(answer, 404, "workspace_not_found")
    assert await api.fleet.count_grants() == 13
    assert len(await api.fleet.events(type="grant.created")) == 13
