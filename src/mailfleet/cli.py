"""The ``mailfleet`` command: ``mailfleet run APP`` and the operator commands.

::

    mailfleet run examples/helpdesk/helpdesk.py
    mailfleet domains add example.com
    mailfleet workspaces create outreach --pattern '*.example.com' --set daily_send_quota=200
    mailfleet grants provision --from-file addresses.txt --workspace outreach

The global options (``--database-url``, ``--application``) come before the
command and default to the ``MAILFLEET_*`` settings. Every command is a client
of the public API: it opens a :class:`~mailfleet.Fleet`, awaits one call and
closes it. A :class:`~mailfleet.MailfleetError` ends any command with one red
``error:`` line on stderr and exit code 1, never a traceback; bad usage exits 2.

``run`` and ``worker`` stop gracefully on SIGINT (Ctrl-C) or SIGTERM alike,
whatever they are doing, from importing the agent to serving, and exit 0 with
a goodbye line. Failing to start (an SMTP port already in use...) is an
``error:`` line and exit 1 at once.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypeVar

import anyio
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from . import (
    Agent,
    Fleet,
    Grant,
    GrantStatus,
    InvalidInput,
    MailfleetError,
    ProvisionOutcome,
    ProvisionResult,
    Settings,
    Workspace,
    __version__,
)

__all__ = ["app", "main"]

T = TypeVar("T")

# -- output --------------------------------------------------------------------------

# Piped output is not wrapped at 80 columns, so that grep and cut see whole rows.
_PIPED_WIDTH = 1000


def _console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=_PIPED_WIDTH if wide else None)


def _say(message: str, *, style: str | None = None, stderr: bool = False) -> None:
    """Print one line of plain text (no markup), never wrapped."""
    _console(stderr=stderr).print(Text(message, style=style or ""), soft_wrap=True)


def _print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*(Text(_cell(value)) for value in row))
    if table.row_count:
        _console().print(table)
    else:
        _say(f"no {title}", style="dim")


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return "-" if value is None or value == "" else str(value)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _display_url(url: str) -> str:
    """A database URL with its password masked."""
    return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


# -- errors ----------------------------------------------------------------------------


class _Commands(TyperGroup):
    """The root command group: the one place where errors become an ``error:`` line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            error = _mailfleet_error(exc)
            if error is None:
                raise
            _say(f"error: {error}", style="red", stderr=True)
            raise typer.Exit(1) from None


