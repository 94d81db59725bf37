"""A helpdesk: one agent answering what people write to help@ and support@.

Run it from the repository root::

    mailfleet run examples/helpdesk/helpdesk.py

In dev mode ``mailfleet run`` registers example.com, provisions a grant (a
mailbox identity) for each address below, prints them, and serves until
Ctrl-C. The grants survive the run: ``mailfleet grants list`` shows them.

What this example does not do yet: mailfleet's runtime does not deliver
messages to agents so far. Once message handlers land, the Helpdesk will
answer each message it receives in that message's own thread; until then it
shows the part that exists today, how an agent declares the mailboxes it runs
as and where their grants are filed.
"""

from mailfleet import Agent


class Helpdesk(Agent):
    """The helpdesk agent; the runtime will run one instance per address."""

    addresses = ("help@example.com", "support@example.com")
    # No workspace of its own: the grants follow the auto-group patterns of
    # example.com, else they land in the default workspace.
    workspace = None
