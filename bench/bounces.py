"""Bounce parsing: mailfleet's ``read_report`` against GNU Mailman's ``flufl.bounce``.

Every message of the corpus ``tests/corpus/bounces/`` (bounces, complaints,
auto-replies, delivery notices, ordinary mail; the names listed in its
``CRLF`` file read with CRLF line endings, as its README says) is loaded as
bytes, then, in the same run:

1. **Speed**: messages/s of ``mailfleet.mail.read_report(raw)`` and of
   flufl.bounce's ``all_failures(email.message_from_bytes(raw))`` over the
   whole corpus. flufl needs a parsed ``email.message.Message`` and ours
   takes bytes, so flufl's figure includes the stdlib parse. Each side runs
   passes over all messages for at least ``--seconds`` (default 1 s) per
   trial; the figure is the best of ``--trials`` (default 3) trials, ours and
   flufl's alternating. ``parse_ratio`` is ours / flufl.
2. **Agreement**, on the messages whose expected kind is ``bounce``: the
   fraction where the failed-recipient address set equals the expected JSON's
   (``our_agreement``, ``flufl_agreement``; flufl's set is its temporary and
   permanent failures together, lower-cased), and the fraction where ours and
   flufl's sets are the same (``same_recipients_ratio``).

Usage (from the repository root)::

    .venv/bin/python bench/bounces.py
    .venv/bin/python bench/bounces.py --flufl-only   # flufl's half, without ours

The last line printed is one JSON object: ``bounces_parsed_per_s``,
``flufl_parsed_per_s``, ``parse_ratio``, ``messages``, ``bounces``,
``our_agreement``, ``flufl_agreement``, ``same_recipients_ratio``.
"""

from __future__ import annotations

import argparse
import email
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import emit
from flufl.bounce import all_failures

try:
    from mailfleet.mail import read_report
except ImportError as missing:  # the parser is not there yet: only --flufl-only runs
    read_report = None
    READ_REPORT_MISSING: str | None = str(missing)
else:
    READ_REPORT_MISSING = None

__all__ = ["CORPUS", "CorpusMessage", "flufl_addresses", "load_corpus", "our_addresses"]

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "bounces"


@dataclass(frozen=True)
class CorpusMessage:
    name: str
    raw: bytes
    expected: dict[str, Any]

    @property
    def is_bounce(self) -> bool:
        return self.expected["kind"] == "bounce"

    @property
    def expected_addresses(self) -> frozenset[str]:
        return frozenset(r["address"].lower() for r in self.expected["recipients"])


def load_corpus(folder: Path = CORPUS) -> list[CorpusMessage]:
    """Every ``NAME.eml`` with its ``NAME.json``, CRLF-converted when ``CRLF`` lists it."""
    listed = (folder / "CRLF").read_text().splitlines()
    crlf = {line.strip() for line in listed if line.strip() and not line.startswith("#")}
    messages = []
    for path in sorted(folder.glob("*.eml")):
        raw = path.read_bytes()
        if path.stem in crlf:
            raw = raw.replace(b"\n", b"\r\n")
        expected = json.loads(path.with_suffix(".json").read_text())
        messages.append(CorpusMessage(path.stem, raw, expected))
    if not messages:
        raise RuntimeError(f"no corpus messages in {folder}")
    return messages


