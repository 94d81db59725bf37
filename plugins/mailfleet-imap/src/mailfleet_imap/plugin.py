"""The ``imap`` plugin: one :class:`ImapMailbox` per entry of ``MAILFLEET_IMAP_MAILBOXES``.

Registered in the ``mailfleet.plugins`` entry-point group, so an installed
mailfleet-imap is found by ``mailfleet.plugins.plugin_manager()`` and its
sources run in ``Fleet.serve()``. The variable (or the same line in
``.env``) holds a JSON list of mailboxes, each with the fields of
:class:`ImapConfig`::

    MAILFLEET_IMAP_MAILBOXES='[{"grant": "support@example.com",
      "host": "imap.example.com", "username": "support@example.com",
      "password_env": "SUPPORT_IMAP_PASSWORD"}]'

Unset or empty: no sources. Malformed: :class:`~mailfleet.InvalidInput`
naming the entry and field, when the fleet starts.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from mailfleet import Settings
from mailfleet.plugins import InboundSource, hookimpl

from .config import ENVIRONMENT_VARIABLE, parse_mailboxes
from .source import ImapMailbox

__all__ = ["mailfleet_inbound_sources"]


class _Environment(BaseSettings):
    """``MAILFLEET_IMAP_*``, from the environment or ``.env`` like mailfleet's own settings."""

    model_config = SettingsConfigDict(env_prefix="MAILFLEET_IMAP_", env_file=".env", extra="ignore")

    mailboxes: str | None = None


@hookimpl
def mailfleet_inbound_sources(settings: Settings) -> list[InboundSource]:
    """The configured mailboxes, as inbound sources."""
    text = _Environment().mailboxes
    if text is None or not text.strip():
        return []
    return [ImapMailbox(config) for config in parse_mailboxes(text, where=ENVIRONMENT_VARIABLE)]
