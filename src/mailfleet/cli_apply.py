"""Policy as code: ``mailfleet apply FILE.yaml`` and ``mailfleet export [FILE]``.

::

    mailfleet export policy.yaml          # the workspaces, lists and rules as they are
    mailfleet apply policy.yaml --dry-run # what would change; nothing does
    mailfleet apply policy.yaml           # shows the changes, then makes them at once
    mailfleet apply policy.yaml --prune   # ... and deletes what the file does not name

The document's format is :mod:`mailfleet.model.policy_document`'s. An apply
is one transaction: an invalid file (``error: workspaces[2].policy.daily_send_quota:
...``) or any refusal while applying changes nothing and exits 1. They keep
the conventions of :mod:`mailfleet.cli`, which registers them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .cli import _call, _print_json, _say, app
from .model.errors import InvalidInput

if TYPE_CHECKING:
    from .model.policy_document import Change

__all__: list[str] = []


@app.command("apply")
def apply(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A policy document (YAML; '-': stdin)."),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the changes; make none.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also delete the rules, lists and workspaces the file does not name "
            "(never the default workspace; a workspace that holds grants refuses).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the changes as a JSON array.")
    ] = False,
) -> None:
    """Make the workspaces, lists and rules what FILE declares, in one transaction.

    The changes are shown first (+ create, ~ update, - delete); --dry-run stops
    there. Applying the same file again changes nothing. Without --prune, what the
    file does not name is left as it is.
    """
    from .model.policy_document import load_document

    document = load_document(_read(file))
    changes = _call(
        ctx,
        lambda fleet: fleet.apply_policy(document, prune=prune, dry_run=dry_run),
        create=not dry_run,
    )
    if as_json:
        _print_json([change.as_json() for change in changes])
    else:
        _show(changes)
    if not changes:
        _say("no changes", stderr=True)
    elif dry_run:
        _say(f"dry run: {_count(changes)} to make, none made", stderr=True)
    else:
        _say(f"applied {_count(changes)}", stderr=True)


@app.command("export")
def export(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(metavar="[FILE]", help="Where to write it (default: stdout)."),
    ] = None,
) -> None:
    """Write the workspaces, lists and rules as a policy document (YAML).

    `mailfleet apply` of it changes nothing: the two round-trip.
    """
    from .model.policy_document import dump_document

    text = dump_document(_call(ctx, lambda fleet: fleet.export_policy()))
    if file is None or str(file) == "-":
        sys.stdout.write(text)
        return
    file.write_text(text, encoding="utf-8")
    _say(f"wrote {file}", stderr=True)


def _read(file: Path) -> str:
    if str(file) == "-":
        return sys.stdin.read()
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput("file", f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInput("file", f"{file} is not UTF-8 text") from None


def _show(changes: list[Change]) -> None:
    styles = {"create": "green", "update": "yellow", "delete": "red"}
    for change in changes:
        _say(str(change), style=styles[change.act])


def _count(changes: list[Change]) -> str:
    return f"{len(changes)} change" + ("" if len(changes) == 1 else "s")
