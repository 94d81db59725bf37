"""Sending and reading mail over the HTTP API, the suppression list, reputation and the
operator's acts: every refusal code produced as the runtime produces it, and a key of
another application seeing and changing nothing of ``test``'s, on every endpoint."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from apiserver import ApiServer, api_server
from mailfleet import Fleet, Grant, GrantStatus
from mailfleet.mail.parse import parse_message
from mailfleet.model.outbound import OutgoingMail
from mailfleet.store.scope import Tx

pytestmark = pytest.mark.anyio

OPEN = {"warmup": {"grant": [], "domain": []}, "breaker": {"enabled": False}}
SENDER = "sales@example.com"
PDF = b"%PDF-1.4 not really\x00\x01\x02"


def inbound(n: int, *, refers: str | None = None, subject: str = "Question") -> bytes:
    head = f"From: Ada <ada{n}@example.org>\r\nTo: {SENDER}\r\nSubject: {subject}\r\n"
    head += f"Message-ID: <q{n}@example.org>\r\n"
    if refers:
        head += f"In-Reply-To: {refers}\r\nReferences: {refers}\r\n"
    return (head + f"\r\nQuestion number {n}.\r\n").encode()


async def sender(fleet: Fleet, policy: dict[str, Any] | None = None) -> Grant:
    await fleet.create_workspace("outreach", policy={**OPEN, **(policy or {})})
    return await fleet.provision(SENDER, workspace="outreach")


async def other_grant(api: ApiServer) -> Grant:
    other = api.others["other"]
    await other.add_domain("other.example")
    return await other.provision("desk@other.example")


def message(**changes: Any) -> dict[str, Any]:
    return {"to": ["someone@example.org"], "subject": "Offer", "text": "Hello.", **changes}


def problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


# -- sending -------------------------------------------------------------------------------


async def test_a_send_is_queued_and_reads_back_with_every_part(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    client = await api.client()
    answer = await client.post(
        f"/v1/grants/{SENDER}/messages",
        json=message(
            cc=["copy@example.org"],
            bcc=["hidden@example.org"],
            reply_to=["replies@example.com"],
            html="<p>Hello.</p>",
            headers={"X-Campaign": "spring"},
            attachments=[
                {
                    "filename": "offer.pdf",
                    "content": base64.b64encode(PDF).decode(),
                    "content_type": "application/pdf",
                }
            ],
        ),
    )
    assert answer.status_code == 202, answer.text
    queued = answer.json()
    assert queued["status"] == "queued"
    assert queued["grant_id"] == grant.id
    assert queued["send_at"] is None
    assert queued["message_id"].endswith("@example.com>")
    assert answer.headers["location"] == f"/v1/grants/{grant.id}/messages/{queued['id']}"

    (outbound,) = await api.fleet.outbox()
    assert set(outbound.recipients) == {
        "someone@example.org",
        "copy@example.org",
        "hidden@example.org",
    }

    read = await client.get(answer.headers["location"])
    assert read.status_code == 200
    detail = read.json()
    assert (detail["direction"], detail["folder"], detail["delivery"]) == ("out", "sent", "pending")
    assert detail["thread_id"] == queued["thread_id"]
    headers = {h["name"].lower(): h["value"] for h in detail["headers"]}
    assert headers["cc"] == "copy@example.org"
    assert headers["reply-to"] == "replies@example.com"
    assert headers["x-campaign"] == "spring"
    assert "bcc" not in headers
    assert "hidden@example.org" not in str(detail["headers"])
    assert detail["text"].strip() == "Hello."
    assert detail["html"].strip() == "<p>Hello.</p>"
    (attachment,) = detail["attachments"]
    assert attachment == {
        "index": 0,
        "filename": "offer.pdf",
        "content_type": "application/pdf",
        "size": len(PDF),
        "content_id": None,
        "inline": False,
    }

    raw = await client.get(answer.headers["location"], params={"format": "raw"})
    assert raw.headers["content-type"] == "message/rfc822"
    assert b"DKIM-Signature:" in raw.content  # as signed
    assert parse_message(raw.content).message_id == queued["message_id"]
    accepted = await client.get(answer.headers["location"], headers={"Accept": "message/rfc822"})
    assert accepted.content == raw.content

    content = await client.get(f"{answer.headers['location']}/attachments/0")
    assert content.status_code == 200
    assert content.content == PDF
    assert content.headers["content-type"] == "application/pdf"
    assert "offer.pdf" in content.headers["content-disposition"]
    problem(
        await client.get(f"{answer.headers['location']}/attachments/1"),
        404,
        "attachment_not_found",
    )


async def test_every_refusal_is_its_problem(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    client = await api.client()
    url = f"/v1/grants/{grant.id}/messages"

    body = problem(
        await client.post(url, json=message(to=["not an address"])), 400, "invalid_recipient"
    )
    assert "not an address" in body["detail"]

    await api.fleet.suppress("gone@example.org", reason="hard_bounce", detail="550 no such user")
    body = problem(
        await client.post(url, json=message(to=["ok@example.org"], bcc=["gone@example.org"])),
        400,
        "recipient_suppressed",
    )
    assert body["suppressed"] == [
        {
            "address": "gone@example.org",
            "reason": "hard_bounce",
            "detail": "550 no such user",
            "workspace": None,
        }
    ]

    def no_rivals(tx: Tx, mail: OutgoingMail) -> str | None:
        return "no mail to rivals" if any("rival" in r for r in mail.recipients) else None

    api.fleet.add_outbound_rule(no_rivals)
    body = problem(
        await client.post(url, json=message(to=["ceo@rival.example"])), 403, "blocked_by_rule"
    )
    assert "no mail to rivals" in body["detail"]

    body = problem(
        await client.post(url, json=message(subject="Hi\r\nBcc: everyone@example.org")),
        422,
        "message_rejected",
    )
    assert "subject" in body["detail"]

    await api.fleet.set_grant_status(grant.id, GrantStatus.RESTRICTED)
    problem(await client.post(url, json=message()), 403, "grant_restricted")
    await api.fleet.set_grant_status(grant.id, GrantStatus.PAUSED)
    body = problem(await client.post(url, json=message()), 400, "grant_paused")
    assert "reinstate" in body["detail"]
    await api.fleet.set_grant_status(grant.id, GrantStatus.ACTIVE)

    problem(
        await client.post("/v1/grants/nobody@example.com/messages", json=message()),
        404,
        "grant_not_found",
    )
    problem(
        await client.post(url, json=message(in_reply_to="no-such-message")),
        404,
        "message_not_found",
    )
    invalid = problem(await client.post(url, json=message(surprise=1)), 422, "validation_failed")
    assert invalid["field"] == "surprise"
    bad = message(attachments=[{"filename": "a.bin", "content": "not base64!"}])
    assert problem(await client.post(url, json=bad), 422, "validation_failed")["field"] == (
        "attachments.0.content"
    )
    assert await api.fleet.outbox() == []  # nothing of these was queued
    assert (await client.post(url, json=message())).status_code == 202


async def test_a_workspace_restriction_answers_grant_restricted_naming_it(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    await api.fleet.restrict("outreach", kind="workspace", reason="abuse report", by="ops")
    client = await api.client()
    body = problem(
        await client.post(f"/v1/grants/{grant.id}/messages", json=message()),
        403,
        "grant_restricted",
    )
    assert body["detail"] == "workspace_restricted: abuse report"


async def test_past_the_quota_a_send_is_rate_limited_with_retry_after(api: ApiServer) -> None:
    grant = await sender(api.fleet, {"daily_send_quota": 1, "quota_pacing_from": 1.0})
    client = await api.client()
    url = f"/v1/grants/{grant.id}/messages"
    assert (await client.post(url, json=message())).status_code == 202
    answer = await client.post(url, json=message(to=["second@example.org"]))
    body = problem(answer, 429, "rate_limited")
    wait = int(answer.headers["retry-after"])
    assert 1 <= wait <= 86_400
    assert body["retry_after"] == wait
    deferred = await client.post(url, json=message(to=["second@example.org"], defer=True))
    assert deferred.status_code == 202
    assert deferred.json()["send_at"] is not None  # tomorrow
    listed = await client.get(url, params={"folder": "sent"})
    later = next(m for m in listed.json()["items"] if m["id"] == deferred.json()["id"])
    assert later["send_at"] is not None


async def test_a_burst_past_the_rate_is_queued_with_its_send_at(api: ApiServer) -> None:
    grant = await sender(api.fleet, {"send_rate_per_minute": 60, "send_burst": 1})
    client = await api.client()
    url = f"/v1/grants/{grant.id}/messages"
    first = await client.post(url, json=message(to=["a@example.org"]))
    second = await client.post(url, json=message(to=["b@example.org"]))
    assert first.json()["send_at"] is None
    assert second.status_code == 202
    assert second.json()["send_at"] is not None
    assert "scheduled" in second.json()["detail"]


async def test_bulk_sends_carry_unsubscribe_and_campaigns_wait_for_opt_in(
    api: ApiServer,
) -> None:
    grant = await sender(api.fleet)
    client = await api.client()
    url = f"/v1/grants/{grant.id}/messages"
    bulk = await client.post(url, json=message(category="bulk"))
    assert bulk.status_code == 202, bulk.text
    read = await client.get(f"{url}/{bulk.json()['id']}")
    names = {h["name"].lower() for h in read.json()["headers"]}
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= names
    problem(
        await client.post(url, json=message(category="bulk", cc=["b@example.org"])),
        422,
        "message_rejected",
    )
    pending = problem(
        await client.post(url, json=message(category="campaign")), 400, "opt_in_pending"
    )
    assert "someone@example.org" in pending["detail"]
    problem(await client.post(url, json=message(category="spam")), 422, "validation_failed")


@pytest.fixture
async def strict_api(database_url: str) -> AsyncIterator[ApiServer]:
    """The API over a fleet outside dev mode: its domain must pass a DNS check to send."""
    async with Fleet(
        database_url=database_url,
        application="test",
        dev_mode=False,
        recipient_domain_check="off",
        domain_audit_interval=0,
    ) as fleet:
        await fleet.add_domain("example.com")
        async with api_server(fleet) as server:
            yield server


async def test_an_unchecked_domain_answers_domain_not_authenticated(strict_api: ApiServer) -> None:
    grant = await sender(strict_api.fleet)
    client = await strict_api.client()
    body = problem(
        await client.post(f"/v1/grants/{grant.id}/messages", json=message()),
        400,
        "domain_not_authenticated",
    )
    assert "mailfleet domains check example.com" in body["detail"]
    assert body["failing_checks"] == []


# -- reading -------------------------------------------------------------------------------


async def test_messages_and_threads_are_listed_filtered_and_paged(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    first = await api.fleet.deliver(grant.id, inbound(1))
    await api.fleet.deliver(grant.id, inbound(2, subject="Other matter"))
    third = await api.fleet.deliver(grant.id, inbound(3, refers="<q1@example.org>"))
    assert third.thread_id == first.thread_id
    client = await api.client()
    reply = await client.post(
        f"/v1/grants/{grant.id}/messages",
        json=message(to=["ada1@example.org"], subject="Question", in_reply_to=third.id),
    )
    assert reply.status_code == 202, reply.text
    assert reply.json()["thread_id"] == first.thread_id
    sent = await client.get(f"/v1/grants/{grant.id}/messages/{reply.json()['id']}")
    headers = {h["name"]: h["value"] for h in sent.json()["headers"]}
    assert headers["In-Reply-To"] == "<q3@example.org>"
    assert sent.json()["subject"] == "Re: Question"

    url = f"/v1/grants/{grant.id}/messages"
    everything = (await client.get(url)).json()
    assert everything["next_cursor"] is None
    ids = [m["id"] for m in everything["items"]]
    assert len(ids) == 4
    assert ids[0] == reply.json()["id"]  # newest first
    assert ids[-1] == first.id
    inbox = (await client.get(url, params={"folder": "inbox"})).json()["items"]
    assert [m["direction"] for m in inbox] == ["in"] * 3
    assert all(m["delivery"] is None for m in inbox)
    outgoing = (await client.get(url, params={"direction": "out"})).json()["items"]
    assert [m["id"] for m in outgoing] == [reply.json()["id"]]
    thread = (await client.get(url, params={"thread": first.thread_id})).json()["items"]
    assert {m["id"] for m in thread} == {first.id, third.id, reply.json()["id"]}
    since = (await client.get(url, params={"since": "2100-01-01T00:00:00Z"})).json()["items"]
    assert since == []

    walked: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["after"] = cursor
        page = (await client.get(url, params=params)).json()
        walked += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == ids
    problem(await client.get(url, params={"after": "not-a-cursor"}), 422, "invalid_input")
    problem(await client.get(url, params={"folder": "drafts"}), 422, "validation_failed")

    threads = (await client.get(f"/v1/grants/{grant.id}/threads")).json()
    assert threads["items"][0]["id"] == first.thread_id  # the latest activity
    conversation = next(t for t in threads["items"] if t["id"] == first.thread_id)
    assert conversation["message_count"] == 3
    assert conversation["subject"] == "Question"
    assert "ada1@example.org" in conversation["participants"]
    assert len(threads["items"]) == 2
    one = (await client.get(f"/v1/grants/{grant.id}/threads", params={"limit": 1})).json()
    rest = await client.get(f"/v1/grants/{grant.id}/threads", params={"after": one["next_cursor"]})
    assert [t["id"] for t in one["items"] + rest.json()["items"]] == [
        t["id"] for t in threads["items"]
    ]
    detail = (await client.get(f"/v1/grants/{grant.id}/threads/{first.thread_id}")).json()
    assert [m["id"] for m in detail["messages"]] == [first.id, third.id, reply.json()["id"]]

    problem(await client.get(f"{url}/nothing-here"), 404, "message_not_found")
    problem(
        await client.get(f"/v1/grants/{grant.id}/threads/nothing-here"), 404, "thread_not_found"
    )
    problem(await client.get("/v1/grants/nobody@example.com/messages"), 404, "grant_not_found")


async def test_a_key_of_another_application_reads_and_sends_nothing_of_test(
    api: ApiServer,
) -> None:
    grant = await sender(api.fleet)
    stored = await api.fleet.deliver(grant.id, inbound(1))
    theirs = await other_grant(api)
    other = await api.client(application="other")
    for path in (
        f"/v1/grants/{grant.id}/messages",
        f"/v1/grants/{SENDER}/messages",
        f"/v1/grants/{grant.id}/messages/{stored.id}",
        f"/v1/grants/{grant.id}/messages/{stored.id}/attachments/0",
        f"/v1/grants/{grant.id}/threads",
        f"/v1/grants/{grant.id}/threads/{stored.thread_id}",
    ):
        problem(await other.get(path), 404, "grant_not_found")
    # through a grant of its own, test's message and thread are not found either
    problem(
        await other.get(f"/v1/grants/{theirs.id}/messages/{stored.id}"), 404, "message_not_found"
    )
    problem(
        await other.get(f"/v1/grants/{theirs.id}/threads/{stored.thread_id}"),
        404,
        "thread_not_found",
    )
    assert (await other.get(f"/v1/grants/{theirs.id}/messages")).json()["items"] == []
    assert (await other.get(f"/v1/grants/{theirs.id}/threads")).json()["items"] == []
    problem(
        await other.post(f"/v1/grants/{grant.id}/messages", json=message()), 404, "grant_not_found"
    )
    problem(
        await other.post(f"/v1/grants/{theirs.id}/messages", json=message(in_reply_to=stored.id)),
        404,
        "message_not_found",
    )
    assert await api.fleet.outbox() == []
    assert await api.others["other"].outbox() == []


# -- suppressions --------------------------------------------------------------------------


async def test_suppressions_are_added_listed_paged_and_removed(api: ApiServer) -> None:
    await api.fleet.create_workspace("outreach")
    client = await api.client()
    one = await client.post("/v1/suppressions", json={"address": "One@Example.org"})
    assert one.json() == {"added": 1, "received": 1}
    many = await client.post(
        "/v1/suppressions",
        json={
            "items": [
                {"address": "two@example.org", "reason": "complaint"},
                {"address": "three@example.org", "workspace": "outreach", "detail": "asked"},
                {"address": "one@example.org"},
            ]
        },
    )
    assert many.json() == {"added": 2, "received": 3}  # one@ was listed already
    refused = problem(
        await client.post(
            "/v1/suppressions",
            json={"items": [{"address": "fine@example.org"}, {"address": "nope"}]},
        ),
        422,
        "invalid_input",
    )
    assert "row 2" in refused["detail"]
    assert refused["field"] == "items"
    problem(await client.post("/v1/suppressions", json={}), 422, "validation_failed")
    problem(
        await client.post("/v1/suppressions", json={"address": "a@example.org", "reason": "x"}),
        422,
        "validation_failed",
    )
    problem(
        await client.post(
            "/v1/suppressions", json={"address": "a@example.org", "workspace": "nowhere"}
        ),
        422,
        "invalid_input",
    )

    listed = (await client.get("/v1/suppressions")).json()
    assert [e["address"] for e in listed["items"]] == [
        "one@example.org",
        "two@example.org",
        "three@example.org",
    ]
    assert listed["items"][2]["workspace"] == "outreach"
    complaints = (await client.get("/v1/suppressions", params={"reason": "complaint"})).json()
    assert [e["address"] for e in complaints["items"]] == ["two@example.org"]
    scoped = (await client.get("/v1/suppressions", params={"workspace": "outreach"})).json()
    assert [e["address"] for e in scoped["items"]] == ["three@example.org"]
    first = (await client.get("/v1/suppressions", params={"limit": 2})).json()
    assert len(first["items"]) == 2
    second = (await client.get("/v1/suppressions", params={"after": first["next_cursor"]})).json()
    assert [e["address"] for e in second["items"]] == ["three@example.org"]
    assert second["next_cursor"] is None

    found = await client.get("/v1/suppressions/two@example.org")
    assert found.json()["reason"] == "complaint"
    problem(await client.get("/v1/suppressions/none@example.org"), 404, "suppression_not_found")

    assert (await client.delete("/v1/suppressions/two@example.org")).status_code == 204
    problem(await client.delete("/v1/suppressions/two@example.org"), 404, "suppression_not_found")
    gone = await client.delete(
        "/v1/suppressions", params={"address": "three@example.org", "workspace": "outreach"}
    )
    assert gone.status_code == 204
    assert [e.address for e in await api.fleet.suppressions()] == ["one@example.org"]


async def test_a_key_of_another_application_sees_and_removes_no_suppression(
    api: ApiServer,
) -> None:
    await api.fleet.suppress("kept@example.org")
    other = await api.client(application="other")
    assert (await other.get("/v1/suppressions")).json() == {"items": [], "next_cursor": None}
    problem(await other.get("/v1/suppressions/kept@example.org"), 404, "suppression_not_found")
    problem(await other.delete("/v1/suppressions/kept@example.org"), 404, "suppression_not_found")
    problem(
        await other.delete("/v1/suppressions", params={"address": "kept@example.org"}),
        404,
        "suppression_not_found",
    )
    assert (await other.post("/v1/suppressions", json={"address": "kept@example.org"})).json()[
        "added"
    ] == 1  # its own list
    assert [e.address for e in await api.fleet.suppressions()] == ["kept@example.org"]
    assert await api.fleet.count_suppressions() == 1


# -- reputation ----------------------------------------------------------------------------


async def test_reputation_of_a_grant_a_workspace_and_a_domain(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    client = await api.client()
    answer = (await client.get(f"/v1/grants/{SENDER}/reputation")).json()
    assert (answer["kind"], answer["subject"], answer["state"]) == ("grant", grant.id, "healthy")
    assert [level["kind"] for level in answer["levels"]] == [
        "grant",
        "workspace",
        "domain",
        "application",
    ]
    level = answer["levels"][0]
    assert level["sample"] == 0
    assert level["bounce_rate"] == 0.0
    assert "fewer than" in level["reason"]
    assert level["breaker"] == "closed"

    workspace = (await client.get("/v1/workspaces/outreach/reputation")).json()
    assert workspace["subject"] == grant.workspace_id
    assert [lv["kind"] for lv in workspace["levels"]] == ["workspace", "application"]
    by_id = (await client.get(f"/v1/workspaces/{grant.workspace_id}/reputation")).json()
    assert by_id == workspace
    domain = (await client.get("/v1/domains/example.com/reputation")).json()
    assert (domain["kind"], domain["subject"]) == ("domain", "example.com")
    assert [lv["kind"] for lv in domain["levels"]] == ["domain", "application"]

    problem(await client.get("/v1/grants/nobody@example.com/reputation"), 404, "grant_not_found")
    problem(await client.get("/v1/workspaces/nowhere/reputation"), 404, "workspace_not_found")
    problem(await client.get("/v1/domains/example.net/reputation"), 404, "domain_not_found")

    other = await api.client(application="other")
    problem(await other.get(f"/v1/grants/{grant.id}/reputation"), 404, "grant_not_found")
    problem(
        await other.get(f"/v1/workspaces/{grant.workspace_id}/reputation"),
        404,
        "workspace_not_found",
    )
    problem(await other.get("/v1/domains/example.com/reputation"), 404, "domain_not_found")


# -- the operator's acts -------------------------------------------------------------------


async def test_a_plain_key_may_not_act_as_the_operator(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    client = await api.client()
    for answer in (
        await client.post(f"/v1/grants/{grant.id}/reinstate", json={"reason": "fixed"}),
        await client.post("/v1/restrictions", json={"subject": grant.id, "reason": "spam"}),
        await client.get("/v1/restrictions"),
        await client.delete(f"/v1/restrictions/grant:{grant.id}"),
    ):
        problem(answer, 403, "admin_required")
    assert (await api.fleet.grant(grant.id)).status is GrantStatus.ACTIVE


async def test_an_admin_reinstates_a_paused_grant(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    await api.fleet.set_grant_status(grant.id, GrantStatus.PAUSED)
    admin = await api.client(admin=True)
    url = f"/v1/grants/{grant.id}/messages"
    problem(await admin.post(url, json=message()), 400, "grant_paused")
    missing = problem(
        await admin.post(f"/v1/grants/{grant.id}/reinstate", json={}), 422, "validation_failed"
    )
    assert missing["field"] == "reason"
    answer = await admin.post(
        f"/v1/grants/{SENDER}/reinstate", json={"reason": "the list was cleaned"}
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["kind"], answer.json()["state"]) == ("grant", "healthy")
    assert (await api.fleet.grant(grant.id)).status is GrantStatus.ACTIVE
    (event,) = await api.fleet.events(type="grant.reinstated")
    assert (event.payload["reason"], event.payload["by"]) == (
        "the list was cleaned",
        "api-key:test",
    )
    assert (await admin.post(url, json=message())).status_code == 202


@pytest.mark.parametrize(
    ("kind", "subject", "stored"),
    [
        ("grant", SENDER, "grant"),
        ("workspace", "outreach", "workspace"),
        ("domain", "example.com", "domain"),
        ("application", None, "application"),
    ],
)
async def test_an_admin_restricts_lists_and_lifts(
    api: ApiServer, kind: str, subject: str | None, stored: str
) -> None:
    grant = await sender(api.fleet)
    admin = await api.client(admin=True)
    body: dict[str, Any] = {"kind": kind, "reason": "abuse report #7"}
    if subject is not None:
        body["subject"] = subject
    made = await admin.post("/v1/restrictions", json=body)
    assert made.status_code == 201, made.text
    restriction = made.json()
    key = {
        "grant": grant.id,
        "workspace": grant.workspace_id,
        "domain": "example.com",
        "application": api.fleet.application.id,
    }[stored]
    assert restriction["id"] == f"{kind}:{key}"
    assert (restriction["kind"], restriction["subject"]) == (kind, key)
    assert (restriction["reason"], restriction["by"]) == ("abuse report #7", "api-key:test")
    send = await admin.post(f"/v1/grants/{grant.id}/messages", json=message())
    problem(send, 403, "grant_restricted")

    listed = (await admin.get("/v1/restrictions")).json()
    assert [r["id"] for r in listed["items"]] == [restriction["id"]]
    assert listed["items"][0]["reason"] == "abuse report #7"
    assert listed["items"][0]["by"] == "api-key:test"
    elsewhere = "domain" if kind == "grant" else "grant"
    assert (await admin.get("/v1/restrictions", params={"kind": elsewhere})).json()["items"] == []

    other = await api.client(application="other", admin=True)
    assert (await other.get("/v1/restrictions")).json()["items"] == []
    problem(
        await other.delete(f"/v1/restrictions/{restriction['id']}"), 404, "restriction_not_found"
    )
    theirs = {
        **body,
        "subject": {"grant": grant.id, "application": api.fleet.application.id}.get(kind, subject),
    }
    refused = await other.post("/v1/restrictions", json=theirs)
    assert refused.status_code == 404, refused.text
    assert (await api.fleet.restrictions())[0].id == restriction["id"]

    lifted = await admin.delete(
        f"/v1/restrictions/{restriction['id']}", params={"reason": "resolved"}
    )
    assert lifted.status_code == 204
    problem(
        await admin.delete(f"/v1/restrictions/{restriction['id']}"), 404, "restriction_not_found"
    )
    assert (await admin.get("/v1/restrictions")).json()["items"] == []
    (event,) = await api.fleet.events(type=f"{kind}.restriction_lifted")
    assert (event.payload["reason"], event.payload["by"]) == ("resolved", "api-key:test")
    assert (await admin.post(f"/v1/grants/{grant.id}/messages", json=message())).status_code == 202


async def test_admin_acts_on_unknown_subjects_are_not_found(api: ApiServer) -> None:
    grant = await sender(api.fleet)
    admin = await api.client(admin=True)
    problem(
        await admin.post("/v1/grants/nobody@example.com/reinstate", json={"reason": "x"}),
        404,
        "grant_not_found",
    )
    problem(
        await admin.post(
            "/v1/restrictions", json={"kind": "domain", "subject": "example.net", "reason": "x"}
        ),
        404,
        "domain_not_found",
    )
    problem(
        await admin.post("/v1/restrictions", json={"kind": "workspace", "reason": "x"}),
        422,
        "validation_failed",
    )
    problem(
        await admin.post(
            "/v1/restrictions", json={"kind": "planet", "subject": "x", "reason": "x"}
        ),
        422,
        "validation_failed",
    )
    for name in ("nonsense", "grant:", f"grant:{grant.id}", "application:someone-else"):
        problem(await admin.delete(f"/v1/restrictions/{name}"), 404, "restriction_not_found")
    other = await api.client(application="other", admin=True)
    problem(
        await other.post(f"/v1/grants/{grant.id}/reinstate", json={"reason": "x"}),
        404,
        "grant_not_found",
    )
