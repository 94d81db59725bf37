"""The configuration of one IMAP mailbox, and of the list in ``MAILFLEET_IMAP_MAILBOXES``."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from enum import StrEnum
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mailfleet import InvalidInput

__all__ = ["ENVIRONMENT_VARIABLE", "ImapConfig", "Tls", "parse_mailboxes"]

ENVIRONMENT_VARIABLE = "MAILFLEET_IMAP_MAILBOXES"

# NUL, CR and LF would end an IMAP command line: never valid in a name or a secret.
_CONTROL = re.compile(r"[\x00\r\n]")
# Room left in the 255 characters of a source key for ":<uidvalidity>:<uid>".
_NAME_MAX = 200


class Tls(StrEnum):
    """How the connection is protected."""

    IMPLICIT = "implicit"
    """TLS from the first byte (port 993)."""
    STARTTLS = "starttls"
    """Plain connection upgraded with STARTTLS before logging in (port 143); required."""
    NONE = "none"
    """No TLS: only to a loopback address (tests, a local bridge)."""


class ImapConfig(BaseModel):
    """One existing mailbox attached to one grant.

    ``name`` identifies the source: the cursor (read position) is stored
    under it and every message's ``source_key`` starts with it. It defaults
    to ``imap:<username>@<host>/<mailbox>``; set it explicitly to keep the
    same identity when the host name changes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    grant: str = Field(min_length=1, description="the grant's address or id")
    host: str = Field(min_length=1, description="the IMAP server")
    port: int | None = Field(
        None, ge=1, le=65535, description="default: 993 with implicit TLS, else 143"
    )
    username: str = Field(min_length=1)
    password: SecretStr | None = Field(None, description="the password (or password_env)")
    password_env: str | None = Field(
        None, description="name of an environment variable holding the password"
    )
    mailbox: str = Field("INBOX", min_length=1, description="the mailbox (folder) to read")
    tls: Tls = Tls.IMPLICIT
    tls_verify: bool = Field(True, description="verify the server's certificate and name")
    ca_file: str | None = Field(None, description="PEM file of CAs to trust (default: system's)")
    poll_interval: float = Field(
        60.0, gt=0, description="seconds between checks without IDLE; with IDLE, a safety net"
    )
    idle: bool = Field(True, description="use IDLE when the server offers it")
    backfill: bool = Field(
        True, description="on first attach, deliver the messages already in the mailbox"
    )
    name: str | None = Field(None, min_length=1, max_length=_NAME_MAX)
    timeout: float = Field(30.0, gt=0, description="seconds an IMAP command may take")
    backoff_initial: float = Field(1.0, gt=0, description="first wait before reconnecting")
    backoff_max: float = Field(300.0, gt=0, description="longest wait before reconnecting")
    fetch_batch: int = Field(20, ge=1, le=1000, description="messages fetched per command")
    dedupe_window: int = Field(
        10_000,
        ge=0,
        description="Message-IDs remembered to survive a UIDVALIDITY change (0: none)",
    )

    @field_validator("username", "mailbox", "host")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("must not contain NUL, CR or LF")
        return value

    @field_validator("password")
    @classmethod
    def _password_has_no_control_characters(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _CONTROL.search(value.get_secret_value()):
            raise ValueError("must not contain NUL, CR or LF")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.password is None) == (self.password_env is None):
            raise ValueError("give exactly one of password and password_env")
        if self.password_env is not None:
            secret = os.environ.get(self.password_env)
            if secret is None:
                raise ValueError(f"password_env: the variable {self.password_env} is not set")
            if _CONTROL.search(secret):
                raise ValueError("password_env: the password must not contain NUL, CR or LF")
        if self.tls is Tls.NONE and not _is_loopback(self.host):
            raise ValueError(
                f"tls: 'none' sends the password in clear; it is only allowed to a loopback "
                f"host, not {self.host!r} (use 'implicit' or 'starttls')"
            )
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be less than backoff_initial")
        if len(self.source_name) > _NAME_MAX:
            raise ValueError(
                f"name: the default name {self.source_name[:40]!r}... is longer than "
                f"{_NAME_MAX} characters; set a shorter `name`"
            )
        return self

    @property
    def effective_port(self) -> int:
        """The port to connect to."""
        if self.port is not None:
            return self.port
        return 993 if self.tls is Tls.IMPLICIT else 143

    @property
    def source_name(self) -> str:
        """The source's identity: cursor name and prefix of every source key."""
        return self.name or f"imap:{self.username}@{self.host}/{self.mailbox}"

    def secret(self) -> str:
        """The password (read from ``password_env`` at each call when configured so)."""
        if self.password is not None:
            return self.password.get_secret_value()
        assert self.password_env is not None
        return os.environ.get(self.password_env, "")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_mailboxes(text: str, *, where: str = ENVIRONMENT_VARIABLE) -> list[ImapConfig]:
    """Parse a JSON list of mailbox configurations.

    Raises :class:`~mailfleet.InvalidInput` whose ``field`` names the bad
    entry and field (``MAILFLEET_IMAP_MAILBOXES[1].port``). Values are never
    echoed: they may be passwords.
    """
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(where, f"is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InvalidInput(where, "must be a JSON list of mailbox objects")
    configs: list[ImapConfig] = []
    for index, entry in enumerate(data):
        here = f"{where}[{index}]"
        if not isinstance(entry, dict):
            raise InvalidInput(here, "must be a JSON object")
        try:
            configs.append(ImapConfig.model_validate(entry))
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            location = ".".join(str(part) for part in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            field, _, rest = message.partition(": ")
            if not location and rest and field in ImapConfig.model_fields:
                location, message = field, rest  # a cross-field rule that names its field
            raise InvalidInput(f"{here}.{location}" if location else here, message) from None
    seen: set[tuple[str, str]] = set()
    for index, config in enumerate(configs):
        key = (config.grant.strip().lower(), config.source_name)
        if key in seen:
            raise InvalidInput(
                f"{where}[{index}].name",
                f"{config.source_name!r} is attached to {config.grant!r} twice",
            )
        seen.add(key)
    return configs