def _mailfleet_error(exc: BaseException) -> MailfleetError | None:
    """``exc`` itself, or the single error inside the exception groups of task groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, MailfleetError) else None


# -- the application and its global options ----------------------------------------------

app = typer.Typer(
    cls=_Commands,
    name="mailfleet",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
domains_app = typer.Typer(no_args_is_help=True, help="Sending and receiving domains.")
workspaces_app = typer.Typer(no_args_is_help=True, help="Workspaces: policies and auto-grouping.")
grants_app = typer.Typer(no_args_is_help=True, help="Grants: the fleet's mailbox identities.")
app.add_typer(domains_app, name="domains")
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(grants_app, name="grants")


def _print_version(wanted: bool) -> None:
    if wanted:
        _say(f"mailfleet {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="MAILFLEET_DATABASE_URL",
            help="sqlite:///PATH or postgresql://USER@HOST/DB (default: SQLite in MAILFLEET_HOME).",
        ),
    ] = None,
    application: Annotated[
        str | None,
        typer.Option(envvar="MAILFLEET_APPLICATION", help="The application (tenant) to act on."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """mailfleet: fleets of AI agents with real email mailboxes."""
    given: dict[str, Any] = {"database_url": database_url, "application": application}
    try:
        ctx.obj = Settings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"settings.{field}", first["msg"]) from None


def _call(ctx: typer.Context, work: Callable[[Fleet], Awaitable[T]]) -> T:
    """Open the fleet the global options name, await ``work(fleet)``, close it."""
    settings = ctx.ensure_object(Settings)

    async def session() -> T:
        async with Fleet(settings) as fleet:
            return await work(fleet)

    return anyio.run(session)


# -- reading what operators give --------------------------------------------------------

FromFile = Annotated[
    str | None,
    typer.Option(
        "--from-file",
        "-f",
        metavar="PATH",
        help="Also read them from a file, one a line ('-': stdin); blank lines and # comments "
        "are skipped.",
    ),
]
WorkspaceOption = Annotated[
    str | None, typer.Option("--workspace", "-w", help="A workspace name or id.")
]
WorkspaceName = Annotated[str, typer.Argument(metavar="WORKSPACE", help="A workspace name or id.")]
GrantKeys = Annotated[
    list[str] | None, typer.Argument(metavar="GRANT", help="Grant ids or addresses.")
]
Limit = Annotated[int, typer.Option(min=1, help="Show at most this many.")]


def _keys(given: Sequence[str] | None, from_file: str | None, *, what: str) -> list[str]:
    """The arguments plus the lines of ``--from-file``: at least one."""
    keys = list(given or ())
    if from_file is not None:
        keys.extend(_read_lines(from_file))
    if not keys:
        raise InvalidInput(what, "give at least one, as arguments or with --from-file")
    return keys


def _read_lines(source: str) -> list[str]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidInput("--from-file", f"cannot read {source}: {reason}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _policy_changes(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` pairs as policy values.

    A value is JSON when it parses (``200``, ``0.08``, ``true``), else text; a
    dotted key reaches a nested value (``thresholds.bounce_pause=0.08``).
    """
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, equals, raw = pair.partition("=")
        *parents, leaf = key.strip().split(".")
        if not equals or not all((*parents, leaf)):
            raise InvalidInput("policy", f"expected key=value, got {pair!r}")
        node = changes
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InvalidInput(f"policy.{key.strip()}", f"{part} is not a group of values")
        node[leaf] = _json_or_text(raw)
    return changes


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _load_agent(reference: str) -> type[Agent]:
    """The Agent subclass ``module:Class`` or ``file.py:Class``; without ``:Class``,
    the only one the module defines."""
    target, _, name = reference.rpartition(":")
    if not target or not all(part.isidentifier() for part in name.split(".")):
        target, name = reference, ""
    try:
        module = _import_file(Path(target)) if target.endswith(".py") else _import_module(target)
    except ImportError as exc:
        raise InvalidInput("APP", f"cannot import {target!r}: {exc}") from None
    return _agent_named(module, name) if name else _only_agent(module, target)


def _agent_named(module: ModuleType, name: str) -> type[Agent]:
    found: object = module
    for part in name.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Agent):
        return found
    raise InvalidInput("APP", f"{module.__name__} has no Agent subclass named {name!r}")


def _only_agent(module: ModuleType, target: str) -> type[Agent]:
    agents = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Agent)
        and value.__module__ == module.__name__
    ]
    if len(agents) == 1:
        return agents[0]
    names = ", ".join(sorted(agent.__qualname__ for agent in agents)) or "none"
    problem = f"{target} defines {len(agents)} Agent subclasses ({names})"
    raise InvalidInput("APP", f"{problem}: name one as {target}:Class")


def _import_module(name: str) -> ModuleType:
    """Import a module with the working directory on ``sys.path``, as ``python -m`` has it."""
    return _import_from(Path.cwd(), name)


def _import_file(path: Path) -> ModuleType:
    """Import a Python file as a top-level module, its folder on ``sys.path`` as
    ``python FILE`` has it, so that the recorded ``module:Class`` names it again."""
    if not path.is_file():
        raise InvalidInput("APP", f"no such file: {path}")
    name, location = path.stem, path.resolve()
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", None) or "").resolve() != location:
        raise InvalidInput("APP", f"{path} has the name of the module {name!r}: rename the file")
    return _import_from(location.parent, name)


def _import_from(folder: Path, name: str) -> ModuleType:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


# -- run -----------------------------------------------------------------------------------


AgentReference = Annotated[
    str,
    typer.Argument(metavar="APP", help="package.module:AgentClass, or path/to/file.py[:Class]."),
]


