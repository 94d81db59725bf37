"""mailfleet-imap: existing IMAP mailboxes as inbound sources of a mailfleet fleet.

::

    from mailfleet_imap import ImapConfig, ImapMailbox

    source = ImapMailbox(ImapConfig(grant="support@example.com", host="imap.example.com",
                                    username="support@example.com", password="..."))
    # run it next to the fleet: `await source.serve(fleet)`, or configure
    # MAILFLEET_IMAP_MAILBOXES and let `Fleet.serve()` discover it.

Distributed apart from mailfleet (Apache-2.0) because it uses aioimaplib (GPL-3.0).
"""

from .config import ImapConfig, Tls, parse_mailboxes
from .errors import ImapConnectionLost, ImapError, ImapRefused
from .source import ImapMailbox, ImapStatistics

__version__ = "0.1.0"

__all__ = [
    "ImapConfig",
    "ImapConnectionLost",
    "ImapError",
    "ImapMailbox",
    "ImapRefused",
    "ImapStatistics",
    "Tls",
    "__version__",
    "parse_mailboxes",
]
