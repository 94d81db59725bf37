"""The bounce corpus through the real ``mailfleet inspect``: every message reads as expected.

``tests/corpus/bounces/`` holds hand-written bounces, complaints, auto-replies,
delivery notices and ordinary messages in the shapes real MTAs and providers
send (see its README), each ``NAME.eml`` with the ``NAME.json`` that
``mailfleet inspect`` must print for it. All of them go through ONE
``python -m mailfleet inspect FILE...`` process; each file is then its own test.

Compared: ``kind``, ``original_message_id`` and ``verp_token`` exactly; the
recipients (and the delayed ones) sorted by address, with address, status,
reply code, reason and class exact and the expected diagnostic a substring of
the parser's (case-insensitive; ``null`` is not checked); ``feedback_type``
when the expectation names one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus" / "bounces"

FAMILIES = frozenset(
    {
        "postfix",
        "exim",
        "sendmail",
        "qmail",
        "exchange",
        "office365",
        "gmail",
        "yahoo",
        "outlook",
        "amazonses",
        "mimecast",
        "proofpoint",
        "zimbra",
        "courier",
        "domino",
        "gmx",
    }
)
"""The MTAs and providers whose own forms the corpus holds (file names start with one)."""

KINDS = frozenset({"dsn", "delivered", "autoreply", "arf", "fbl", "message"})
"""The other prefixes: forms that are no one MTA's."""

NAMES = sorted(path.stem for path in CORPUS.glob("*.eml"))

RECIPIENT_KEYS = ("address", "status", "reply_code", "reason", "class", "diagnostic")


def crlf_names() -> set[str]:
    """The messages the README says to read with CRLF line endings."""
    lines = (CORPUS / "CRLF").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def corpus_bytes(name: str) -> bytes:
    """The message ``name`` as the parser is given it (CRLF when listed in ``CRLF``)."""
    raw = (CORPUS / f"{name}.eml").read_bytes()
    return raw.replace(b"\n", b"\r\n") if name in crlf_names() else raw