@app.command()
def run(
    ctx: typer.Context,
    reference: AgentReference,
    smtp_port: Annotated[
        int | None,
        typer.Option(help="SMTP port to listen on (0: any free one). [default: 2525]"),
    ] = None,
) -> None:
    """Run an agent: provision the addresses it declares and serve until Ctrl-C or SIGTERM.

    The SMTP server (the MX) listens on 127.0.0.1:2525 unless MAILFLEET_SMTP_PORT
    or --smtp-port says otherwise.
    """
    settings = ctx.ensure_object(Settings)
    port = smtp_port if smtp_port is not None else settings.smtp_port
    ctx.obj = settings.model_copy(update={"smtp_port": 2525 if port is None else port})
    _serve_until_signal(ctx, reference, _run_agent)
    _say("mailfleet stopped. Goodbye.")


async def _run_agent(fleet: Fleet, agent: type[Agent]) -> None:
    grants = await fleet.register(agent)
    async with anyio.create_task_group() as tasks:
        serving = await tasks.start(fleet.serve)
        _print_table(
            f"grants of {agent.__qualname__} ({agent.agent_name()})",
            ("address", "grant", "workspace"),
            ((grant.address, grant.id, grant.workspace) for grant in grants),
        )
        _say(f"database: {_display_url(fleet.settings.effective_database_url)}")
        if serving.smtp_port is not None:
            _say(f"SMTP: {fleet.settings.smtp_host}:{serving.smtp_port} (mail the addresses above)")
        relay = fleet.settings.relay_host
        _say(
            f"outbound: relay {relay}:{fleet.settings.relay_port}"
            if relay
            else "outbound: dev mode (local grants get it, the rest is captured: "
            "`mailfleet outbox list`)"
        )
        _say(f"application: {fleet.application.name}; serving, press Ctrl-C to stop")


@app.command()
def worker(
    ctx: typer.Context,
    reference: AgentReference,
) -> None:
    """Serve the queues of APP's grants alongside other workers (PostgreSQL), until SIGTERM.

    Unlike ``run`` it provisions nothing: it takes whatever grants have work and
    no live worker, and gives them back when it stops. With MAILFLEET_SMTP_PORT
    set it also runs the SMTP server (the MX).
    """
    _serve_until_signal(ctx, reference, _run_worker)
    _say("worker stopped.")


async def _run_worker(fleet: Fleet, agent: type[Agent]) -> None:
    fleet.bind(agent)
    async with anyio.create_task_group() as tasks:
        serving = await tasks.start(fleet.serve)
        who = f"worker {serving.worker_id}" if serving.worker_id else "front end"
        port = serving.smtp_port
        smtp = "" if port is None else f" (SMTP: {fleet.settings.smtp_host}:{port})"
        _say(f"{who}: serving {agent.agent_name()}{smtp}")


