"""Logging for operators: one logger per component, rich in a terminal, JSON lines otherwise.

Every component logs through :mod:`logging` under ``mailfleet.<component>``:

=======================  ===========================================================
``mailfleet.fleet``      start-up, serving, shutdown
``mailfleet.intake``     every message stored for a grant (INFO: grant, size, ids)
``mailfleet.worker``     dead letters, leases lost, grants given back
``mailfleet.agents``     handler failures (WARNING, with the traceback)
``mailfleet.outbox``     sends refused at the gates (INFO)
``mailfleet.sender``     every send outcome (INFO sent / deferred, WARNING bounced)
``mailfleet.feedback``   reports received (INFO attributed; WARNING naming no send)
``mailfleet.directory``  grant status changes, provisioning and teardown in bulk
``mailfleet.mx``         the SMTP server (INFO: refusals; DEBUG: sessions)
``mailfleet.auth``       inbound verification (DEBUG: what SPF could not evaluate)
``mailfleet.relay``      connections to the outbound relay
``mailfleet.store``      the database (checkpoints, unavailability)
``mailfleet.plugins``    plugins found, loaded or skipped
``mailfleet.imap``       the IMAP plugin's mailboxes
=======================  ===========================================================

A library user configures logging as for any library. The command line calls
:func:`configure_logging` with ``--log-level`` / ``MAILFLEET_LOG_LEVEL`` and
``--log-format`` / ``MAILFLEET_LOG_FORMAT``: ``rich`` (colour, for a
terminal), ``json`` (one object per line, for collectors), ``text`` (plain
lines), or ``auto`` (rich on a terminal, JSON otherwise). Log lines carry ids,
sizes, addresses and SMTP replies; never a message body, a password or a key.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "configure_logging"]

LogFormat = Literal["auto", "rich", "json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "rich", "json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")

_HANDLER = "mailfleet"
# What every LogRecord has; anything else on a record was passed as ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(
    level: str = "info", format: LogFormat = "auto", *, stream: IO[str] | None = None
) -> None:
    """Send mailfleet's logs (and its libraries' warnings) to ``stream`` (stderr).

    Replaces what an earlier call installed, so it may be called again.
    """
    out = stream if stream is not None else sys.stderr
    chosen = format
    if chosen == "auto":
        chosen = "rich" if out.isatty() else "json"
    handler: logging.Handler
    if chosen == "rich":
        from rich.console import Console  # imported only for a terminal
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(file=out),
            show_path=False,
            markup=False,
            rich_tracebacks=False,
            log_time_format="%H:%M:%S",
        )
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(
            JsonFormatter()
            if chosen == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    handler.set_name(_HANDLER)
    # aiosmtpd logs every session line at INFO under "mail.log": only its
    # warnings, unless debugging; they go through the same handler.
    for name, wanted in (("mailfleet", numeric), ("mail.log", max(numeric, logging.WARNING))):
        if name == "mail.log" and numeric <= logging.DEBUG:
            wanted = logging.DEBUG
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(wanted)
        logger.propagate = False
