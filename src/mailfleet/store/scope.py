"""The scope every store access goes through: one application, and the agent classes served.

A process serves one application (tenant) and a set of agent classes. The
:class:`Scope` says which; it is made once by the Fleet and handed to every
component that touches the store (the directory, the intake, the outbox, the
worker, the sender). A unit of work runs as ``await scope.write(work)``,
where ``work(tx)`` receives a :class:`Tx`: the transaction's connection
together with the scope. Every repository function takes that ``Tx`` as its
first argument, never a bare connection and an application id, so no query
can forget its tenant: a grant of another application is never found, a
claim never takes another application's queue (or a grant whose agent class
this process does not serve), a sender never sends another application's
outbox.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.engine import Connection

from .database import Database

__all__ = ["Scope", "ServedAgents", "Tx"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServedAgents:
    """The agent classes a process runs, by their recorded names (``module:Class``).

    ``unnamed`` is true when the process has a default agent: it then also
    serves grants provisioned with no agent class.
    """

    names: frozenset[str] = frozenset()
    unnamed: bool = False

    @classmethod
    def of(cls, names: Iterable[str], *, unnamed: bool = False) -> ServedAgents:
        """The served set for these class names (and, with ``unnamed``, class-less grants)."""
        return cls(frozenset(names), unnamed)

    def __bool__(self) -> bool:
        return bool(self.names) or self.unnamed

    def __or__(self, other: ServedAgents) -> ServedAgents:
        return ServedAgents(self.names | other.names, self.unnamed or other.unnamed)


@dataclass(frozen=True, slots=True)
class Scope:
    """The database, the application and the agent classes one process serves."""

    database: Database
    application_id: str
    agents: ServedAgents = field(default_factory=ServedAgents)

    def serving(self, agents: ServedAgents) -> Scope:
        """This scope, serving ``agents``."""
        return Scope(self.database, self.application_id, agents)

    async def read(self, work: Callable[[Tx], T]) -> T:
        """Run ``work(tx)`` in one read-only transaction of this scope."""
        return await self.database.read(lambda conn: work(Tx(conn, self)))

    async def write(self, work: Callable[[Tx], T]) -> T:
        """Run ``work(tx)`` in one read-write transaction of this scope; commit if it returns."""
        return await self.database.write(lambda conn: work(Tx(conn, self)))


@dataclass(frozen=True, slots=True)
class Tx:
    """One transaction within a scope: what every repository function takes first."""

    conn: Connection
    scope: Scope

    @property
    def application_id(self) -> str:
        """The application every query of this transaction is limited to."""
        return self.scope.application_id

    @property
    def agents(self) -> ServedAgents:
        """The agent classes whose grants claims may take."""
        return self.scope.agents
