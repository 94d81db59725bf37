"""The ``mailfleet`` command: ``mailfleet run APP`` and the operator commands.

::

    mailfleet run examples/helpdesk/helpdesk.py
    mailfleet domains add example.com
    mailfleet workspaces create outreach --pattern '*.example.com' --set daily_send_quota=200
    mailfleet grants provision --from-file addresses.txt --workspace outreach
    mailfleet grants list --json | jq -r '.[].address'

The global options (``--database-url``, ``--application``, ``--log-level``,
``--log-format``, ``--verbose``) come before the command and default to the
``MAILFLEET_*`` settings. Every command is a client of the public API: it
opens a :class:`~mailfleet.Fleet`, awaits one call and closes it.

The conventions every command keeps (``docs/operations.md`` tells operators):

- **Streams.** Command output goes to stdout; logs, progress, the paging
  footer, notices and errors go to stderr. ``run`` and ``worker`` log at INFO
  (a line per message received, per send outcome...); the other commands at
  WARNING, unless ``--log-level`` or ``MAILFLEET_LOG_LEVEL`` says otherwise.
- **Exit codes.** 0: done. 1: an error (a :class:`~mailfleet.MailfleetError`
  is one red ``error:`` line on stderr, never a traceback), and a bulk command
  that did none of what it was asked (provisioning only invalid addresses,
  removing only unknown grants, replaying entries that are not dead letters).
  2: bad usage.
- **The database.** ``--verbose`` names the database and where the choice came
  from. Only ``run``, ``worker`` and the set-up commands (``domains add``,
  ``workspaces create``, ``grants provision``) create a database, and say so
  on stderr; every other command refuses, naming where it looked and how to
  choose one.
- **Lists** page: ``--limit`` (100) and ``--after CURSOR`` (the last id or
  address shown); a footer on stderr says ``showing 100 of 10,006; next
  page: --after CURSOR`` when there is more. Tables fit a terminal (long cells
  end in an ellipsis); piped, rows are whole lines.
- **``--json``**: every list and show command prints a JSON array or object
  on stdout instead of its table, with every field under stable keys.

``run`` and ``worker`` stop gracefully on SIGINT (Ctrl-C) or SIGTERM alike,
whatever they are doing, from importing the agent to serving, and exit 0 with
a goodbye line. Failing to start (an SMTP port already in use...) is an
``error:`` line and exit 1 at once.

Start-up matters for a command run by hand or by a script: this module imports
only the settings and the model at load; the fleet, the agent class, progress
bars and the event loop are imported by the commands that use them.
"""

from __future__ import annotations

import base64
import gc
import importlib
import json
import logging
import os
import shlex
import signal
import sys
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from . import __version__
from .logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from .model.errors import DatabaseNotFound, InvalidInput, MailfleetError, NotFound
from .model.records import (
    Domain,
    Event,
    Grant,
    GrantStatus,
    ProvisionOutcome,
    ProvisionResult,
    Workspace,
)
from .settings import Settings

if TYPE_CHECKING:
    import anyio

    from .agent import Agent
    from .model.reputation import ReputationLevel
    from .runtime.fleet import Fleet
    from .store.outbound import OutboundView
    from .store.queue import DeadLetter
    from .store.workers import UnservedGrant

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


def _print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    whole: Collection[str] = (),
    widest: Mapping[str, int] | None = None,
) -> None:
    """A table that fits the terminal: one line a row, a cell too long for it ends in
    an ellipsis, except in the ``whole`` columns (ids and addresses, what the next
    command takes); ``widest`` caps some columns. Piped, the console is wide
    enough for whole rows."""
    cells = [[_cell(value) for value in row] for row in rows]
    if not cells:
        _say(f"no {title}", style="dim")
        return
    console = _console()
    caps = widest or {}
    natural = [
        min(max(len(column), *(len(row[i]) for row in cells)), caps.get(column, _PIPED_WIDTH))
        for i, column in enumerate(columns)
    ]
    widths = _fit(natural, [column in whole for column in columns], console.width)
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    for column, width in zip(columns, widths, strict=True):
        table.add_column(column, no_wrap=True, overflow="ellipsis", width=width)
    for row in cells:
        table.add_row(*map(Text, row))
    console.print(table)


# Between two columns of the tables: a separator and a space either side.
_COLUMN_GAP = 3


def _fit(natural: Sequence[int], whole: Sequence[bool], width: int) -> list[int]:
    """Column widths within ``width``: whole columns keep their natural width, the others
    share what is left, the narrow ones whole and the wide ones alike (one column at
    least each; a table whose whole columns alone are too wide overflows)."""
    fitted = list(natural)
    left = (
        width
        - _COLUMN_GAP * (len(natural) - 1)
        - sum(n for n, w in zip(natural, whole, strict=True) if w)
    )
    shrinking = sorted((n, i) for i, (n, w) in enumerate(zip(natural, whole, strict=True)) if not w)
    for count, (wanted, index) in enumerate(shrinking):
        share = max(1, left // (len(shrinking) - count))
        fitted[index] = min(wanted, share)
        left -= fitted[index]
    return fitted


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):  # stored times are UTC
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return "-" if value is None or value == "" else str(value)


