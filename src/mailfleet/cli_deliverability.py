"""The deliverability commands: ``mailfleet inspect`` and ``mailfleet suppressions``.

::

    mailfleet inspect bounce.eml complaint.eml
    mailfleet suppressions list --reason hard_bounce
    mailfleet suppressions add someone@example.org --detail "asked by phone"
    mailfleet suppressions export > suppressions.csv
    mailfleet suppressions import suppressions.csv

They keep the conventions of :mod:`mailfleet.cli`, which registers them.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .cli import (
    AfterId,
    AsJson,
    Limit,
    WorkspaceOption,
    _call,
    _Listing,
    _plural,
    _say,
    _show_page,
    app,
)
from .model.addresses import parse_address
from .model.deliverability import Suppression, SuppressionReason
from .model.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from .runtime.directory import SuppressionRow
    from .runtime.fleet import Fleet

__all__: list[str] = []

# -- inspect ---------------------------------------------------------------------------------


@app.command("inspect")
def inspect(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE...", help="Messages to read (RFC 5322 files, '-': stdin)."),
    ],
) -> None:
    """Read messages as the MX reads reports: one JSON object a line, a file each.

    Each line has ``file``, ``kind`` (bounce, complaint, auto_reply, delivered,
    message), ``recipients`` (each failed or complained-about recipient with
    ``address``, ``status``, ``reply_code``, ``reason``, ``class`` hard or
    soft, ``diagnostic``), ``original_message_id`` and ``verp_token``; a delay
    warning lists its recipients under ``delayed``. A file that cannot be read
    is a line with ``file`` and ``error``, and exit code 1; the others still print.
    """
    from .mail.bounces import read_report

    failed = False
    for path in files:
        line: dict[str, Any] = {"file": str(path)}
        try:
            raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        except OSError as exc:
            failed = True
            line["error"] = f"cannot read {path}: {exc.strerror or exc}"
        else:
            line.update(read_report(raw).as_json())
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    if failed:
        raise typer.Exit(1)


# -- suppressions ------------------------------------------------------------------------------

suppressions_app = typer.Typer(
    no_args_is_help=True,
    help="The suppression list: addresses the fleet will not mail (bounced, complained...).",
)
app.add_typer(suppressions_app, name="suppressions")

_CSV_COLUMNS = ("address", "reason", "workspace", "detail", "event_id", "created_at")


def _suppression_json(entry: Suppression) -> dict[str, Any]:
    return {
        "id": entry.id,
        "address": entry.address,
        "reason": entry.reason.value,
        "workspace": entry.workspace,
        "detail": entry.detail,
        "event_id": entry.event_id,
        "created_at": entry.created_at,
    }


_SUPPRESSIONS: _Listing[Suppression] = _Listing(
    "suppressions",
    ("id", "address", "reason", "workspace", "added", "detail"),
    row=lambda s: (s.id, s.address, s.reason.value, s.workspace, s.created_at, s.detail),
    record=_suppression_json,
    cursor=lambda s: s.id,
    whole=("id", "address"),
    widest={"detail": 60},
)

Reason = Annotated[
    SuppressionReason | None, typer.Option(help="Only entries suppressed for this reason.")
]


@suppressions_app.command("list")
def list_suppressions(
    ctx: typer.Context,
    reason: Reason = None,
    workspace: WorkspaceOption = None,
    limit: Limit = 100,
    after: AfterId = None,
    as_json: AsJson = False,
) -> None:
    """List suppressed addresses in the order they were added."""
    _show_page(
        ctx,
        _SUPPRESSIONS,
        lambda fleet, n: fleet.suppressions(
            reason=reason, workspace=workspace, after=after or 0, limit=n
        ),
        lambda fleet: fleet.count_suppressions(),
        limit=limit,
        as_json=as_json,
    )


Address = Annotated[str, typer.Argument(metavar="ADDRESS", help="An email address.")]


@suppressions_app.command("add")
def add_suppression(
    ctx: typer.Context,
    address: Address,
    reason: Annotated[
        SuppressionReason, typer.Option(help="Why (default: manual).")
    ] = SuppressionReason.MANUAL,
    detail: Annotated[str | None, typer.Option(help="A note kept with the entry.")] = None,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", help="Only for this workspace's grants (default: all)."),
    ] = None,
) -> None:
    """Suppress an address: sends to it answer 'suppressed' and queue nothing."""
    added = _call(
        ctx,
        lambda fleet: fleet.suppress(address, reason=reason, detail=detail, workspace=workspace),
    )
    normal = str(parse_address(address))
    _say(f"suppressed {normal}" if added else f"{normal} was suppressed already")


@suppressions_app.command("remove")
def remove_suppression(
    ctx: typer.Context, address: Address, workspace: WorkspaceOption = None
) -> None:
    """Take an address off the list (exit 1 if it was not on it)."""
    if not _call(ctx, lambda fleet: fleet.unsuppress(address, workspace=workspace)):
        raise NotFound("address", f"{address} is not suppressed: nothing removed")
    _say(f"{address} may be mailed again")


@suppressions_app.command("export")
def export_suppressions(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Argument(metavar="FILE", help="Where to write ('-' or none: stdout).")
    ] = None,
) -> None:
    """Write the whole list as CSV: address, reason, workspace, detail, event_id, created_at."""

    async def everything(fleet: Fleet) -> list[Suppression]:
        return await fleet.suppressions(limit=None)

    entries = _call(ctx, everything)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for entry in entries:
        writer.writerow(
            (
                entry.address,
                entry.reason.value,
                entry.workspace or "",
                entry.detail or "",
                "" if entry.event_id is None else entry.event_id,
                entry.created_at.isoformat(),
            )
        )
    if output is None or str(output) == "-":
        sys.stdout.write(text.getvalue())
    else:
        output.write_text(text.getvalue(), encoding="utf-8")
        _say(f"wrote {_plural(len(entries), 'suppression')} to {output}", stderr=True)


@suppressions_app.command("import")
def import_suppressions(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="FILE", help="A CSV file ('-': stdin), as export writes it.")
    ],
) -> None:
    """Add the addresses of a CSV file (a header row with at least 'address'; 'reason',
    'workspace' and 'detail' are read when present). Every row is checked first: one bad
    row and nothing is imported."""
    rows = list(_read_csv(source))
    if not rows:
        raise InvalidInput("FILE", f"{source} has no rows to import")
    added = _call(ctx, lambda fleet: fleet.suppress_many(rows, field="FILE"))
    _say(f"imported {_plural(added, 'new suppression')} of {len(rows):,} rows")


def _read_csv(source: str) -> Iterator[SuppressionRow]:
    from .runtime.directory import SuppressionRow

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidInput("FILE", f"cannot read {source}: {reason}") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "address" not in reader.fieldnames:
        raise InvalidInput("FILE", f"{source}: the first row must name the columns, 'address' one")
    for row in reader:
        yield SuppressionRow(
            address=(row.get("address") or "").strip(),
            reason=(row.get("reason") or "").strip() or SuppressionReason.MANUAL,
            detail=(row.get("detail") or "").strip() or None,
            workspace=(row.get("workspace") or "").strip() or None,
        )
