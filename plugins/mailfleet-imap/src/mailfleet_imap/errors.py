"""The exceptions of the IMAP source, under mailfleet's one tree::

    MailfleetError
    └── ImapError                                  something went wrong with the IMAP server
        ├── ImapRefused                            it answered NO or BAD (.command, .text)
        └── ImapConnectionLost (ConnectionError)   the connection went away mid-command

The source never lets them escape :meth:`ImapMailbox.serve`: it logs them
and reconnects with backoff. They matter to whoever drives a session itself.
"""

from __future__ import annotations

from mailfleet import MailfleetError

__all__ = ["ImapConnectionLost", "ImapError", "ImapRefused"]


class ImapError(MailfleetError):
    """The IMAP server could not be used (protocol error, missing capability...)."""


class ImapRefused(ImapError):
    """The server answered ``NO`` or ``BAD`` to ``command``; ``text`` is what it said."""

    def __init__(self, command: str, text: str) -> None:
        super().__init__(f"{command} refused: {text}")
        self.command = command
        self.text = text


class ImapConnectionLost(ImapError, ConnectionError):
    """The connection closed while a command was waiting for its answer."""
