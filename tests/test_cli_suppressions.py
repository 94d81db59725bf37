"""``mailfleet suppressions`` and ``mailfleet inspect``, on a real database on both backends."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mailfleet import SuppressionReason
from support import Invoke, ok, one_error_line

BOUNCE = (
    b"From: MAILER-DAEMON@mx.example.net\r\n"
    b"To: bounces+0123456789abcdef0123@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: User unknown\r\n\r\n"
    b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    b"Message-ID: <offer-1@example.com>\r\nTo: gone@example.org\r\n\r\n--b--\r\n"
)


def test_add_list_remove(mailfleet: Invoke, state) -> None:
    ok(mailfleet("workspaces", "create", "outreach"))
    assert "suppressed stop@example.org" in ok(
        mailfleet("suppressions", "add", "Stop@Example.org", "--detail", "asked by phone")
    )
    assert "already" in ok(mailfleet("suppressions", "add", "stop@example.org"))
    ok(
        mailfleet(
            "suppressions", "add", "x@example.org", "--reason", "unsubscribe", "-w", "outreach"
        )
    )

    listed = json.loads(ok(mailfleet("suppressions", "list", "--json")))
    assert [(e["address"], e["reason"], e["workspace"], e["detail"]) for e in listed] == [
        ("stop@example.org", "manual", None, "asked by phone"),
        ("x@example.org", "unsubscribe", "outreach", None),
    ]
    only = json.loads(ok(mailfleet("suppressions", "list", "--reason", "unsubscribe", "--json")))
    assert [e["address"] for e in only] == ["x@example.org"]
    table = ok(mailfleet("suppressions", "list"))
    assert "stop@example.org" in table
    assert "asked by phone" in table

    assert "may be mailed again" in ok(mailfleet("suppressions", "remove", "stop@example.org"))
    line = one_error_line(mailfleet("suppressions", "remove", "stop@example.org"))
    assert "not suppressed" in line
    assert "not a valid address" in one_error_line(mailfleet("suppressions", "add", "nope"))
    assert state(lambda fleet: fleet.count_suppressions()) == 1


def test_export_then_import_round_trips(mailfleet: Invoke, state, tmp_path: Path) -> None:
    for address in ("a@example.org", "b@example.org"):
        ok(mailfleet("suppressions", "add", address, "--detail", "note, with a comma"))
    exported = ok(mailfleet("suppressions", "export"))
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [r["address"] for r in rows] == ["a@example.org", "b@example.org"]
    assert rows[0]["detail"] == "note, with a comma"
    assert set(rows[0]) == {"address", "reason", "workspace", "detail", "event_id", "created_at"}

    ok(mailfleet("suppressions", "remove", "a@example.org"))
    ok(mailfleet("suppressions", "remove", "b@example.org"))
    path = tmp_path / "list.csv"
    path.write_text(exported + "c@example.org,unsubscribe,,,,\n", encoding="utf-8")
    assert "imported 3 new suppressions of 3 rows" in ok(
        mailfleet("suppressions", "import", str(path))
    )
    entries = state(lambda fleet: fleet.suppressions())
    assert [(e.address, e.reason) for e in entries] == [
        ("a@example.org", SuppressionReason.MANUAL),
        ("b@example.org", SuppressionReason.MANUAL),
        ("c@example.org", SuppressionReason.UNSUBSCRIBE),
    ]
    written = tmp_path / "out.csv"
    ok(mailfleet("suppressions", "export", str(written)))
    assert written.read_text(encoding="utf-8").count("\n") == 4


def test_a_bad_import_names_each_bad_row_and_imports_nothing(
    mailfleet: Invoke, state, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "address,reason\nfine@example.org,manual\nnot-an-address,manual\nok@example.org,bored\n",
        encoding="utf-8",
    )
    line = one_error_line(mailfleet("suppressions", "import", str(path)))
    assert "row 2" in line
    assert "row 3" in line
    assert "bored" in line
    assert state(lambda fleet: fleet.count_suppressions()) == 0
    headless = tmp_path / "headless.csv"
    headless.write_text("fine@example.org\n", encoding="utf-8")
    assert "'address'" in one_error_line(mailfleet("suppressions", "import", str(headless)))
    missing = one_error_line(mailfleet("suppressions", "import", str(tmp_path / "none.csv")))
    assert "cannot read" in missing


def test_inspect_prints_a_line_per_file_and_an_error_line_for_unreadable_ones(
    mailfleet: Invoke, tmp_path: Path
) -> None:
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes(BOUNCE)
    plain = tmp_path / "plain.eml"
    plain.write_bytes(b"From: a@example.org\nTo: b@example.com\nSubject: Lunch?\n\nAt noon.\n")
    result = mailfleet("inspect", str(bounce), str(tmp_path / "missing.eml"), str(plain))
    assert result.exit_code == 1
    first, missing, last = (json.loads(line) for line in result.stdout.splitlines())
    assert first["file"] == str(bounce)
    assert first["kind"] == "bounce"
    assert first["verp_token"] == "0123456789abcdef0123"
    assert first["original_message_id"] == "offer-1@example.com"
    (recipient,) = first["recipients"]
    assert recipient["address"] == "gone@example.org"
    assert (recipient["status"], recipient["reply_code"], recipient["class"]) == (
        "5.1.1",
        550,
        "hard",
    )
    assert recipient["reason"] == "user_unknown"
    assert set(recipient) == {"address", "status", "reply_code", "reason", "class", "diagnostic"}
    assert missing["file"].endswith("missing.eml")
    assert "cannot read" in missing["error"]
    assert last == {
        "file": str(plain),
        "kind": "message",
        "recipients": [],
        "original_message_id": None,
        "verp_token": None,
    }
    assert mailfleet("inspect", str(plain)).exit_code == 0
