"""A private PostgreSQL server for fault tests: one the test may stop, restart and break.

The shared server on 127.0.0.1:5432 (``tests/conftest.py``) must never go down under
other tests, so a test that takes the database away starts its own:
:class:`PrivatePostgres` runs Debian's ``initdb`` and ``pg_ctl`` (the newest
``/usr/lib/postgresql/*/bin``) on a free loopback port, with trust authentication
for the user ``postgres`` and one database (``mailfleet``) whose URL is :attr:`url`.

PostgreSQL refuses to run as root: when we are root (as here and on CI) every
server command runs as the OS user ``postgres`` (``runuser -u postgres --``) and
the data directory is owned by it. Without the binaries or that user the tests
that need a private server skip with the reason (:func:`private_postgres_available`),
except under CI (``CI=true``) where they fail.

Layout: the server's home (log file ``postgres.log``, Unix socket, working
directory) is a fresh folder under the system temporary folder; the data
directory is ``<data_parent>/pgdata`` when a ``data_parent`` is given (e.g. a small
tmpfs, for a full-disk test: it must be reachable by the ``postgres`` user) and
``<home>/pgdata`` otherwise. The log never goes to ``data_parent``, so a full data
disk does not also silence the log.

Use it as a context manager (:func:`private_postgres` adds the skip check) or
through the ``private_pg`` fixture (defined here, re-exported by
``tests/faults/conftest.py``)::

    with PrivatePostgres() as pg:      # initdb + start + CREATE DATABASE
        url = pg.url                   # postgresql://postgres@127.0.0.1:PORT/mailfleet
        pg.restart()                   # pg_ctl restart -m fast
        pg.stop(); time.sleep(3); pg.start()
        pg.stop(mode="immediate")      # as if the server crashed
    # stopped and removed

The port is chosen once, so :attr:`url` stays the same across stops and starts.
``fsync`` is off (the data survives any stop or crash of the server, only not a
crash of the machine), which keeps start-up and checkpoints fast.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

import pytest

from support import free_port, unavailable

__all__ = [
    "PrivatePostgres",
    "postgres_bindir",
    "private_pg",
    "private_postgres",
    "private_postgres_available",
]

HOST = "127.0.0.1"
OS_USER = "postgres"
DATABASE = "mailfleet"
_TIMEOUT = 60  # seconds pg_ctl waits for a start or stop


def postgres_bindir() -> Path | None:
    """The folder of the newest installed PostgreSQL server binaries, if any."""
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def _run_as_user() -> bool:
    return os.geteuid() == 0


def private_postgres_available() -> None:
    """Skip (fail on CI) the calling test when no private PostgreSQL can run here."""
    reason = None
    if postgres_bindir() is None:
        reason = "PostgreSQL's server binaries are not installed (apt-get install postgresql)"
    elif _run_as_user():
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            reason = f"there is no OS user {OS_USER!r} to run a private PostgreSQL as"
        if reason is None and shutil.which("runuser") is None:
            reason = "runuser is missing (needed to run PostgreSQL as a non-root user)"
    if reason is not None:
        unavailable(reason, "CI must run the database fault tests")


class PrivatePostgres:
    """One private PostgreSQL server: :meth:`start`, :meth:`stop`, :meth:`restart`, :attr:`url`.

    ``data_parent``: the folder to hold the data directory (``pgdata``), e.g. a
    tmpfs mount point; it is chowned to the ``postgres`` user. ``settings``:
    extra server settings (``postgresql.conf`` names), written into
    ``postgresql.auto.conf`` before the first start.
    """

    def __init__(
        self,
        data_parent: Path | None = None,
        *,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server binaries are not installed")
        self.bindir = bindir
        self.port = free_port(HOST)
        self.home = Path(tempfile.mkdtemp(prefix="mailfleet-pg-"))
        self.home.chmod(0o755)
        self._data_parent = data_parent
        self.data_dir = (data_parent or self.home) / "pgdata"
        self.log_path = self.home / "postgres.log"
        self.settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.home}'",
            "fsync": "off",
            "max_connections": "100",
            "log_min_messages": "warning",
            **dict(settings or {}),
        }
        self._initialised = False
        if _run_as_user():
            user = pwd.getpwnam(OS_USER)
            os.chown(self.home, user.pw_uid, user.pw_gid)
            if data_parent is not None:
                os.chown(data_parent, user.pw_uid, user.pw_gid)

    # -- the URL --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The mailfleet-facing URL of the database ``mailfleet`` on this server."""
        return f"postgresql://{OS_USER}@{HOST}:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        """The URL of the maintenance database ``postgres`` (for CREATE/DROP DATABASE)."""
        return f"postgresql://{OS_USER}@{HOST}:{self.port}/postgres"

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster and the database on the first call; start the server
        and wait until it accepts connections."""
        if not self._initialised:
            self._initdb()
        self._pg_ctl("start", "-w", "-t", str(_TIMEOUT), "-l", str(self.log_path))
        if not self._initialised:
            self._client("createdb", DATABASE)
            self._initialised = True

    def stop(self, *, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE`` and wait until it is down: ``fast`` (roll back the
        open transactions, close every session), ``smart`` (wait for the sessions to
        end) or ``immediate`` (abort at once, like a crash; recovery runs at the next
        start)."""
        self._pg_ctl("stop", "-w", "-t", str(_TIMEOUT), "-m", mode)

    def restart(self, *, mode: str = "fast") -> None:
        """``pg_ctl restart -m MODE``: stop (ending every session) and start again."""
        self._pg_ctl("restart", "-w", "-t", str(_TIMEOUT), "-m", mode, "-l", str(self.log_path))

    def is_running(self) -> bool:
        """Whether the server is up (``pg_ctl status``)."""
        result = self._pg_ctl("status", check=False)
        return result.returncode == 0

    def log(self) -> str:
        """The server's log so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop the server if it runs and remove its folders."""
        if self.data_dir.exists() and self.is_running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands -------------------------------------------------------------------------

    def _initdb(self) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self._server_command(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            OS_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        lines = [f"{name} = {value}" for name, value in self.settings.items()]
        (self.data_dir / "postgresql.auto.conf").write_text("\n".join(lines) + "\n")
        if _run_as_user():
            user = pwd.getpwnam(OS_USER)
            os.chown(self.data_dir / "postgresql.auto.conf", user.pw_uid, user.pw_gid)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._server_command(
            str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args, check=check
        )

    def _server_command(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", OS_USER, "--"] if _run_as_user() else []
        result = subprocess.run(
            [*prefix, *argv],
            cwd=self.home,
            env={**os.environ, "LC_ALL": "C"},
            capture_output=True,
            text=True,
            timeout=_TIMEOUT + 30,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n--- postgres.log ---\n{self.log()[-4000:]}"
            )
        return result

    def _client(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bindir / program), "-h", HOST, "-p", str(self.port), "-U", OS_USER, *args],
            check=True,
            capture_output=True,
            timeout=_TIMEOUT,
        )

    def wait_down(self, within: float = 10.0) -> None:
        """Wait until the port refuses connections (after a stop)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex((HOST, self.port)) != 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"PostgreSQL on port {self.port} still accepts connections")


@contextlib.contextmanager
def private_postgres(
    data_parent: Path | None = None, *, settings: Mapping[str, str] | None = None
) -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres` (skipping when none can run), removed afterwards."""
    private_postgres_available()
    with PrivatePostgres(data_parent, settings=settings) as server:
        yield server


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A started private PostgreSQL server that the test may stop, restart or crash;
    stopped and removed afterwards (re-exported by ``tests/faults/conftest.py``)."""
    with private_postgres() as server:
        yield server