def _address(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return text.strip().strip("<>").strip().lower()


def flufl_addresses(raw: bytes) -> frozenset[str]:
    """flufl.bounce's temporary | permanent failures of ``raw``, lower-case str."""
    temporary, permanent = all_failures(email.message_from_bytes(raw))
    return frozenset(_address(a) for a in (*temporary, *permanent) if a)


def our_addresses(raw: bytes) -> frozenset[str]:
    """The failed recipients ``read_report`` finds in ``raw``, lower case."""
    report = read_report(raw)
    return frozenset(r.address.lower() for r in report.recipients)


def _safely(find: Callable[[bytes], frozenset[str]], raw: bytes) -> frozenset[str] | None:
    try:
        return find(raw)
    except Exception:  # a parser that raises found nothing; counted as such
        return None


def _one_pass(work: Callable[[bytes], object], raws: list[bytes]) -> None:
    for raw in raws:
        try:
            work(raw)
        except Exception:  # timed like any other outcome
            continue


def _trial(work: Callable[[bytes], object], raws: list[bytes], seconds: float) -> float:
    """Messages/s of whole passes over ``raws`` for at least ``seconds``."""
    passes = 0
    start = time.perf_counter()
    while True:
        _one_pass(work, raws)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return passes * len(raws) / elapsed


def measure_speed(
    sides: dict[str, Callable[[bytes], object]], raws: list[bytes], seconds: float, trials: int
) -> dict[str, float]:
    """Best-of-``trials`` messages/s per side, the sides alternating trial by trial."""
    best = dict.fromkeys(sides, 0.0)
    for _ in range(trials):
        for name, work in sides.items():
            best[name] = max(best[name], _trial(work, raws, seconds))
    return best


def _fraction(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0


def _show(addresses: frozenset[str] | None) -> str:
    return "(raised)" if addresses is None else ", ".join(sorted(addresses)) or "-"


def main(seconds: float, trials: int, flufl_only: bool) -> None:
    messages = load_corpus()
    raws = [m.raw for m in messages]
    bounces = [m for m in messages if m.is_bounce]
    sides: dict[str, Callable[[bytes], object]] = {}
    if not flufl_only:
        sides["mailfleet"] = read_report
    sides["flufl.bounce"] = lambda raw: all_failures(email.message_from_bytes(raw))

    flufl_found = {m.name: _safely(flufl_addresses, m.raw) for m in bounces}
    ours_found = {} if flufl_only else {m.name: _safely(our_addresses, m.raw) for m in bounces}
    rates = measure_speed(sides, raws, seconds, trials)

    size = sum(map(len, raws))
    print(
        f"corpus: {len(messages)} messages ({len(bounces)} bounces), {size:,} bytes; "
        f"best of {trials} trials of >= {seconds:g} s"
    )
    agreement = {
        "flufl.bounce": _fraction(flufl_found[m.name] == m.expected_addresses for m in bounces)
    }
    if not flufl_only:
        agreement["mailfleet"] = _fraction(
            ours_found[m.name] == m.expected_addresses for m in bounces
        )
    print(f"{'parser':<14} {'messages/s':>12} {'agreement':>10}")
    for name in sides:
        print(f"{name:<14} {rates[name]:>12,.0f} {agreement[name]:>10.1%}")

    print("bounces where a parser's failed recipients differ from the expected ones:")
    for m in bounces:
        wrong = [("flufl", flufl_found[m.name])]
        if not flufl_only:
            wrong.insert(0, ("ours", ours_found[m.name]))
        wrong = [(who, found) for who, found in wrong if found != m.expected_addresses]
        if wrong:
            found = "; ".join(f"{who}: {_show(addresses)}" for who, addresses in wrong)
            print(f"  {m.name:<36} expected {_show(m.expected_addresses)}; {found}")

    others = [m for m in messages if not m.is_bounce]
    print("other messages where a parser finds failed recipients (delays, complaints...):")
    for m in others:
        hits = [("flufl", _safely(flufl_addresses, m.raw))]
        if not flufl_only:
            hits.insert(0, ("ours", _safely(our_addresses, m.raw)))
        hits = [(who, found) for who, found in hits if found != frozenset()]
        if hits:
            found = "; ".join(f"{who}: {_show(addresses)}" for who, addresses in hits)
            print(f"  {m.name:<36} ({m.expected['kind']}) {found}")

    figures: dict[str, Any] = {
        "flufl_parsed_per_s": rates["flufl.bounce"],
        "messages": len(messages),
        "bounces": len(bounces),
        "flufl_agreement": agreement["flufl.bounce"],
    }
    if not flufl_only:
        same = _fraction(ours_found[m.name] == flufl_found[m.name] for m in bounces)
        ratio = rates["mailfleet"] / rates["flufl.bounce"]
        print(f"ours / flufl: {ratio:.1f}x the messages/s; same recipients on {same:.1%}")
        figures = {
            "bounces_parsed_per_s": rates["mailfleet"],
            "flufl_parsed_per_s": rates["flufl.bounce"],
            "parse_ratio": ratio,
            "messages": len(messages),
            "bounces": len(bounces),
            "our_agreement": agreement["mailfleet"],
            "flufl_agreement": agreement["flufl.bounce"],
            "same_recipients_ratio": same,
        }
    emit(figures)


def _fail(message: str) -> None:
    print(f"bench/bounces.py: {message}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum time of one trial")
    parser.add_argument("--trials", type=int, default=3, help="trials per parser (best is kept)")
    parser.add_argument(
        "--flufl-only", action="store_true", help="measure flufl.bounce alone (no read_report)"
    )
    arguments = parser.parse_args()
    if READ_REPORT_MISSING is not None and not arguments.flufl_only:
        _fail(
            f"mailfleet.mail.read_report is missing ({READ_REPORT_MISSING}); "
            "--flufl-only measures flufl.bounce alone"
        )
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)  # its log.exception on raises
    main(arguments.seconds, arguments.trials, arguments.flufl_only)
