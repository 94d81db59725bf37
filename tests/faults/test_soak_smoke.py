"""The soak's smoke run: ``bench/soak.py --smoke``, a minute of mixed load on
``mailfleet run`` in a subprocess (SMTP in to eight grants, a reply to each,
the relay on loopback answering some recipients 550 and bouncing others
later by DSN to the MX, every event to a webhook receiver), then the checks
of the receiving sides and the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailfleet.__main__ import cap_malloc_arenas

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.timeout(300)
def test_a_minute_of_mixed_load_loses_and_duplicates_nothing() -> None:
    run = subprocess.run(
        [sys.executable, str(SOAK), "--smoke"],
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["messages"] > 0, output[-5000:]
    assert figures["drained"], output[-5000:]
    assert figures["lost"] == 0, figures["lost_by_stage"]
    assert figures["duplicates"] == 0, figures["duplicates_by_stage"]
    # every kind of traffic took place: replies relayed, both bounces, webhooks
    assert figures["replies"] > 0
    assert figures["bounces_at_rcpt"] > 0
    assert figures["dsns_sent"] > 0
    assert figures["bounces"] == figures["bounces_at_rcpt"] + figures["dsns_sent"]
    assert figures["webhook_deliveries"] == figures["events"] > 0


def test_the_command_caps_mallocs_arenas_unless_the_operator_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert not cap_malloc_arenas()
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert cap_malloc_arenas() is sys.platform.startswith("linux")
