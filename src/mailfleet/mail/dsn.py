"""RFC 3464 / RFC 6533 delivery-status fields: per-message and per-recipient records.

:func:`read_delivery_status` reads the fields of a ``message/delivery-status``
(or ``message/global-delivery-status``) body, or of a text that carries them
(a part mislabelled ``text/plain``): only DSN field names and ``X-`` fields
count, a continuation line extends the field above, and a new record starts
after an empty line or when an address field repeats (so a DSN whose blocks
are not separated still splits per recipient). A line that is no field right
after a Diagnostic-Code continues it (multi-line SMTP answers often are not
indented). :func:`recipient_of` gives the
address to report: the Original-Recipient when it is a real address, else the
Final-Recipient, else X-Actual-Recipient.
"""

from __future__ import annotations

import re

from .reasons import find_status
from .reportaddr import normalise

__all__ = [
    "DsnRecord",
    "looks_like_delivery_status",
    "read_delivery_status",
    "recipient_of",
    "status_of",
    "typed_value",
]

DsnRecord = dict[str, str]
"""Fields of one block, by lower-case name (the first value of each)."""

MESSAGE_FIELDS = frozenset(
    {
        "reporting-mta",
        "dsn-gateway",
        "received-from-mta",
        "arrival-date",
        "original-envelope-id",
        "x-postfix-queue-id",
        "x-postfix-sender",
        "x-original-message-id",
    }
)
RECIPIENT_FIELDS = frozenset(
    {
        "original-recipient",
        "final-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "final-log-id",
        "will-retry-until",
    }
)
_ADDRESS_FIELDS = ("original-recipient", "final-recipient")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,60})[ \t]*:[ \t]*(.*)$")
_HINT = re.compile(r"^(?:final|original)-recipient[ \t]*:", re.I | re.M)
_ACTION_OR_STATUS = re.compile(r"^(?:action|status)[ \t]*:", re.I | re.M)
_TYPE = re.compile(r"^\s*[A-Za-z][\w-]{0,20}\s*;\s*")
MAX_RECORDS = 500


def looks_like_delivery_status(text: str) -> bool:
    """Whether ``text`` carries DSN recipient fields (Final-Recipient, Action/Status)."""
    return _HINT.search(text) is not None and _ACTION_OR_STATUS.search(text) is not None


def read_delivery_status(text: str) -> tuple[DsnRecord, list[DsnRecord]]:
    """The per-message fields and the per-recipient records of a delivery-status text."""
    message: DsnRecord = {}
    records: list[DsnRecord] = []
    current: DsnRecord | None = None
    target: DsnRecord = message
    last: str | None = None
    after_blank = True
    for line in text.splitlines():
        if not line.strip():
            after_blank, last = True, None
            continue
        if line[:1] in (" ", "\t"):
            if last is not None:
                target[last] = f"{target[last]} {line.strip()}".strip()
            continue
        match = _FIELD.match(line)
        name = match[1].lower() if match else ""
        if match is None or not (
            name in MESSAGE_FIELDS or name in RECIPIENT_FIELDS or name.startswith("x-")
        ):
            if last == "diagnostic-code":  # an SMTP answer's next line, not indented
                target[last] = f"{target[last]} {line.strip()}"
            else:
                last = None
            continue
        if name in MESSAGE_FIELDS:
            target = message
        else:
            if name in RECIPIENT_FIELDS:
                new = current is None or after_blank
                if current is not None and name in _ADDRESS_FIELDS:
                    new = new or name in current
                if new and len(records) < MAX_RECORDS:
                    current = {}
                    records.append(current)
                after_blank = False
            target = message if current is None else current
        if name in target:
            last = None
            continue
        target[name] = match[2].strip()
        last = name
    return message, [record for record in records if record]


def typed_value(value: str | None) -> str | None:
    """A DSN value without its type (``dns; mx.example.com`` -> ``mx.example.com``)."""
    if not value:
        return None
    text = " ".join(_TYPE.sub("", value, count=1).split())
    return text or None


def _real(value: str | None) -> str | None:
    if not value:
        return None
    address = normalise(value)
    if address is None or address.startswith("imcea") or address.startswith("unknown@"):
        return None
    return address


def recipient_of(record: DsnRecord) -> str | None:
    """The address a record reports on (see the module documentation for the order)."""
    for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
        address = _real(record.get(name))
        if address is not None:
            return address
    raw = typed_value(record.get("final-recipient") or record.get("original-recipient"))
    return raw.strip("<>").lower() if raw and raw.strip("<>") else None


def status_of(record: DsnRecord) -> str | None:
    """The record's enhanced status code, from Status, else from its Diagnostic-Code."""
    status = find_status(record.get("status") or "", failures_only=False)
    if status is None:
        status = find_status(record.get("diagnostic-code") or "")
    return status