def _serve_until_signal(
    ctx: typer.Context, reference: str, serve: Callable[[Fleet, type[Agent]], Awaitable[None]]
) -> None:
    """Load the agent ``reference`` names, open the fleet and await ``serve`` until
    SIGINT or SIGTERM.

    Either signal stops the command gracefully wherever it is: importing the
    agent's module, opening the fleet, provisioning, starting the listeners,
    serving. A failure propagates, to end the command with an ``error:`` line.
    """
    settings = ctx.ensure_object(Settings)

    async def session(agent: type[Agent]) -> None:
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tasks:
                    stop = anyio.CancelScope()
                    tasks.start_soon(_cancel_on_signal, signals, stop)
                    # Opening the fleet (threads, uninterruptible) is not cancelled, nor
                    # closing it: a signal while it opens cancels `stop` as it is entered.
                    async with Fleet(settings) as fleet:
                        with stop:
                            await serve(fleet, agent)
                    tasks.cancel_scope.cancel()
        finally:
            # Closing the receiver gave SIGTERM its default action (death) back.
            signal.signal(signal.SIGTERM, signal.default_int_handler)

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C
    try:
        anyio.run(session, _load_agent(reference))
    except KeyboardInterrupt:  # a signal outside the event loop (importing the agent...)
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _cancel_on_signal(signals: AsyncIterator[int], scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` at the first signal; later ones are ignored while it stops."""
    async for _ in signals:
        scope.cancel()
        return


# -- dead letters ------------------------------------------------------------------------------

dead_letters_app = typer.Typer(
    no_args_is_help=True, help="Messages whose handler failed on every attempt."
)
app.add_typer(dead_letters_app, name="dead-letters")


@dead_letters_app.command("list")
def list_dead_letters(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many to show.")] = 100,
) -> None:
    """List dead letters, oldest first."""
    letters = _call(ctx, lambda fleet: fleet.dead_letters(limit=limit))
    _print_table(
        "dead letters",
        ("entry", "grant", "message", "attempts", "subject", "error"),
        ((d.entry_id, d.grant_id, d.message_id, d.attempts, d.subject, d.error) for d in letters),
    )


@dead_letters_app.command("replay")
def replay_dead_letters(
    ctx: typer.Context,
    entries: Annotated[
        list[int] | None, typer.Argument(help="Entry ids to replay; all when none is given.")
    ] = None,
) -> None:
    """Queue dead letters again, behind their grants' current work."""
    count = _call(ctx, lambda fleet: fleet.replay_dead_letters(entries or None))
    _say(f"replayed {_plural(count, 'dead letter')}")


# -- outbox ------------------------------------------------------------------------------------

outbox_app = typer.Typer(no_args_is_help=True, help="Outbound mail: queued, sent, captured.")
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("list")
def list_outbox(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="pending, sent, bounced or captured.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many to show.")] = 50,
) -> None:
    """List outbound messages, newest first (in dev mode, the captured ones too)."""
    views = _call(ctx, lambda fleet: fleet.outbox(status=status, limit=limit))
    _print_table(
        "outbox",
        ("id", "status", "to", "subject", "attempts", "last answer"),
        (
            (
                v.id,
                v.status,
                ", ".join(v.recipients),
                v.subject,
                v.attempts,
                f"{v.last_code or ''} {v.last_response or ''}".strip(),
            )
            for v in views
        ),
    )


@outbox_app.command("show")
def show_outbox(ctx: typer.Context, outbound_id: int) -> None:
    """Print one outbound message as it was signed and sent."""
    view = _call(ctx, lambda fleet: fleet.outbox_message(outbound_id))
    if view is None or view.raw is None:
        raise InvalidInput("id", f"no outbound message {outbound_id}")
    _say(f"status: {view.status}; from {view.mail_from} to {', '.join(view.recipients)}")
    sys.stdout.write(view.raw.decode("utf-8", "replace").replace("\r\n", "\n"))
    sys.stdout.flush()


# -- domains ---------------------------------------------------------------------------------


@domains_app.command("add")
def add_domain(
    ctx: typer.Context,
    name: str,
    selector: Annotated[str, typer.Option(help="The DKIM selector.")] = "mailfleet",
) -> None:
    """Register a sending and receiving domain (idempotent)."""
    domain = _call(ctx, lambda fleet: fleet.add_domain(name, selector=selector))
    _say(f"domain {domain.name} registered (DKIM selector {domain.dkim_selector})")


@domains_app.command("list")
def list_domains(ctx: typer.Context) -> None:
    """List the application's domains."""
    _print_table(
        "domains",
        ("domain", "DKIM selector", "authenticated", "created"),
        (
            (domain.name, domain.dkim_selector, domain.authenticated, domain.created_at)
            for domain in _call(ctx, Fleet.domains)
        ),
    )


@domains_app.command("dns")
def domain_dns(ctx: typer.Context, name: str) -> None:
    """Print the DNS TXT records to publish for a domain's DKIM keys."""
    found = [d for d in _call(ctx, Fleet.domains) if d.name == name.strip().lower()]
    if not found:
        raise InvalidInput("domain", f"{name!r} is not registered (mailfleet domains add {name})")
    for record, value in found[0].dkim_records:
        _say(f'{record}. IN TXT "{value}"')


# -- workspaces ------------------------------------------------------------------------------


def _print_workspace(workspace: Workspace) -> None:
    _print_table(
        f"workspace {workspace.name} (policy version {workspace.policy_version})",
        ("policy", "value"),
        _flatten(workspace.policy.to_json()).items(),
    )
    _say(f"patterns: {', '.join(workspace.patterns) or 'none'}")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@workspaces_app.command("list")
def list_workspaces(ctx: typer.Context) -> None:
    """List workspaces with their grant counts, patterns and key policy figures."""
    _print_table(
        "workspaces",
        (
            *("name", "default", "grants", "patterns"),
            *("daily quota", "sends/min", "spam", "bounce pause", "complaint pause"),
        ),
        (
            (
                workspace.name,
                workspace.is_default,
                workspace.grant_count,
                ", ".join(workspace.patterns),
                workspace.policy.daily_send_quota,
                workspace.policy.send_rate_per_minute,
                workspace.policy.spam_sensitivity.value,
                f"{workspace.policy.thresholds.bounce_pause:.1%}",
                f"{workspace.policy.thresholds.complaint_pause:.1%}",
            )
            for workspace in _call(ctx, Fleet.workspaces)
        ),
    )


@workspaces_app.command("create")
def create_workspace(
    ctx: typer.Context,
    name: str,
    patterns: Annotated[
        list[str] | None,
        typer.Option("--pattern", "-p", help="An auto-group pattern: domain or *.domain."),
    ] = None,
    values: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="KEY=VALUE", help="A policy value (as set-policy)."),
    ] = None,
) -> None:
    """Create a workspace with its auto-group patterns and policy (defaults where unset)."""
    policy = _policy_changes(values or ())
    listed = patterns or []
    _print_workspace(
        _call(ctx, lambda fleet: fleet.create_workspace(name, policy=policy, patterns=listed))
    )


@workspaces_app.command("set-policy")
def set_policy(
    ctx: typer.Context,
    name: WorkspaceName,
    values: Annotated[list[str], typer.Argument(metavar="KEY=VALUE")],
) -> None:
    """Change a workspace's policy: one write, effective for all its grants at once.

    Values are JSON when they parse (200, 0.08, true), else text (high);
    dotted keys reach nested values (thresholds.bounce_pause=0.08).
    """
    changes = _policy_changes(values)
    _print_workspace(_call(ctx, lambda fleet: fleet.update_policy(name, changes)))


@workspaces_app.command("patterns")
def set_patterns(
    ctx: typer.Context,
    name: WorkspaceName,
    patterns: Annotated[list[str], typer.Argument(metavar="PATTERN")],
) -> None:
    """Replace a workspace's auto-group patterns (domain or *.domain).

    Existing grants move only when you run `mailfleet workspaces regroup`.
    """
    workspace = _call(ctx, lambda fleet: fleet.set_patterns(name, patterns))
    _say(f"workspace {workspace.name}: patterns {', '.join(workspace.patterns)}")


@workspaces_app.command("assign")
def assign(
    ctx: typer.Context,
    workspace: WorkspaceName,
    grants: GrantKeys = None,
    from_file: FromFile = None,
) -> None:
    """Move grants (ids or addresses) into a workspace in bulk and pin them there."""
    keys = _keys(grants, from_file, what="grants")
    moved = _call(ctx, lambda fleet: fleet.move_grants(keys, workspace))
    _say(f"moved {_plural(moved, 'grant')} to {workspace}")


@workspaces_app.command("regroup")
def regroup(ctx: typer.Context) -> None:
    """Re-apply the auto-group patterns to every grant not pinned to a workspace."""
    _say(f"moved {_plural(_call(ctx, Fleet.regroup), 'grant')}")


@workspaces_app.command("delete")
def delete_workspace(ctx: typer.Context, name: WorkspaceName) -> None:
    """Delete an empty workspace other than the default."""
    _call(ctx, lambda fleet: fleet.delete_workspace(name))
    _say(f"workspace {name} deleted")


# -- grants ------------------------------------------------------------------------------------


@grants_app.command("list")
def list_grants(
    ctx: typer.Context,
    workspace: WorkspaceOption = None,
    status: Annotated[GrantStatus | None, typer.Option(help="Only grants in this state.")] = None,
    unserved: Annotated[
        bool,
        typer.Option(
            "--unserved",
            help="Only grants whose agent class no live worker serves (their mail waits).",
        ),
    ] = False,
    limit: Limit = 100,
) -> None:
    """List grants by address, optionally of one workspace or status, or the unserved ones."""
    if unserved:
        if workspace is not None or status is not None:
            raise typer.BadParameter("--unserved takes no --workspace or --status")
        waiting = _call(ctx, lambda fleet: fleet.unserved_grants(limit=limit))
        _print_table(
            "unserved grants",
            ("address", "id", "agent", "waiting", "workspace"),
            (
                (
                    u.grant.address,
                    u.grant.id,
                    u.grant.agent or "(none)",
                    u.waiting,
                    u.grant.workspace,
                )
                for u in waiting
            ),
        )
        if len(waiting) == limit:
            _say(f"first {limit} shown; raise --limit for more", style="dim")
        return
    found = _call(ctx, lambda fleet: fleet.grants(workspace=workspace, status=status, limit=limit))
    _print_table(
        "grants",
        ("address", "id", "workspace", "status", "agent", "created"),
        map(_grant_row, found),
    )
    if len(found) == limit:
        _say(f"first {limit} shown; raise --limit for more", style="dim")


def _grant_row(grant: Grant) -> tuple[object, ...]:
    return (
        grant.address,
        grant.id,
        grant.workspace,
        grant.status.value,
        grant.agent,
        grant.created_at,
    )


@grants_app.command("provision")
def provision(
    ctx: typer.Context,
    addresses: Annotated[list[str] | None, typer.Argument(metavar="ADDRESS")] = None,
    from_file: FromFile = None,
    workspace: WorkspaceOption = None,
    agent: Annotated[
        str | None,
        typer.Option(metavar="APP", help="The agent class: module:Class or file.py[:Class]."),
    ] = None,
) -> None:
    """Create grants for addresses (idempotent), in batches, with a progress bar.

    The workspace is --workspace, else the most specific auto-group pattern of
    each domain, else the default. Invalid addresses are listed with the reason.
    """
    keys = _keys(addresses, from_file, what="addresses")
    agent_class = _load_agent(agent) if agent else None
    with _progress("provisioning", total=len(keys)) as advance:
        results = _call(
            ctx,
            lambda fleet: fleet.provision_many(
                keys, workspace=workspace, agent=agent_class, progress=advance
            ),
        )
    _print_provisioned(results)


@contextmanager
def _progress(description: str, *, total: int) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on a terminal's stderr; yields the function that reports."""
    console = _console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print_provisioned(results: Sequence[ProvisionResult]) -> None:
    counts = Counter(result.outcome for result in results)
    _say(", ".join(f"{counts[outcome]} {outcome.value}" for outcome in ProvisionOutcome))
    invalid = [(r.address, r.reason) for r in results if r.outcome is ProvisionOutcome.INVALID]
    if invalid:
        _print_table("invalid addresses", ("address", "reason"), invalid)


@grants_app.command("deprovision")
def deprovision(
    ctx: typer.Context,
    grants: GrantKeys = None,
    from_file: FromFile = None,
) -> None:
    """Tear down grants (ids or addresses) with their mail and queued work."""
    keys = _keys(grants, from_file, what="grants")
    removed = _call(ctx, lambda fleet: fleet.deprovision_many(keys))
    _say(f"removed {_plural(len(removed), 'grant')} ({len(set(keys))} named)")


# -- events ------------------------------------------------------------------------------------


@app.command("events")
def list_events(
    ctx: typer.Context,
    after: Annotated[int, typer.Option(min=0, help="Only events after this event id.")] = 0,
    limit: Limit = 100,
    kind: Annotated[
        str | None, typer.Option("--type", help="Only this type, e.g. grant.created.")
    ] = None,
) -> None:
    """List outbox events, oldest first: what changed, and for which grant."""
    found = _call(ctx, lambda fleet: fleet.events(after=after, type=kind, limit=limit))
    _print_table(
        "events",
        ("id", "type", "grant", "created", "payload"),
        ((e.id, e.type, e.grant_id, e.created_at, e.payload) for e in found),
    )


def main() -> None:
    """Run the ``mailfleet`` command."""
    app(prog_name="mailfleet")
