"""Single provisions that arrive together, committed together.

``POST /v1/grants`` from many clients, or ``fleet.provision`` from many tasks,
is a stream of batches of one. :class:`SingleProvisions` gathers the ones
waiting (a :class:`~mailfleet.runtime.batching.GroupCommit`) and provisions
them in one transaction, one ``provision_batch`` per workspace asked for, so
the store's writer does one commit for all of them. Each caller gets the
answer it would have had alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeAlias

import anyio
from anyio.abc import TaskStatus

from ..model.errors import WorkspaceNotFound
from ..model.records import Grant
from ..store import grants
from ..store.grants import GrantRequest
from ..store.scope import Scope, Tx
from .batching import FLEET_CLOSED, GroupCommit

__all__ = ["Provisioned", "SingleProvisions"]

Provisioned: TypeAlias = tuple[dict[str, tuple[Grant, bool]], dict[str, Exception]]
"""What ``provision_batch`` answers: by address, the grant and whether it was created;
and the refused addresses with why."""


@dataclass(frozen=True, slots=True)
class _Single:
    """One address to provision (already validated), and the workspace asked for."""

    request: GrantRequest
    workspace: str | None


class SingleProvisions:
    """The group commit of single provisions of one scope (run by the fleet while open)."""

    def __init__(self, scope: Scope, *, max_batch: int = 1000) -> None:
        self._scope = scope
        self._batches: GroupCommit[_Single, Provisioned] = GroupCommit(
            self._commit, max_batch=max_batch, closed_error=FLEET_CLOSED
        )

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is taking provisions."""
        return self._batches.running

    async def provision(self, request: GrantRequest, workspace: str | None) -> Provisioned:
        """Provision ``request`` (in ``workspace``, or where the patterns say) once the
        transaction it shares is committed; raises :class:`~mailfleet.WorkspaceNotFound`."""
        return await self._batches.submit(_Single(request, workspace))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit waiting provisions until cancelled."""
        await self._batches.run(task_status=task_status)

    async def _commit(self, items: Sequence[_Single]) -> list[Provisioned | Exception]:
        return await self._scope.write(partial(_provision, items=items))


def _provision(tx: Tx, items: Sequence[_Single]) -> list[Provisioned | Exception]:
    """Provision concurrent callers' addresses in one transaction: one batch per workspace
    asked for. An unknown workspace is its callers' error alone (it is looked up before
    anything is written); an address asked twice is created for the first caller, and
    the existing grant for the next, as one after the other would have had it."""
    groups: dict[str | None, dict[str, GrantRequest]] = {}
    for item in items:
        groups.setdefault(item.workspace, {}).setdefault(str(item.request.address), item.request)
    answers: dict[str | None, Provisioned | Exception] = {}
    for workspace, requests in groups.items():
        try:
            answers[workspace] = grants.provision_batch(
                tx, list(requests.values()), workspace=workspace
            )
        except WorkspaceNotFound as exc:
            answers[workspace] = exc
    outcomes: list[Provisioned | Exception] = []
    answered: set[str] = set()
    for item in items:
        answer = answers[item.workspace]
        address = str(item.request.address)
        if isinstance(answer, Exception):
            outcomes.append(answer)
        elif address in answer[1]:
            outcomes.append(({}, {address: answer[1][address]}))
        else:
            grant, created = answer[0][address]
            outcomes.append(({address: (grant, created and address not in answered)}, {}))
            answered.add(address)
    return outcomes
