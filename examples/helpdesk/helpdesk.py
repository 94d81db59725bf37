"""A helpdesk: one agent answering what people write to help@ and support@.

Run it from the repository root::

    mailfleet run examples/helpdesk/helpdesk.py

In dev mode ``mailfleet run`` registers example.com, provisions a grant (a
mailbox identity) for each address below, prints them, listens for SMTP on
127.0.0.1:2525 and serves until Ctrl-C or SIGTERM. Every message delivered to
one of them reaches ``on_message`` through that grant's ordered queue; the
answer, in the thread of the message it answers (In-Reply-To, References,
``Re:``), is DKIM-signed and sent. With no relay configured (dev mode), mail
to the fleet's own addresses is delivered to them and the rest is captured:
``mailfleet outbox list`` and ``mailfleet outbox show ID`` show it.
"""

from mailfleet import Agent, InboundMessage


class Helpdesk(Agent):
    """Acknowledges each request in its thread and counts the tickets it opened."""

    addresses = ("help@example.com", "support@example.com")

    async def on_message(self, message: InboundMessage) -> None:
        ticket = self.state.get("tickets", 0) + 1
        self.state["tickets"] = ticket  # saved with the completion of this message
        await self.reply(
            message,
            text=(
                f"Hello,\n\nthanks for writing to {self.address}. Your request is ticket "
                f"#{ticket}; we will answer in this thread.\n\n-- the helpdesk agent\n"
            ),
        )
