"""The ``Agent`` base class: what application code subclasses.

A subclass declares the mailbox identities it runs as and its handlers::

    class Helpdesk(Agent):
        addresses = ["help@example.com"]

        async def on_message(self, message: InboundMessage) -> None:
            self.state["seen"] = self.state.get("seen", 0) + 1
            await self.reply(message, text="We got it.")

Handlers are found by name once per class, when the class is created: a
misspelt ``on_*`` method, a handler that is not ``async``, or one with the
wrong parameters raises ``TypeError`` at import time, not at run time.

Mail the workspace's spam sensitivity files as spam (``message.folder ==
"spam"``, its score and reasons in ``message.spam``) never reaches
``on_message``: it goes to ``on_spam(self, message)`` when the class defines
one, and otherwise stays in the grant's spam folder, handled by no one.

The runtime activates one instance per grant when work arrives and
deactivates it when idle (``on_stop``); ``self.state`` (a JSON-serialisable
dict) is saved with the completion of each handled message and restored on
the next activation.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, overload

from .mail.build import OutgoingAttachment
from .mail.inbound import InboundMessage
from .model.addresses import parse_address
from .model.errors import InvalidAgent
from .model.outbound import SendCategory, SendResult, SendStatus
from .model.policy import Policy
from .model.records import Grant

__all__ = ["HANDLERS", "Agent", "AgentContext"]

# handler name -> number of parameters after ``self``
HANDLERS: Mapping[str, int] = {
    "on_message": 1,
    "on_spam": 1,
    "on_bounce": 1,
    "on_complaint": 1,
    "on_unsubscribe": 1,
    "on_start": 0,
    "on_stop": 0,
}


class AgentContext(Protocol):
    """What the runtime lends an agent instance; agents never see the store."""

    async def send(
        self,
        grant: Grant,
        to: Sequence[str],
        *,
        subject: str,
        text: str,
        html: str | None,
        in_reply_to: InboundMessage | None,
        attachments: Sequence[OutgoingAttachment] = (),
        defer: bool = False,
        category: SendCategory | str = SendCategory.TRANSACTIONAL,
    ) -> SendResult:
        """Pass a message through the outbound gates and into the outbox (``defer``: a
        send the quota, rate or a warm-up ramp refuses is scheduled instead;
        ``category``: see :class:`~mailfleet.SendCategory`)."""
        ...


_INHERITED = object()


class _Workspace:
    """``Agent.workspace``: on the class, the declared default workspace (or None);
    on an instance, the name of the workspace its grant belongs to now."""

    def __init__(self, declared: str | None) -> None:
        self.declared = declared

    @overload
    def __get__(self, instance: None, owner: type[Agent]) -> str | None: ...
    @overload
    def __get__(self, instance: Agent, owner: type[Agent]) -> str: ...
    def __get__(self, instance: Agent | None, owner: type[Agent]) -> str | None:
        if instance is None:
            return self.declared
        return instance.grant.workspace


class Agent:
    """Base class of every agent; one instance runs per grant.

    Class attributes: ``addresses`` (the addresses this agent runs as, which
    ``mailfleet run`` provisions) and ``workspace`` (where its grants are
    filed; default: the auto-group patterns of the domain, else the default
    workspace).
    """

    addresses: ClassVar[Sequence[str]] = ()
    if TYPE_CHECKING:
        # Declared as a plain class attribute so that subclasses may assign a name.
        workspace: ClassVar[str | None]
    else:
        workspace = _Workspace(None)
    handlers: ClassVar[frozenset[str]] = frozenset()
    """The handlers this class defines, found when the class was created."""
    defer_rate_limited: ClassVar[bool] = False
    """True: a send the daily quota, the rate or a warm-up ramp would answer
    ``rate_limited`` is queued for when it is admitted instead (``queued``, with its
    ``send_at``). ``send(..., defer=...)`` decides for one send."""

    _grant: Grant
    _context: AgentContext
    state: dict[str, Any]
    """Persistent per-agent state, saved with each handled message."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("addresses", ())
        if isinstance(declared, str):
            raise InvalidAgent(
                f"{cls.__qualname__}.addresses must be a list of addresses, not a str"
            )
        for index, address in enumerate(declared):
            parse_address(address, field=f"{cls.__qualname__}.addresses[{index}]")
        workspace = cls.__dict__.get("workspace", _INHERITED)
        if workspace is None or isinstance(workspace, str):
            type.__setattr__(cls, "workspace", _Workspace(workspace))
        elif workspace is not _INHERITED and not isinstance(workspace, _Workspace):
            raise InvalidAgent(f"{cls.__qualname__}.workspace must be a workspace name or None")
        cls.handlers = frozenset(_discover_handlers(cls))

    @classmethod
    def agent_name(cls) -> str:
        """The ``module:QualifiedName`` recorded on this agent's grants."""
        return f"{cls.__module__}:{cls.__qualname__}"

    # -- what an activated agent sees ---------------------------------------------

    @property
    def grant(self) -> Grant:
        """The grant (mailbox identity) this instance runs for."""
        return self._grant

    @property
    def address(self) -> str:
        """This agent's email address."""
        return self._grant.address

    @property
    def policy(self) -> Policy:
        """The effective policy (the workspace's, read-only)."""
        return self._grant.policy

    async def send(
        self,
        to: str | Sequence[str],
        *,
        subject: str,
        text: str,
        html: str | None = None,
        attachments: Sequence[OutgoingAttachment] = (),
        defer: bool | None = None,
        category: SendCategory | str = SendCategory.TRANSACTIONAL,
    ) -> SendResult:
        """Send a new message; the result says whether it was accepted or why not.

        Expected refusals (paused, restricted, a bad recipient, ``rate_limited``
        with its ``retry_after``...) come back as the result's ``status`` and
        ``detail``, never as exceptions. ``defer`` (default: the class's
        :attr:`defer_rate_limited`) queues a rate-limited send for later instead.
        ``category`` (:class:`~mailfleet.SendCategory`): ``transactional`` (the
        default); ``bulk`` sends go to one recipient each and carry its one-click
        unsubscribe headers; ``campaign`` ones too, and only to recipients who
        confirmed by double opt-in (else ``opt_in_pending``, and a confirmation is
        sent).
        """
        recipients = [to] if isinstance(to, str) else list(to)
        return await self._context.send(
            self._grant,
            recipients,
            subject=subject,
            text=text,
            html=html,
            in_reply_to=None,
            attachments=attachments,
            defer=self.defer_rate_limited if defer is None else defer,
            category=category,
        )

    async def reply(
        self,
        message: InboundMessage,
        *,
        text: str,
        html: str | None = None,
        attachments: Sequence[OutgoingAttachment] = (),
        to_automatic: bool = False,
        defer: bool | None = None,
    ) -> SendResult:
        """Answer ``message`` in its thread, to its sender (``Re:`` added once).

        Messages that must not get automatic replies (RFC 3834: auto-replies,
        bulk and list mail, bounces) are answered ``suppressed`` unless
        ``to_automatic`` is true: agents never start mail loops by themselves.
        ``defer`` as for :meth:`send`.
        """
        if not message.sender:
            return SendResult(
                SendStatus.REJECTED, detail="the message has no sender address to reply to"
            )
        reason = None if to_automatic else message.automatic
        if reason is not None:
            return SendResult(
                SendStatus.SUPPRESSED, detail=f"no automatic reply to it (RFC 3834): {reason}"
            )
        return await self._context.send(
            self._grant,
            [message.sender],
            subject=message.subject or "",
            text=text,
            html=html,
            in_reply_to=message,
            attachments=attachments,
            defer=self.defer_rate_limited if defer is None else defer,
        )


def _discover_handlers(cls: type[Agent]) -> set[str]:
    found: set[str] = set()
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if not name.startswith("on_") or klass is object:
                continue
            if name not in HANDLERS:
                close = difflib.get_close_matches(name, HANDLERS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidAgent(
                    f"{klass.__qualname__}.{name} is not an agent handler{hint} "
                    f"(handlers: {', '.join(sorted(HANDLERS))})"
                )
            _check_handler(klass, name, value)
            found.add(name)
    return found


def _check_handler(klass: type, name: str, value: object) -> None:
    where = f"{klass.__qualname__}.{name}"
    if not inspect.iscoroutinefunction(value):
        raise InvalidAgent(f"{where} must be an 'async def' method")
    parameters = list(inspect.signature(value).parameters.values())[1:]  # after self
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    expected = HANDLERS[name]
    if len(positional) != expected or any(
        p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in parameters
    ):
        wanted = "(self)" if expected == 0 else "(self, event)"
        if name in ("on_message", "on_spam"):
            wanted = "(self, message)"
        raise InvalidAgent(f"{where} must take {wanted}")
