"""A private Dovecot (IMAP) on loopback for the tests, started once per test session.

Nothing is installed here: ``dovecot-imapd`` comes from Debian
(``apt-get install -y -qq dovecot-imapd``, done by ``.ci/run``). Without it
(or without root, which Dovecot's privilege separation needs) the tests that
use the ``dovecot_server`` fixture skip with the reason, except under CI (``CI=true``)
where they fail.

Each :class:`Dovecot` runs ``dovecot -c <config>`` with everything in a
world-readable temporary folder: base_dir, state, log, a passwd-file of
users ``user1``...``userN`` (password ``se"cr\\et-<n>``), maildirs owned by the
system user ``vmail`` (created with ``useradd`` if missing), and a
self-signed certificate for 127.0.0.1 (``ca_file``). It listens on a free
port for plain IMAP and STARTTLS (``port``) and another for implicit TLS
(``tls_port``); ``capabilities`` replaces what it announces (e.g. no IDLE).
:meth:`stop` is ``kill $(cat base_dir/master.pid)``.
Tests put mail in with IMAP APPEND through the stdlib's ``imaplib``.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import free_port, unavailable

__all__ = ["Dovecot", "dovecot_available", "dovecot_fixture"]

HOST = "127.0.0.1"
MAIL_USER = "vmail"


def _binary() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None,
    )


def dovecot_available() -> None:
    """Skip (fail on CI) the calling test when no private Dovecot can run here."""
    reason = None
    if _binary() is None:
        reason = "dovecot is not installed (apt-get install -y -qq dovecot-imapd)"
    elif shutil.which("openssl") is None:
        reason = "openssl is not installed (needed for the test certificate)"
    elif os.geteuid() != 0:
        reason = "the private Dovecot needs root (for its privilege separation)"
    if reason is not None:
        unavailable(reason, "CI must run the IMAP tests")


def _mail_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", MAIL_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(MAIL_USER)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its reaper does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Dovecot:
    """One private Dovecot instance; a context manager that starts and stops it."""

    def __init__(self, *, users: int = 100, capabilities: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailfleet-dovecot-"))
        self.root.chmod(0o755)  # login and mail processes run as other users
        self.port = free_port(HOST)
        self.tls_port = free_port(HOST)
        self.ca_file = self.root / "cert.pem"
        # Quotes and backslashes: passwords must survive IMAP quoting and SASL.
        self._users = [(f"user{n}", f'se"cr\\et-{n}') for n in range(1, users + 1)]
        self._capabilities = capabilities
        self._next_user = 0
        self._write_config()

    # -- set-up -----------------------------------------------------------------------

    def _write_config(self) -> None:
        root = self.root
        owner = _mail_user()
        for folder in ("run", "state", "mail"):
            (root / folder).mkdir()
        os.chown(root / "mail", owner.pw_uid, owner.pw_gid)
        (root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self._users))
        subprocess.run(
            [
                *"openssl req -x509 -newkey rsa:2048 -nodes -days 2".split(),
                *("-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}"),
                *("-keyout", str(root / "key.pem"), "-out", str(self.ca_file)),
            ],
            check=True,
            capture_output=True,
        )
        (root / "dovecot.conf").write_text(
            f"""\
protocols = imap
listen = {HOST}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
ssl = yes
ssl_cert = <{self.ca_file}
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = {min(owner.pw_uid, 500)}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={root}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.tls_port}
    ssl = yes
  }}
}}
# Failed logins are answered at once (tests fail logins on purpose, all from 127.0.0.1).
auth_failure_delay = 0
{f"imap_capability = {self._capabilities}" if self._capabilities else ""}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        )

    # -- running ----------------------------------------------------------------------

    @property
    def _pid_file(self) -> Path:
        return self.root / "run" / "master.pid"

    def start(self) -> None:
        """Start the server and wait until it answers on both ports."""
        binary = _binary()
        assert binary is not None
        # The daemon keeps the descriptors it inherits: no pipes, or run() waits for it.
        errors = self.root / "startup.err"
        with errors.open("wb") as sink:
            result = subprocess.run(
                [binary, "-c", str(self.root / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )
        if result.returncode != 0:
            raise RuntimeError(f"dovecot did not start: {errors.read_text()}\n{self.log()}")
        deadline = time.monotonic() + 10
        while True:
            try:
                for port in (self.port, self.tls_port):
                    socket.create_connection((HOST, port), timeout=1).close()
                if self._pid_file.exists():  # written a moment after the ports open
                    return
                time.sleep(0.02)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot does not answer:\n{self.log()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """``kill $(cat base_dir/master.pid)``, then end the client processes it leaves.

        Dovecot's master exits in about a second, but an ``imap`` process in
        IDLE outlives it by some ten seconds before it says BYE. The master's
        children are noted while it shuts down, and those still running when
        it is gone get their SIGTERM too: the server is really gone on return.
        """
        try:
            master = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        children = set(_children(master))
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(master):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot (pid {master}) did not stop")
            children.update(_children(master))
            time.sleep(0.02)
        self._pid_file.unlink(missing_ok=True)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        while any(_alive(pid) for pid in children):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot processes {sorted(children)} did not stop")
            time.sleep(0.02)

    def __enter__(self) -> Dovecot:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        """The server's log so far."""
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- users and mail ---------------------------------------------------------------

    def user(self) -> tuple[str, str]:
        """A user no other test has used: ``(username, password)``."""
        if self._next_user >= len(self._users):
            raise RuntimeError("every test user is taken; raise `users`")
        found = self._users[self._next_user]
        self._next_user += 1
        return found

    @contextlib.contextmanager
    def imap(self, user: tuple[str, str]) -> Iterator[imaplib.IMAP4]:
        """A logged-in stdlib client (blocking: call it through ``anyio.to_thread``)."""
        client = imaplib.IMAP4(HOST, self.port, timeout=10)
        try:
            client.login(*user)
            yield client
        finally:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                client.shutdown()

    def append(self, user: tuple[str, str], *messages: bytes, mailbox: str = "INBOX") -> None:
        """APPEND ``messages`` to the user's ``mailbox``."""
        with self.imap(user) as client:
            for raw in messages:
                status, answer = client.append(mailbox, None, None, raw)
                assert status == "OK", answer

    def create(self, user: tuple[str, str], mailbox: str) -> None:
        """CREATE a mailbox."""
        with self.imap(user) as client:
            status, answer = client.create(mailbox)
            assert status == "OK", answer

    def delete(self, user: tuple[str, str], mailbox: str) -> None:
        """DELETE a mailbox (its UIDVALIDITY goes with it)."""
        with self.imap(user) as client:
            status, answer = client.delete(mailbox)
            assert status == "OK", answer

    def uidvalidity(self, user: tuple[str, str], mailbox: str = "INBOX") -> int:
        """The mailbox's UIDVALIDITY (STATUS)."""
        with self.imap(user) as client:
            status, answer = client.status(mailbox, "(UIDVALIDITY)")
            assert status == "OK", answer
            found = re.search(rb"UIDVALIDITY (\d+)", answer[0] or b"")
            assert found is not None, answer
            return int(found.group(1))


@pytest.fixture(scope="session", name="dovecot_server")
def dovecot_fixture() -> Iterator[Dovecot]:
    """``dovecot_server``: the session's private Dovecot; each test takes a user with ``.user()``.

    Import it into the test module (``from dovecot import dovecot_fixture``).
    """
    dovecot_available()
    with Dovecot() as server:
        yield server
