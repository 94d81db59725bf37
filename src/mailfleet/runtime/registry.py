"""Which agent class runs which grant, in this process."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..model.records import Grant
from ..store.scope import ServedAgents

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["AgentRegistry"]


class AgentRegistry:
    """The agent classes a fleet runs, by their recorded names, and its default agent.

    A grant provisioned with a class runs that class, in a process that has it,
    and nowhere else; a grant provisioned with none runs the default agent of a
    process that has one. No grant ever runs a class it was not given.
    """

    def __init__(self, agents: Iterable[type[Agent]] = (), default: type[Agent] | None = None):
        self._classes: dict[str, type[Agent]] = {a.agent_name(): a for a in agents}
        self._default = default

    def add(self, agent: type[Agent]) -> None:
        """Run ``agent`` for the grants provisioned with it."""
        self._classes[agent.agent_name()] = agent

    def resolve(self, grant: Grant) -> type[Agent] | None:
        """The class to run for ``grant``, or None if this process does not serve it."""
        if grant.agent is None:
            return self._default
        return self._classes.get(grant.agent)

    @property
    def served(self) -> ServedAgents:
        """What claims may take: the registered names, and class-less grants with a default."""
        return ServedAgents.of(self._classes, unnamed=self._default is not None)
