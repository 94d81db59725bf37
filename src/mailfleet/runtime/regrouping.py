"""Regrouping: the auto-group patterns re-applied to existing grants, in bounded batches.

Patterns route new grants as they are provisioned; after patterns change,
:func:`regroup` moves the grants already there (those not pinned to a
workspace by a bulk move). However many grants match, it never holds one long
transaction: each batch of ``batch_size`` grants (1,000 by default) is its own
write transaction, which reads the patterns, moves the grants whose workspace
changes, records their ``grant.workspace_changed`` events and the job's
``workspace.regroup_progress``; deliveries, sends and provisioning take turns
with it between batches. Batches follow the grants' ids, so a regroup run
again after an interruption only repeats the work of the batch it was in.

Filters: ``created_after`` (grants created after that time) and ``domain``
(the grants of one registered domain). The job's record
(:class:`~mailfleet.model.records.RegroupJob`) counts the grants to look at
(``total``, counted once at the start), those looked at (``done``) and those
moved; the ``workspace.regroup_started`` / ``_progress`` / ``_finished``
events and the ``mailfleet.regroup`` logger tell the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

from ..model.addresses import normalize_domain
from ..model.errors import DomainNotRegistered, InvalidInput
from ..model.records import RegroupJob
from ..store import domains, grants
from ..store.events import record
from ..store.scope import Scope, Tx
from ..store.tables import new_id, utcnow

__all__ = ["BATCH_SIZE", "Progress", "regroup"]

log = logging.getLogger("mailfleet.regroup")

BATCH_SIZE = 1000
"""Grants per transaction."""

Progress = Callable[[int, int], None]
"""Called after each batch with (grants looked at, grants to look at)."""


async def regroup(
    scope: Scope,
    *,
    created_after: datetime | None = None,
    domain: str | None = None,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> RegroupJob:
    """Re-apply the auto-group patterns to the grants not pinned to a workspace (of
    ``domain``, created after ``created_after``), ``batch_size`` per transaction;
    the finished job's record. :class:`~mailfleet.DomainNotRegistered` for a domain
    the application does not have (nothing is done then)."""
    if batch_size < 1:
        raise InvalidInput("batch_size", "at least 1", value=batch_size)
    since = _aware(created_after)
    name = None if domain is None else normalize_domain(domain, field="domain")

    def start(tx: Tx) -> tuple[RegroupJob, str | None]:
        domain_id = None
        if name is not None:
            domain_id = domains.domain_ids(tx, [name]).get(name)
            if domain_id is None:
                raise DomainNotRegistered(name, field="domain")
        total = grants.count_regroup(tx, created_after=since, domain_id=domain_id)
        job = RegroupJob(new_id(), since, name, total, started_at=utcnow())
        record(tx, "workspace.regroup_started", _payload(job))
        return job, domain_id

    job, domain_id = await scope.write(start)
    log.info(
        "regroup %s started: %s grants to look at%s",
        job.id,
        f"{job.total:,}",
        _filters(job),
        extra={"job_id": job.id, "total": job.total},
    )
    if progress is not None:
        progress(0, job.total)
    after: str | None = None
    while True:
        job, after = await scope.write(
            partial(
                _batch,
                job=job,
                after=after,
                limit=batch_size,
                created_after=since,
                domain_id=domain_id,
            )
        )
        log.debug(
            "regroup %s: %s of %s looked at, %s moved",
            job.id,
            f"{job.done:,}",
            f"{job.total:,}",
            f"{job.moved:,}",
            extra={"job_id": job.id, "done": job.done, "total": job.total},
        )
        if progress is not None:
            progress(job.done, job.total)
        if after is None:
            break
    finished = replace(job, total=job.done, finished_at=utcnow())
    await scope.write(lambda tx: record(tx, "workspace.regroup_finished", _payload(finished)))
    log.info(
        "regroup %s finished: %s grants looked at, %s moved",
        finished.id,
        f"{finished.done:,}",
        f"{finished.moved:,}",
        extra={"job_id": finished.id, "done": finished.done, "moved": finished.moved},
    )
    return finished


def _batch(
    tx: Tx,
    *,
    job: RegroupJob,
    after: str | None,
    limit: int,
    created_after: datetime | None,
    domain_id: str | None,
) -> tuple[RegroupJob, str | None]:
    """One batch in its transaction: the job advanced, and where the next one starts."""
    done = grants.regroup_batch(
        tx, after=after, limit=limit, created_after=created_after, domain_id=domain_id
    )
    looked = job.done + done.scanned
    advanced = replace(
        job,
        done=looked,
        moved=job.moved + done.moved,
        total=max(job.total, looked),  # grants made since the count
    )
    if done.scanned:
        record(tx, "workspace.regroup_progress", _payload(advanced))
    return advanced, done.after


def _payload(job: RegroupJob) -> dict[str, object]:
    data = job.as_json()
    data["job_id"] = data.pop("id")
    return data


def _filters(job: RegroupJob) -> str:
    named = [f"created after {job.created_after.isoformat()}"] if job.created_after else []
    if job.domain:
        named.append(f"of {job.domain}")
    return f" ({', '.join(named)})" if named else ""


def _aware(moment: datetime | None) -> datetime | None:
    """A time as UTC; a naive one is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