def _print_json(data: object) -> None:
    """``data`` as JSON on stdout: datetimes in ISO 8601, keys as given."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=_json_value) + "\n")
    sys.stdout.flush()


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


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
            message = f"error: {error}"
            if isinstance(error, DatabaseNotFound) and isinstance(ctx.obj, _Session):
                message += f" ({ctx.obj.database_source}); {_CHOOSE_DATABASE}"
            _say(message, style="red", stderr=True)
            raise typer.Exit(1) from None


_CHOOSE_DATABASE = (
    "nothing was created. Choose the database with --database-url, MAILFLEET_DATABASE_URL "
    "or MAILFLEET_HOME, or create one with a set-up command (mailfleet domains add DOMAIN)"
)


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

# The commands that serve: they log at INFO unless told otherwise, the others at WARNING.
_SERVING = frozenset({"run", "worker"})


@dataclass
class _Session:
    """What the global options decided, for the command that runs."""

    settings: Settings
    verbose: bool
    database_source: str
    """Where the database URL came from, in the operator's terms."""

    @property
    def database(self) -> str:
        """The database URL, password masked, a SQLite path made absolute."""
        from .store.database import display_url, sqlite_path

        url = self.settings.effective_database_url
        path = sqlite_path(url)
        return f"sqlite:///{path.resolve()}" if path is not None else display_url(url)

    def announce(self) -> None:
        """With ``--verbose``, say on stderr which database, and where the choice came from."""
        if self.verbose:
            _say(f"database: {self.database} ({self.database_source})", stderr=True)


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
    log_level: Annotated[
        str | None,
        typer.Option(
            envvar="MAILFLEET_LOG_LEVEL",
            metavar="|".join(LOG_LEVELS),
            help="What to log on stderr. [default: info for run and worker, else warning]",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            envvar="MAILFLEET_LOG_FORMAT",
            metavar="|".join(LOG_FORMATS),
            help="Log lines: rich (terminal), json (one object a line), text; auto: rich on "
            "a terminal, else json. [default: auto]",
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Say on stderr which database the command uses."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """mailfleet: fleets of AI agents with real email mailboxes."""
    for name, value, allowed in (
        ("--log-level", log_level, LOG_LEVELS),
        ("--log-format", log_format, LOG_FORMATS),
    ):
        if value is not None and value.strip().lower() not in allowed:
            raise typer.BadParameter(f"one of {', '.join(allowed)}", param_hint=name)
    given: dict[str, Any] = {
        "database_url": database_url,
        "application": application,
        "log_level": log_level,
        "log_format": log_format,
    }
    try:
        settings = Settings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"settings.{field}", first["msg"]) from None
    told = "log_level" in settings.model_fields_set  # by the option, the environment or .env
    serving = ctx.invoked_subcommand in _SERVING
    level = settings.log_level if told else "info" if serving else "warning"
    _log_for_the_command(ctx, level, settings)
    ctx.obj = _Session(settings, verbose, _database_source(ctx, settings))


def _log_for_the_command(ctx: typer.Context, level: str, settings: Settings) -> None:
    """Configure mailfleet's logging for this command, and put back what was there
    after it (the command may run inside another program: tests, a notebook)."""
    loggers = [logging.getLogger(name) for name in ("mailfleet", "mail.log")]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    configure_logging(level, settings.log_format)

    def restore() -> None:
        for logger, handlers, old_level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(old_level)
            logger.propagate = propagate

    ctx.call_on_close(restore)


def _database_source(ctx: typer.Context, settings: Settings) -> str:
    """Where the database choice came from, as an operator would change it."""
    source = getattr(ctx.get_parameter_source("database_url"), "name", None)
    if source == "COMMANDLINE":
        return "from --database-url"
    if source == "ENVIRONMENT":
        return "from MAILFLEET_DATABASE_URL"
    if settings.database_url is not None:
        return "from MAILFLEET_DATABASE_URL in .env"
    if "home" in settings.model_fields_set:
        return f"MAILFLEET_HOME is {settings.home}"
    return "the default: .mailfleet/ in the working directory"


def _session(ctx: typer.Context) -> _Session:
    session = ctx.find_object(_Session)
    assert session is not None, "the root callback makes the session"
    return session


def _call(ctx: typer.Context, work: Callable[[Fleet], Awaitable[T]], *, create: bool = False) -> T:
    """Open the fleet the global options name, await ``work(fleet)``, close it.

    Only set-up commands pass ``create``: a database that does not exist yet
    is then created (and the command says so); the others refuse to.
    """
    import anyio

    from .runtime.fleet import Fleet

    session = _session(ctx)
    session.announce()

    async def opened() -> T:
        async with Fleet(session.settings, create=create) as fleet:
            if fleet.database_created:
                _say(f"created a new database: {session.database}", stderr=True)
            return await work(fleet)

    return anyio.run(opened)


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
Limit = Annotated[int, typer.Option(min=1, help="Show at most this many (one page).")]
AsJson = Annotated[
    bool,
    typer.Option("--json", help="Print JSON on stdout (every field, stable keys), not a table."),
]
AfterId = Annotated[
    int | None,
    typer.Option(
        "--after", metavar="ID", help="The next page: the last id shown (the footer says it)."
    ),
]


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
    from .agent import Agent

    found: object = module
    for part in name.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Agent):
        return found
    raise InvalidInput("APP", f"{module.__name__} has no Agent subclass named {name!r}")


def _only_agent(module: ModuleType, target: str) -> type[Agent]:
    from .agent import Agent

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


# -- lists: one page, its footer, or JSON -------------------------------------------------


@dataclass(frozen=True)
class _Listing(Generic[T]):
    """How a list command shows its records: a table, or JSON objects."""

    title: str
    columns: tuple[str, ...]
    row: Callable[[T], Sequence[object]]
    record: Callable[[T], dict[str, Any]]
    cursor: Callable[[T], object]
    """What ``--after`` takes to continue after this record."""
    whole: tuple[str, ...] = ()
    """Columns never shortened to fit (ids, addresses)."""
    widest: Mapping[str, int] | None = None


def _show_page(
    ctx: typer.Context,
    listing: _Listing[T],
    fetch: Callable[[Fleet, int], Awaitable[Sequence[T]]],
    count: Callable[[Fleet], Awaitable[int]],
    *,
    limit: int,
    as_json: bool,
) -> None:
    """Fetch one page (``limit`` records, one more to know whether more follow), show
    it, and if more follow say so on stderr with the total and the next cursor."""

    async def page(fleet: Fleet) -> tuple[Sequence[T], int | None]:
        found = await fetch(fleet, limit + 1)
        return found[:limit], (await count(fleet) if len(found) > limit else None)

    shown, total = _call(ctx, page)
    if as_json:
        _print_json([listing.record(item) for item in shown])
    else:
        _print_table(
            listing.title,
            listing.columns,
            map(listing.row, shown),
            whole=listing.whole,
            widest=listing.widest,
        )
    if total is not None:
        cursor = shlex.quote(str(listing.cursor(shown[-1])))
        _say(f"showing {len(shown):,} of {total:,}; next page: --after {cursor}", stderr=True)


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
    api_port: Annotated[
        int | None,
        typer.Option(help="HTTP API port (0: any free one). [default: 8025]"),
    ] = None,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate",
            help="Send to a simulated internet on loopback: bounces, throttling, late "
            "DSNs and complaints by domain profile, no real mail (MAILFLEET_SIMULATE).",
        ),
    ] = False,
) -> None:
    """Run an agent: provision the addresses it declares and serve until Ctrl-C or SIGTERM.

    The SMTP server (the MX) listens on 127.0.0.1:2525 unless MAILFLEET_SMTP_PORT
    or --smtp-port says otherwise.
    """
    session = _session(ctx)
    port = smtp_port if smtp_port is not None else session.settings.smtp_port
    update: dict[str, Any] = {"smtp_port": 2525 if port is None else port}
    if api_port is not None:
        update["api_port"] = api_port
    if simulate:
        update["simulate"] = True
    session.settings = Settings.load(session.settings, **update)
    _serve_until_signal(ctx, reference, _run_agent)
    _say("mailfleet stopped. Goodbye.")


async def _run_agent(fleet: Fleet, agent: type[Agent]) -> None:
    import anyio

    from .cli_api import serve_fleet_api

    grants = await fleet.register(agent)
    async with anyio.create_task_group() as tasks:
        serving = await tasks.start(fleet.serve)
        api = await tasks.start(serve_fleet_api, fleet)
        _print_table(
            f"grants of {agent.__qualname__} ({agent.agent_name()})",
            ("address", "grant", "workspace"),
            ((grant.address, grant.id, grant.workspace) for grant in grants),
        )
        _say(f"database: {fleet.database.display_url}")
        if serving.smtp_port is not None:
            _say(f"SMTP: {fleet.settings.smtp_host}:{serving.smtp_port} (mail the addresses above)")
        _say(f"outbound: {_outbound_line(fleet)}")
        api_url = f"http://{fleet.settings.api_host}:{api.port}"
        key = "" if api.key is None else f"; API key: {api.key}"
        _say(f"HTTP API: {api_url}/v1 (docs: {api_url}/docs){key}")
        _say(f"application: {fleet.application.name}; serving, press Ctrl-C to stop")


def _outbound_line(fleet: Fleet) -> str:
    """Where a serving fleet's outbound mail goes, for ``run``'s banner."""
    settings, simulator = fleet.settings, fleet.simulator
    if simulator is not None:
        profiles = ", ".join(sorted(simulator.profiles))
        return f"simulated internet on 127.0.0.1:{simulator.port} (profiles: {profiles})"
    if settings.relay_host:
        return f"relay {settings.relay_host}:{settings.relay_port}"
    return "dev mode (local grants get it, the rest is captured: `mailfleet outbox list`)"


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
    import anyio

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
    from .runtime.fleet import Fleet

    session = _session(ctx)
    settings = session.settings
    session.announce()

    async def serving(stop: Any, agent: type[Agent]) -> None:
        async with Fleet(settings) as fleet:
            with stop:
                await serve(fleet, agent)

    _until_signal(serving, lambda: _load_agent(reference))


def _until_signal(main: Callable[[Any, T], Awaitable[None]], prepare: Callable[[], T]) -> None:
    """Run ``main(stop, prepare())`` in an event loop until SIGINT or SIGTERM cancels
    ``stop``, the cancel scope ``main`` enters around its serving part.

    Opening and closing (threads, uninterruptible) are not cancelled: a signal
    while ``main`` opens what it serves cancels ``stop`` as it is entered. A
    signal during ``prepare`` (importing the agent...) ends the command too.
    """
    import anyio

    async def guarded(prepared: T) -> None:
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tasks:
                    stop = anyio.CancelScope()
                    tasks.start_soon(_cancel_on_signal, signals, stop)
                    await main(stop, prepared)
                    tasks.cancel_scope.cancel()
        finally:
            # Closing the receiver gave SIGTERM its default action (death) back.
            signal.signal(signal.SIGTERM, signal.default_int_handler)

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C
    try:
        anyio.run(guarded, prepare())
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

_DEAD_LETTERS: _Listing[DeadLetter] = _Listing(
    "dead letters",
    ("entry", "grant", "message", "attempts", "subject", "error"),
    row=lambda d: (d.entry_id, d.grant_id, d.message_id, d.attempts, d.subject, d.error),
    record=asdict,
    cursor=lambda d: d.entry_id,
    whole=("entry",),
    widest={"subject": 40, "error": 60},
)


@dead_letters_app.command("list")
def list_dead_letters(
    ctx: typer.Context, limit: Limit = 100, after: AfterId = None, as_json: AsJson = False
) -> None:
    """List dead letters, oldest first."""

    async def count(fleet: Fleet) -> int:
        return (await fleet.statistics()).dead_letters

    _show_page(
        ctx,
        _DEAD_LETTERS,
        lambda fleet, n: fleet.dead_letters(limit=n, after=after or 0),
        count,
        limit=limit,
        as_json=as_json,
    )


@dead_letters_app.command("replay")
def replay_dead_letters(
    ctx: typer.Context,
    entries: Annotated[
        list[int] | None, typer.Argument(help="Entry ids to replay; all when none is given.")
    ] = None,
) -> None:
    """Queue dead letters again, behind their grants' current work.

    Naming entries none of which is a dead letter is an error (exit 1).
    """
    count = _call(ctx, lambda fleet: fleet.replay_dead_letters(entries or None))
    named = len(set(entries or ()))
    if named and not count:
        listed = ", ".join(map(str, sorted(set(entries or ()))))
        raise NotFound("entries", f"no dead letter {listed}: nothing replayed")
    if not named:
        _say(f"replayed {_plural(count, 'dead letter')}" if count else "no dead letters to replay")
    else:
        missing = (
            "" if count == named else f"; {named - count:,} of those named are not dead letters"
        )
        _say(f"replayed {_plural(count, 'dead letter')}{missing}")


# -- outbox ------------------------------------------------------------------------------------

outbox_app = typer.Typer(no_args_is_help=True, help="Outbound mail: queued, sent, captured.")
app.add_typer(outbox_app, name="outbox")


def _outbound_json(view: OutboundView) -> dict[str, Any]:
    record = asdict(view)
    record["recipients"] = list(view.recipients)
    raw = record.pop("raw")
    if raw is not None:
        record["size"] = len(raw)
        record["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return record


_OUTBOX: _Listing[OutboundView] = _Listing(
    "outbox",
    ("id", "status", "to", "subject", "attempts", "last answer"),
    row=lambda v: (
        v.id,
        v.status,
        ", ".join(v.recipients),
        v.subject,
        v.attempts,
        f"{v.last_code or ''} {v.last_response or ''}".strip(),
    ),
    record=_outbound_json,
    cursor=lambda v: v.id,
    whole=("id", "status"),
    widest={"to": 40, "subject": 40},
)

_OUTBOUND_STATUSES = ("pending", "sent", "bounced", "captured")


@outbox_app.command("list")
def list_outbox(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="pending, sent, bounced or captured.")] = None,
    limit: Limit = 100,
    after: AfterId = None,
    as_json: AsJson = False,
) -> None:
    """List outbound messages, newest first (in dev mode, the captured ones too)."""
    if status is not None and status not in _OUTBOUND_STATUSES:
        raise typer.BadParameter(f"one of {', '.join(_OUTBOUND_STATUSES)}", param_hint="--status")
    _show_page(
        ctx,
        _OUTBOX,
        lambda fleet, n: fleet.outbox(status=status, limit=n, after=after),
        lambda fleet: fleet.outbox_count(status),
        limit=limit,
        as_json=as_json,
    )


@outbox_app.command("show")
def show_outbox(
    ctx: typer.Context,
    outbound_id: Annotated[int, typer.Argument(metavar="ID")],
    raw: Annotated[
        bool, typer.Option("--raw", help="Write the exact bytes sent to stdout, nothing else.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print a JSON object: the fields, and raw_base64 (the exact bytes)."
        ),
    ] = False,
) -> None:
    """Print one outbound message as it was signed and sent.

    Its status goes to stderr, the message to stdout (line ends as LF);
    --raw writes the exact bytes (CRLF) and nothing else: `> reply.eml`.
    """
    if raw and as_json:
        raise typer.BadParameter("--raw or --json, not both", param_hint="--raw")
    view = _call(ctx, lambda fleet: fleet.outbox_message(outbound_id))
    if view is None or view.raw is None:
        raise NotFound("id", f"no outbound message {outbound_id}")
    if as_json:
        _print_json(_outbound_json(view))
        return
    if raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(view.raw)
        sys.stdout.buffer.flush()
        return
    _say(
        f"status: {view.status}; from {view.mail_from} to {', '.join(view.recipients)}",
        stderr=True,
    )
    sys.stdout.write(view.raw.decode("utf-8", "replace").replace("\r\n", "\n"))
    sys.stdout.flush()


# -- domains ---------------------------------------------------------------------------------


def _key_type(value: str) -> str:
    """The ``k=`` tag of a DKIM record (RFC 6376 3.6.1: rsa when absent)."""
    tags = dict(tag.strip().partition("=")[::2] for tag in value.split(";") if "=" in tag)
    return tags.get("k", "rsa").strip()


def _selectors(domain: Domain) -> str:
    keys = [(r.name.split("._domainkey.", 1)[0], _key_type(r.value)) for r in domain.dkim_records]
    return ", ".join(f"{selector} ({kind})" for selector, kind in keys) or "none"


def _domain_json(domain: Domain) -> dict[str, Any]:
    return {
        "id": domain.id,
        "name": domain.name,
        "dkim_selector": domain.dkim_selector,
        "state": domain.state,
        "authenticated": domain.authenticated,
        "audited_at": domain.audited_at,
        "audit": domain.audit,
        "created_at": domain.created_at,
        "dkim_records": [
            {
                "name": record.name,
                "type": "TXT",
                "selector": record.name.split("._domainkey.", 1)[0],
                "key_type": _key_type(record.value),
                "value": record.value,
                "strings": list(record.strings),
            }
            for record in domain.dkim_records
        ],
    }


@domains_app.command("add")
def add_domain(
    ctx: typer.Context,
    name: str,
    selector: Annotated[str, typer.Option(help="The DKIM selector.")] = "mailfleet",
) -> None:
    """Register a sending and receiving domain (idempotent), with its DKIM keys.

    A new domain gets an RSA-2048 key (selector SELECTOR) and an Ed25519 key
    (SELECTOR-ed25519); `mailfleet domains records NAME` prints the records to publish.
    """

    async def add(fleet: Fleet) -> tuple[Domain, bool]:
        known = {domain.name for domain in await fleet.domains()}
        domain = await fleet.add_domain(name, selector=selector)
        return domain, domain.name in known

    domain, existed = _call(ctx, add, create=True)
    keys = f"DKIM selectors {_selectors(domain)}"
    if existed:
        ignored = "" if selector == domain.dkim_selector else f"; --selector {selector} ignored"
        _say(f"domain {domain.name} already registered ({keys}{ignored})")
    else:
        _say(f"domain {domain.name} registered ({keys})")
        _say(f"publish its records: mailfleet domains records {domain.name}", style="dim")


@domains_app.command("rotate")
def rotate_domain_keys(
    ctx: typer.Context,
    name: str,
    selector: Annotated[
        str | None, typer.Option(help="The new RSA selector (default: BASE-rN).")
    ] = None,
) -> None:
    """Start a DKIM key rotation: a new RSA-2048 and Ed25519 pair beside the signing one.

    The new keys sign once a check (`domains check`, or the next audit) finds
    their records published; the old ones then keep theirs until retired.
    """
    domain = _call(ctx, lambda fleet: fleet.rotate_dkim(name, selector=selector))
    new = [key.selector for key in domain.dkim_keys if key.status == "next"]
    _say(f"domain {domain.name}: new DKIM selectors {', '.join(new)} (not signing yet)")
    _say(
        f"publish the new records (mailfleet domains records {domain.name}); they sign "
        f"once a check finds them (mailfleet domains check {domain.name})",
        style="dim",
    )


@domains_app.command("retire")
def retire_domain_key(ctx: typer.Context, name: str, selector: str) -> None:
    """Remove a DKIM key a rotation replaced (retiring): its record may then go."""
    domain = _call(ctx, lambda fleet: fleet.retire_dkim(name, selector))
    _say(
        f"domain {domain.name}: DKIM key {selector} retired; remove its DNS record "
        f"{selector}._domainkey.{domain.name}"
    )


@domains_app.command("list")
def list_domains(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the application's domains."""
    found = _call(ctx, lambda fleet: fleet.domains())
    if as_json:
        _print_json([_domain_json(domain) for domain in found])
        return
    _print_table(
        "domains",
        ("domain", "DKIM selectors", "state", "checked", "created"),
        ((d.name, _selectors(d), d.state, d.audited_at, d.created_at) for d in found),
    )


@domains_app.command("records")
def domain_records(ctx: typer.Context, name: str, as_json: AsJson = False) -> None:
    """Print the DNS records to publish for a domain, as a zone file snippet.

    MX (the fleet's MX host), SPF (the relay's addresses or include), one DKIM
    record per key, DMARC, the bounce domain's MX and SPF when it differs, and
    the advised MTA-STS and TLS-RPT records. A TXT value over 255 bytes (an RSA
    key) is split into several quoted strings, as DNS requires. --json gives
    each record's name, type, value, purpose, required and strings.
    """
    records = _call(ctx, lambda fleet: fleet.domain_records(name))
    if as_json:
        _print_json([record.as_json() for record in records])
        return
    for record in records:
        if record.purpose and not record.required:
            _say(f"; advised ({record.purpose}):")
        _say(record.zone_line())


_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red"}


@domains_app.command("check")
def domain_check(ctx: typer.Context, name: str, as_json: AsJson = False) -> None:
    """Check a domain's published DNS now: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT.

    Each check answers pass, warn or fail with what was found and the fix. The
    verdict is stored: a failed domain does not send (outside dev mode) until a
    check passes. Exits 1 when a check fails.
    """
    report = _call(ctx, lambda fleet: fleet.check_domain(name))
    if as_json:
        _print_json(report.as_json())
    else:
        for check in report.checks:
            line = f"{check.status:<4}  {check.name:<18} {check.record}: {check.explanation}"
            _say(line, style=_STATUS_STYLE.get(check.status))
            if check.fix and check.status != "pass":
                _say(f"      fix: {check.fix}", style="dim")
        _say(f"{report.domain}: {report.state}")
    if report.state == "failed":
        raise typer.Exit(1)


# -- workspaces ------------------------------------------------------------------------------


def _workspace_json(workspace: Workspace) -> dict[str, Any]:
    return {
        "id": workspace.id,
        "name": workspace.name,
        "is_default": workspace.is_default,
        "grant_count": workspace.grant_count,
        "patterns": list(workspace.patterns),
        "policy_version": workspace.policy_version,
        "policy": workspace.policy.to_json(),
    }


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
def list_workspaces(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List workspaces with their grant counts, patterns and key policy figures (all of
    them: an application has few)."""
    found = _call(ctx, lambda fleet: fleet.workspaces())
    if as_json:
        _print_json([_workspace_json(workspace) for workspace in found])
        return
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
            for workspace in found
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
        _call(
            ctx,
            lambda fleet: fleet.create_workspace(name, policy=policy, patterns=listed),
            create=True,
        )
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
    """Move grants (ids or addresses) into a workspace in bulk and pin them there.

    Every grant named must exist (else nothing moves, exit 1).
    """
    keys = _keys(grants, from_file, what="grants")
    moved = _call(ctx, lambda fleet: fleet.move_grants(keys, workspace))
    there = "" if moved else " (they were in it already; pinned there now)"
    _say(f"moved {_plural(moved, 'grant')} to {workspace}{there}")


@workspaces_app.command("regroup")
def regroup(
    ctx: typer.Context,
    created_after: Annotated[
        str | None,
        typer.Option(
            "--created-after",
            metavar="ISO",
            help="Only grants created after this time (ISO-8601; UTC without an offset).",
        ),
    ] = None,
    domain: Annotated[
        str | None, typer.Option(metavar="DOMAIN", help="Only the grants of this domain.")
    ] = None,
) -> None:
    """Re-apply the auto-group patterns to the grants not pinned to a workspace.

    Runs in batches of 1,000 grants, each its own transaction, with a progress bar:
    a serving fleet goes on meanwhile.
    """
    since = _iso_time(created_after, "created-after") if created_after else None
    with _progress("regrouping", total=0) as advance:
        job = _call(
            ctx,
            lambda fleet: fleet.regroup_job(created_after=since, domain=domain, progress=advance),
        )
    _say(f"moved {_plural(job.moved, 'grant')} (of {job.done:,} looked at)")


def _iso_time(value: str, option: str) -> datetime:
    """An ISO-8601 time of an option (a trailing Z is UTC)."""
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            option, f"{value!r} is not an ISO-8601 time (2026-01-31T12:00:00Z)", value=value
        ) from None


@workspaces_app.command("delete")
def delete_workspace(ctx: typer.Context, name: WorkspaceName) -> None:
    """Delete an empty workspace other than the default."""
    _call(ctx, lambda fleet: fleet.delete_workspace(name))
    _say(f"workspace {name} deleted")


# -- grants ------------------------------------------------------------------------------------


def _grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "address": grant.address,
        "workspace": grant.workspace,
        "workspace_id": grant.workspace_id,
        "pinned": grant.workspace_pinned,
        "status": grant.status.value,
        "agent": grant.agent,
        "stored_bytes": grant.stored_bytes,
        "metadata": grant.metadata,
        "created_at": grant.created_at,
    }


_GRANTS: _Listing[Grant] = _Listing(
    "grants",
    ("address", "id", "workspace", "status", "agent", "created"),
    row=lambda g: (g.address, g.id, g.workspace, g.status.value, g.agent, g.created_at),
    record=_grant_json,
    cursor=lambda g: g.address,
    whole=("address", "id"),
)

_UNSERVED: _Listing[UnservedGrant] = _Listing(
    "unserved grants",
    ("address", "id", "agent", "waiting", "workspace"),
    row=lambda u: (
        u.grant.address,
        u.grant.id,
        u.grant.agent or "(none)",
        u.waiting,
        u.grant.workspace,
    ),
    record=lambda u: {**_grant_json(u.grant), "waiting": u.waiting},
    cursor=lambda u: u.grant.address,
    whole=("address", "id", "waiting"),
)


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
    after: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS", help="The next page: the last address shown (the footer says it)."
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List grants by address, optionally of one workspace or status, or the unserved ones."""
    if unserved:
        if workspace is not None or status is not None:
            raise typer.BadParameter("--unserved takes no --workspace or --status")

        async def unserved_count(fleet: Fleet) -> int:
            return (await fleet.statistics()).unserved_grants

        _show_page(
            ctx,
            _UNSERVED,
            lambda fleet, n: fleet.unserved_grants(limit=n, after=after),
            unserved_count,
            limit=limit,
            as_json=as_json,
        )
        return
    _show_page(
        ctx,
        _GRANTS,
        lambda fleet, n: fleet.grants(workspace=workspace, status=status, limit=n, after=after),
        lambda fleet: fleet.count_grants(workspace=workspace, status=status),
        limit=limit,
        as_json=as_json,
    )


@grants_app.command("show")
def show_grant(ctx: typer.Context, address: str, as_json: AsJson = False) -> None:
    """Show one grant: its status, workspace and agent, and its reputation at each level
    (grant, workspace, domain, application): sends in the window, bounce and complaint
    rates, state and why."""

    async def read(fleet: Fleet) -> tuple[Grant, list[ReputationLevel]]:
        grant = await fleet.grant(address)
        return grant, await fleet.reputation(grant.id)

    grant, levels = _call(ctx, read)
    if as_json:
        _print_json({**_grant_json(grant), "reputation": [lv.as_json() for lv in levels]})
        return
    _say(f"{grant.address} ({grant.id}): {grant.status.value}, workspace {grant.workspace}")
    if levels and levels[0].breaker != "closed":
        _say(f"circuit breaker: {levels[0].breaker} (its mail leaves as the breaker allows)")
    _print_table(
        "reputation",
        ("level", "state", "sends", "bounces", "complaints", "why"),
        (
            (
                level.kind,
                level.state.value,
                level.sample,
                f"{level.bounces} ({level.bounce_rate:.2%})",
                f"{level.complaints} ({level.complaint_rate:.2%})",
                level.reason,
            )
            for level in levels
        ),
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
    each domain, else the default. Invalid addresses are listed with the reason;
    when every address is invalid, nothing is provisioned and the exit code is 1.
    """
    keys = _keys(addresses, from_file, what="addresses")
    agent_class = _load_agent(agent) if agent else None
    with _progress("provisioning", total=len(keys)) as advance:
        results = _call(
            ctx,
            lambda fleet: fleet.provision_many(
                keys, workspace=workspace, agent=agent_class, progress=advance
            ),
            create=True,
        )
    _print_provisioned(results)
    if not any(result.ok for result in results):
        raise InvalidInput("addresses", f"none of the {len(results):,} was provisioned")


@contextmanager
def _progress(description: str, *, total: int) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on a terminal's stderr; yields the function that reports."""
    from rich.progress import Progress

    console = _console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print_provisioned(results: Sequence[ProvisionResult]) -> None:
    counts = Counter(result.outcome for result in results)
    _say(", ".join(f"{counts[outcome]:,} {outcome.value}" for outcome in ProvisionOutcome))
    invalid = [(r.address, r.reason) for r in results if r.outcome is ProvisionOutcome.INVALID]
    if invalid:
        _print_table("invalid addresses", ("address", "reason"), invalid)


@grants_app.command("deprovision")
def deprovision(
    ctx: typer.Context,
    grants: GrantKeys = None,
    from_file: FromFile = None,
) -> None:
    """Tear down grants (ids or addresses) with their mail and queued work.

    When none of the grants named exists, nothing is removed and the exit code is 1.
    """
    keys = _keys(grants, from_file, what="grants")
    removed = _call(ctx, lambda fleet: fleet.deprovision_many(keys))
    named = len(set(keys))
    if not removed:
        raise NotFound("grants", f"none of the {_plural(named, 'grant')} named exists")
    _say(f"removed {_plural(len(removed), 'grant')} ({named:,} named)")


# -- events ------------------------------------------------------------------------------------

# A payload's cell leaves out what other columns show and what is empty.
_PAYLOAD_CELL = 60


def _payload_cell(event: Event) -> str:
    shown = {k: v for k, v in event.payload.items() if k != "grant_id" and v not in (None, "")}
    text = " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
        for k, v in shown.items()
    )
    return text if len(text) <= _PAYLOAD_CELL else text[: _PAYLOAD_CELL - 1] + "…"


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "grant_id": event.grant_id,
        "created_at": event.created_at,
        "payload": event.payload,
    }


_EVENTS: _Listing[Event] = _Listing(
    "events",
    ("id", "type", "grant", "time", "payload"),
    row=lambda e: (e.id, e.type, e.grant_id, e.created_at, _payload_cell(e)),
    record=_event_json,
    cursor=lambda e: e.id,
    whole=("id", "type"),
    widest={"payload": _PAYLOAD_CELL},
)


@app.command("events")
def list_events(
    ctx: typer.Context,
    after: Annotated[
        int, typer.Option(min=0, metavar="ID", help="Only events after this event id.")
    ] = 0,
    limit: Limit = 100,
    kind: Annotated[
        str | None, typer.Option("--type", help="Only this type, e.g. grant.created.")
    ] = None,
    grant: Annotated[
        str | None, typer.Option(metavar="GRANT", help="Only this grant's (id or address).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List outbox events, oldest first: what changed, and for which grant.

    The table shortens payloads; --json has them whole.
    """

    async def grant_id(fleet: Fleet) -> str | None:
        return None if grant is None else (await fleet.grant(grant)).id

    async def fetch(fleet: Fleet, n: int) -> list[Event]:
        return await fleet.events(after=after, type=kind, grant=await grant_id(fleet), limit=n)

    async def count(fleet: Fleet) -> int:
        return await fleet.count_events(type=kind, grant=await grant_id(fleet))

    _show_page(ctx, _EVENTS, fetch, count, limit=limit, as_json=as_json)


# -- status ------------------------------------------------------------------------------------


@app.command("status")
def status(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Show the application's state in the store: grants, queues, workers, outbox.

    What waits, what is dead, what no live worker serves: the figures of
    Fleet.statistics() that a separate process can see.
    """

    async def read(fleet: Fleet) -> dict[str, Any]:
        figures = await fleet.statistics()
        return {
            "application": fleet.application.name,
            "database": _session(ctx).database,
            "grants": await fleet.count_grants(),
            "waiting": figures.waiting,
            "dead_letters": figures.dead_letters,
            "outbound_pending": figures.outbound_pending,
            "live_workers": figures.live_workers,
            "unserved_grants": figures.unserved_grants,
            "unserved_waiting": figures.unserved_waiting,
        }

    found = _call(ctx, read)
    if as_json:
        _print_json(found)
        return
    _print_table(
        f"status of {found['application']}",
        ("figure", "value"),
        ((name.replace("_", " "), value) for name, value in found.items() if name != "application"),
    )


def main() -> None:
    """Run the ``mailfleet`` command."""
    try:
        app(prog_name="mailfleet")
    finally:
        # The process ends with the command, everything it opened closed by now: spare
        # the interpreter's exit its collections over every object left (a tenth of
        # a second after an operator command, as long as the command itself).
        gc.freeze()


# The deliverability commands live in their own module; importing it registers them.
from . import cli_api as _api  # noqa: E402, F401
from . import cli_apply as _apply  # noqa: E402, F401
from . import cli_deliverability as _deliverability  # noqa: E402, F401
from . import cli_policy as _policy  # noqa: E402, F401