def expected(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((CORPUS / f"{name}.json").read_text())
    return document


def run_inspect(*paths: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """``python -m mailfleet inspect PATHS...`` from this tree's ``src``, in a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLEET_")}
    env["MAILFLEET_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *sys.path])
    return subprocess.run(
        [sys.executable, "-m", "mailfleet", "inspect", *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=120,
    )


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON objects ``inspect`` printed, one a line, in order."""
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        return [json.loads(line) for line in lines]
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"inspect printed a line that is not JSON ({exc}):\n{done.stdout}\n{done.stderr}"
        ) from exc


@pytest.fixture(scope="module")
def inspected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every corpus message through one ``inspect`` process: name -> its JSON line.

    The LF messages are given by their path in the corpus; the CRLF ones are
    written converted into a temporary folder first.
    """
    folder = tmp_path_factory.mktemp("corpus")
    home = tmp_path_factory.mktemp("home")
    crlf = crlf_names()
    paths: dict[str, Path] = {}
    for name in NAMES:
        if name in crlf:
            paths[name] = folder / f"{name}.eml"
            paths[name].write_bytes(corpus_bytes(name))
        else:
            paths[name] = CORPUS / f"{name}.eml"
    done = run_inspect(*paths.values(), home=home)
    documents = json_lines(done)
    by_path = {Path(d.get("file", "")).resolve(): d for d in documents}
    return {
        "done": done,
        "documents": documents,
        "by_name": {name: by_path.get(path.resolve()) for name, path in paths.items()},
    }


def _by_address(recipients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(recipients, key=lambda r: str(r.get("address")))


def _seen_as_expected(
    actual: list[dict[str, Any]], wanted: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``actual`` sorted, with each diagnostic shown as the expected one when it holds it.

    Comparing that with the sorted expectation makes pytest's diff name only
    what really differs.
    """
    seen = []
    for index, recipient in enumerate(_by_address(actual)):
        shown = {key: recipient.get(key) for key in RECIPIENT_KEYS}
        if index < len(wanted):
            want = wanted[index].get("diagnostic")
            got = recipient.get("diagnostic")
            if want is None or (isinstance(got, str) and want.lower() in got.lower()):
                shown["diagnostic"] = want
        seen.append(shown)
    return seen


def reading(document: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """What of ``document`` the expectation ``want`` speaks of, in its form."""
    wanted_recipients = _by_address(want["recipients"])
    wanted_delayed = _by_address(want.get("delayed", []))
    shown: dict[str, Any] = {
        "kind": document.get("kind"),
        "recipients": _seen_as_expected(document.get("recipients", []), wanted_recipients),
        "delayed": _seen_as_expected(document.get("delayed", []), wanted_delayed),
        "original_message_id": document.get("original_message_id"),
        "verp_token": document.get("verp_token"),
    }
    if "feedback_type" in want:
        shown["feedback_type"] = document.get("feedback_type")
    return shown


def normalised(want: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "kind": want["kind"],
        "recipients": _by_address(want["recipients"]),
        "delayed": _by_address(want.get("delayed", [])),
        "original_message_id": want["original_message_id"],
        "verp_token": want["verp_token"],
    }
    if "feedback_type" in want:
        shown["feedback_type"] = want["feedback_type"]
    return shown


@pytest.mark.parametrize("name", NAMES)
def test_corpus_message_reads_as_expected(name: str, inspected: dict[str, Any]) -> None:
    document = inspected["by_name"][name]
    done = inspected["done"]
    assert document is not None, (
        f"inspect printed no line for {name}.eml (exit {done.returncode}):\n{done.stderr[-2000:]}"
    )
    assert "error" not in document, f"{name}.eml was not read: {document['error']}"
    want = expected(name)
    assert reading(document, want) == normalised(want)


def test_the_corpus_run_reads_every_file_and_exits_0(inspected: dict[str, Any]) -> None:
    done = inspected["done"]
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(inspected["documents"]) == len(NAMES)
    assert all(document is not None for document in inspected["by_name"].values())


def test_the_corpus_covers_the_families_and_both_line_endings() -> None:
    assert len(NAMES) >= 60
    assert sorted(p.stem for p in CORPUS.glob("*.json")) == NAMES, "each .eml has its .json"

    prefixes = Counter(name.split("-", 1)[0] for name in NAMES)
    unknown = set(prefixes) - FAMILIES - KINDS
    assert not unknown, f"names start with no known family: {sorted(unknown)}"
    covered = {family for family in FAMILIES if prefixes[family] >= 2}
    assert len(covered) >= 15, f"families with 2+ cases: {sorted(covered)}"

    crlf = crlf_names()
    assert crlf <= set(NAMES), f"CRLF names no message: {crlf - set(NAMES)}"
    assert not [n for n in NAMES if b"\r" in (CORPUS / f"{n}.eml").read_bytes()], (
        "the corpus is stored with LF line endings (see README)"
    )
    assert len(crlf) >= 10
    assert len(set(NAMES) - crlf) >= 10

    kinds = Counter(expected(name)["kind"] for name in NAMES)
    assert {"bounce", "complaint", "auto_reply", "delivered", "message"} <= set(kinds)


def test_unreadable_paths_get_their_own_error_line_and_exit_1(tmp_path: Path) -> None:
    first, second = tmp_path / "first.eml", tmp_path / "second.eml"
    first.write_bytes(corpus_bytes("postfix-user-unknown"))
    second.write_bytes(corpus_bytes("arf-yahoo"))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    missing = tmp_path / "missing.eml"
    given = [first, folder, missing, second]

    done = run_inspect(*given, home=tmp_path)
    documents = json_lines(done)

    assert done.returncode == 1, done.stderr[-2000:]
    assert [Path(d["file"]).resolve() for d in documents] == [p.resolve() for p in given]
    good_first, bad_folder, bad_missing, good_second = documents
    for bad in (bad_folder, bad_missing):
        assert set(bad) == {"file", "error"}
        assert isinstance(bad["error"], str)
        assert bad["error"].strip()
    assert good_first["kind"] == "bounce"
    assert good_second["kind"] == "complaint"

    done = run_inspect(first, second, home=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [d.get("kind") for d in json_lines(done)] == ["bounce", "complaint"]
