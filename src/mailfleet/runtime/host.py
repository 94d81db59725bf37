"""Agent activation and isolated handler calls.

The host keeps at most one activated :class:`~mailfleet.Agent` instance per
grant. Calls into user code go through :meth:`AgentHost.call`, which applies
the per-handler timeout (a watchdog task, :meth:`AgentHost.watch`) and turns
whatever goes wrong, an exception or a timeout, into one
:class:`HandlerFailure`, logged there with the grant and message ids: a
handler can fail, hang or be slow without touching another grant or the
fleet. What a failure leads to (retry, dead letter) is the worker's decision.
The worker may also :meth:`~AgentHost.interrupt` a grant's running handler (it can
no longer prove its lease of the grant): that call raises :class:`HandlerInterrupted`,
which is no failure of the handler.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio

from ..agent import Agent, AgentContext
from ..model.errors import StoreUnavailable
from ..model.records import Grant

__all__ = ["AgentHost", "HandlerFailure", "HandlerInterrupted"]

log = logging.getLogger("mailfleet.agents")


class HandlerFailure(Exception):
    """A handler raised or timed out; ``str()`` is what gets recorded. What it
    raised, if anything, is the ``__cause__`` (a :class:`~mailfleet.StoreUnavailable`
    is the store's failure, not the handler's)."""


class HandlerInterrupted(Exception):
    """The worker interrupted the handler (:meth:`AgentHost.interrupt`): not its fault,
    and nothing of it may be committed."""


class AgentHost:
    """Activates agents on demand and calls their handlers safely."""

    def __init__(
        self,
        resolve: Callable[[Grant], type[Agent] | None],
        context: AgentContext,
        *,
        handler_timeout: float | None,
    ) -> None:
        self._resolve = resolve
        self._context = context
        self._timeout = handler_timeout
        self._agents: dict[str, Agent] = {}
        self._saved: dict[str, str] = {}
        self._deadlines: dict[anyio.CancelScope, float] = {}
        self._running: dict[str, anyio.CancelScope] = {}  # grant id -> its call now
        self._interrupted: set[anyio.CancelScope] = set()

    @property
    def active(self) -> int:
        """How many agents are activated now."""
        return len(self._agents)

    def get(self, grant_id: str) -> Agent | None:
        """The activated agent of a grant, if any."""
        return self._agents.get(grant_id)

    async def activate(self, grant: Grant, state: dict[str, Any] | None) -> Agent | None:
        """Instantiate the grant's agent with its saved state and run ``on_start``.

        Returns None when no agent class is bound to the grant. Raises
        :class:`HandlerFailure` when ``on_start`` fails: the agent is not kept, and
        the next activation runs ``on_start`` again.
        """
        cls = self._resolve(grant)
        if cls is None:
            return None
        agent = cls()
        agent._grant = grant
        agent._context = self._context
        agent.state = dict(state or {})
        self._saved[grant.id] = _dump(agent.state)
        self._agents[grant.id] = agent
        if "on_start" in cls.handlers:
            try:
                await self.call(agent, "on_start", message_id=None)
            except HandlerFailure:
                self.forget(grant.id)
                raise
        return agent

    async def deactivate(self, grant_id: str) -> dict[str, Any] | None:
        """Run ``on_stop`` and drop the instance; return its state if it changed."""
        agent = self._agents.pop(grant_id, None)
        if agent is None:
            return None
        if "on_stop" in agent.handlers:
            try:
                await self.call(agent, "on_stop", message_id=None)
            except HandlerFailure:
                pass  # logged by call(); the agent goes away regardless
            except HandlerInterrupted:
                self._saved.pop(grant_id, None)
                return None  # the lease is lost: its state is not ours to save
        try:
            return self.changed_state(grant_id, agent, forget=True)
        except HandlerFailure as failure:
            log.warning("agent of grant %s stopped; its state is not saved: %s", grant_id, failure)
            return None

    def changed_state(
        self, grant_id: str, agent: Agent, *, forget: bool = False
    ) -> dict[str, Any] | None:
        """The agent's state if it differs from what was last saved."""
        dumped = _dump(agent.state)
        previous = self._saved.pop(grant_id, None) if forget else self._saved.get(grant_id)
        if dumped == previous:
            return None
        if not forget:
            self._saved[grant_id] = dumped
        loaded: dict[str, Any] = json.loads(dumped)
        return loaded

    def forget(self, grant_id: str) -> None:
        """Drop a grant's instance without calling it (its lease was lost)."""
        self._agents.pop(grant_id, None)
        self._saved.pop(grant_id, None)

    def interrupt(self, grant_id: str) -> bool:
        """Cancel the grant's running handler, if any (its :meth:`call` raises
        :class:`HandlerInterrupted`); whether one was running."""
        scope = self._running.get(grant_id)
        if scope is None:
            return False
        self._interrupted.add(scope)
        scope.cancel()
        return True

    async def call(self, agent: Agent, name: str, *args: Any, message_id: str | None) -> None:
        """Await ``agent.<name>(*args)`` under the handler timeout.

        Raises :class:`HandlerFailure` (logged with the grant and message ids)
        if the handler raised or ran out of time. The timeout is enforced by
        :meth:`watch` (a watchdog task) rather than a timer per call: a plain
        cancel scope is half the cost of ``fail_after`` on this hot path.
        """
        handler = getattr(agent, name)
        grant_id = agent.grant.id
        scope = anyio.CancelScope()
        if self._timeout is not None:
            self._deadlines[scope] = anyio.current_time() + self._timeout
        self._running[grant_id] = scope
        try:
            with scope:
                await handler(*args)
        except StoreUnavailable as exc:  # the store's fault, not the handler's: no traceback
            error = f"{name} raised {type(exc).__name__}: {exc}"
            log.info(
                "handler stopped by a store outage: grant=%s message=%s: %s",
                agent.grant.id,
                message_id,
                exc,
            )
            raise HandlerFailure(error) from exc
        except Exception as exc:
            if scope in self._interrupted:
                raise HandlerInterrupted(f"{name} interrupted") from exc
            error = f"{name} raised {type(exc).__name__}: {exc}"
            log.warning(
                "handler failed: grant=%s message=%s: %s",
                agent.grant.id,
                message_id,
                error,
                exc_info=exc,
            )
            raise HandlerFailure(error) from exc
        finally:
            self._deadlines.pop(scope, None)
            if self._running.get(grant_id) is scope:
                del self._running[grant_id]
            interrupted = scope in self._interrupted
            self._interrupted.discard(scope)
        if interrupted:
            raise HandlerInterrupted(f"{name} interrupted")
        if scope.cancelled_caught:
            error = f"{name} timed out after {self._timeout:g}s"
            log.warning(
                "handler failed: grant=%s message=%s: %s", agent.grant.id, message_id, error
            )
            raise HandlerFailure(error)

    async def watch(self) -> None:
        """Cancel handlers that overrun the timeout; runs until cancelled."""
        if self._timeout is None:
            return
        period = min(max(self._timeout / 20, 0.005), 0.5)
        while True:
            await anyio.sleep(period)
            now = anyio.current_time()
            for scope, deadline in list(self._deadlines.items()):
                if deadline <= now:
                    scope.cancel()


def _dump(state: dict[str, Any]) -> str:
    try:
        return json.dumps(state, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise HandlerFailure(f"agent state is not JSON-serialisable: {exc}") from None
