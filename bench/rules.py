"""Rule evaluation per message, and adding 10,000 entries to a list.

1. 100 inbound rules over 20 lists totalling 1,000,000 entries (addresses and
   domains), compiled once; per message: the facts (lower-cased, domains and
   their parents) and the evaluation, for messages that match nothing (every
   rule is tried). Baseline in the same run: a plain Python loop doing one set
   lookup per rule (what the rules cost at the least).
2. ``Fleet.add_list_items`` of 10,000 fresh addresses on SQLite (validation and
   normalisation included), the median of five lists; baseline: a bare
   ``executemany`` of the same rows into a table of the same shape.

Targets: under 50 µs a message, under 500 ms for 10,000 entries. The last line
is one JSON object with ``us_per_message`` and ``add_10000_ms``.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from _common import emit, median

from mailfleet import Fleet
from mailfleet.model.rules import MessageFacts, Rule, RuleSpec, compile_rules
from mailfleet.store.database import SQLITE_SYNCHRONOUS

LISTS = 20
PER_LIST = 50_000  # 20 x 50,000 = 1,000,000 entries
RULES = 100
MESSAGES = 2_000
ROUNDS = 5


def _ruleset() -> Any:
    lists: dict[str, Any] = {}
    for i in range(LISTS):
        if i % 2:
            lists[f"l{i}"] = ("domain", {f"spam{j}-{i}.example" for j in range(PER_LIST)})
        else:
            lists[f"l{i}"] = ("address", {f"user{j}@bulk{i}.example" for j in range(PER_LIST)})
    now = datetime.now(UTC)
    rules = []
    for n in range(RULES):
        listed = f"l{n % LISTS}"
        field = "sender_domain" if n % LISTS % 2 else "sender_address"
        kinds = [
            [{"field": field, "operator": "in_list", "value": [listed]}],
            [
                {"field": field, "operator": "in_list", "value": [listed]},
                {"field": "subject", "operator": "contains", "value": f"offer {n}"},
            ],
            [
                {"field": "recipient_domain", "operator": "is", "value": f"team{n}.example"},
                {"field": "authentication", "operator": "is", "value": "dmarc=fail"},
            ],
            [
                {"field": "sender_tld", "operator": "is", "value": "zz"},
                {"field": "subject", "operator": "contains", "value": "winner"},
            ],
        ]
        spec = RuleSpec.parse(
            {
                "name": f"rule {n}",
                "trigger": "inbound",
                "action": ("block", "mark_spam", "archive", "trash")[n % 4],
                "match": "any" if n % 3 == 0 else "all",
                "priority": n,
                "conditions": kinds[n % 4],
            }
        )
        rules.append(Rule.of(spec, f"r{n}", at=now))
    sets = [entries for _, entries in lists.values()]
    return compile_rules(rules, lists), sets


def _messages() -> list[dict[str, Any]]:
    return [
        {
            "senders": (f"news{k}@mail{k % 50}.example.org", f"From{k}@Mail{k % 50}.example.org"),
            "recipients": ("desk@example.com",),
            "subject": f"Weekly update {k}",
            "authentication": {"spf": "pass", "dkim": "pass", "dmarc": "pass"},
        }
        for k in range(MESSAGES)
    ]


def bench_evaluation() -> tuple[float, float]:
    ruleset, sets = _ruleset()
    messages = _messages()
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for values in messages:
            ruleset.evaluate("inbound", None, MessageFacts.of(**values))
        best = min(best, (time.perf_counter() - start) / len(messages))
    # baseline: one set lookup per rule, on a value lower-cased once per message
    baseline = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for values in messages:
            sender = values["senders"][0].lower()
            for n in range(RULES):
                if sender in sets[n % LISTS]:
                    break
        baseline = min(baseline, (time.perf_counter() - start) / len(messages))
    return best * 1e6, baseline * 1e6


async def bench_add() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        times = []
        async with Fleet(database_url=f"sqlite:///{folder}/bench.db", application="bench") as fleet:
            for r in range(ROUNDS):
                made = await fleet.create_list(f"list {r}", "address")
                entries = [
                    f"User{n}@Host{n % 97}.Example.ORG" for n in range(r * 10_000, (r + 1) * 10_000)
                ]
                start = time.perf_counter()
                result = await fleet.add_list_items(made.id, entries)
                times.append(time.perf_counter() - start)
                assert result.count("added") == 10_000
        bare = []
        path = Path(folder) / "bare.db"
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
        conn.execute("CREATE TABLE e (list_id TEXT, value TEXT, PRIMARY KEY (list_id, value))")
        for r in range(ROUNDS):
            rows = [(f"l{r}", f"user{n}@host{n % 97}.example.org") for n in range(10_000)]
            start = time.perf_counter()
            with conn:
                conn.executemany("INSERT INTO e VALUES (?, ?)", rows)
            bare.append(time.perf_counter() - start)
        conn.close()
    return median(times) * 1e3, median(bare) * 1e3


def main() -> None:
    us, base_us = bench_evaluation()
    print(
        f"evaluation: {us:.1f} µs a message ({RULES} rules, {LISTS * PER_LIST:,} list entries); "
        f"baseline, one set lookup per rule: {base_us:.1f} µs"
    )
    add_ms, bare_ms = anyio.run(bench_add)
    print(f"add 10,000 entries on SQLite: {add_ms:.0f} ms; bare executemany: {bare_ms:.0f} ms")
    emit(
        {
            "us_per_message": round(us, 2),
            "baseline_us_per_message": round(base_us, 2),
            "evaluation_ratio": round(us / base_us, 2),
            "add_10000_ms": round(add_ms, 1),
            "baseline_executemany_ms": round(bare_ms, 1),
        }
    )


if __name__ == "__main__":
    main()
