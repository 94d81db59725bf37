"""Provisioning throughput and the cost of a policy update against fleet size.

1. ``Fleet.provision_many`` of 10,000 fresh addresses, on SQLite and on
   PostgreSQL: grants per second (only the ``provision_many`` call is timed;
   every result must come back ``created``). Target: >= 5,000 grants/s on SQLite.
2. ``Fleet.update_policy`` of a workspace holding 10 grants, then the same
   workspace grown to 100,000 grants: the median of 20 updates each. A policy
   is stored once per workspace and inherited by reference, so the ratio
   should stay near 1. After the updates one grant is read back and must
   show the new quota.

Usage (from the repository root)::

    .venv/bin/python bench/provision.py            # both backends
    .venv/bin/python bench/provision.py --profile  # also profile SQLite provisioning

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
from collections.abc import Sequence

from _common import BACKENDS, emit, median, scratch_database, stopwatch

from mailfleet.model.records import ProvisionOutcome
from mailfleet.runtime.fleet import Fleet

DOMAIN = "bench.example.com"
WORKSPACE = "bench-ws"
PROVISION_COUNT = 10_000
POLICY_SIZES = (10, 100_000)
POLICY_UPDATES = 20
TARGET_GRANTS_PER_S = 5_000


def addresses(start: int, stop: int, prefix: str = "agent") -> list[str]:
    """Distinct addresses ``prefix-<n>@DOMAIN`` for ``n`` in ``[start, stop)``."""
    return [f"{prefix}-{n:06d}@{DOMAIN}" for n in range(start, stop)]


def open_fleet(url: str) -> Fleet:
    return Fleet(database_url=url, application="bench")


async def provision(fleet: Fleet, wanted: Sequence[str], *, workspace: str | None = None) -> float:
    """Provision ``wanted`` (all new); return the seconds ``provision_many`` took."""
    with stopwatch() as elapsed:
        results = await fleet.provision_many(wanted, workspace=workspace)
    created = sum(r.outcome is ProvisionOutcome.CREATED for r in results)
    if len(results) != len(wanted) or created != len(wanted):
        outcomes = sorted({r.outcome.value for r in results})
        sys.exit(f"provision_many: {created} of {len(wanted)} created (outcomes: {outcomes})")
    return elapsed()


# -- 1. grants per second ------------------------------------------------------------


async def grants_per_second(backend: str) -> float:
    with scratch_database(backend) as url:
        async with open_fleet(url) as fleet:
            await fleet.add_domain(DOMAIN)
            seconds = await provision(fleet, addresses(0, PROVISION_COUNT))
    rate = PROVISION_COUNT / seconds
    print(
        f"[{backend}] provision_many({PROVISION_COUNT:,}): {seconds:.2f} s = {rate:,.0f} grants/s"
    )
    return rate


# -- 2. policy update against workspace size -----------------------------------------


async def median_policy_update_ms(fleet: Fleet, first_quota: int) -> tuple[float, int]:
    """Median milliseconds of ``POLICY_UPDATES`` updates; returns it and the last quota set."""
    timings = []
    quota = first_quota
    for quota in range(first_quota, first_quota + POLICY_UPDATES):
        with stopwatch() as elapsed:
            await fleet.update_policy(WORKSPACE, {"daily_send_quota": quota})
        timings.append(elapsed() * 1000)
    return median(timings), quota


async def check_inherited(fleet: Fleet, address: str, quota: int) -> None:
    grant = await fleet.grant(address)
    if grant.policy.daily_send_quota != quota or grant.workspace != WORKSPACE:
        sys.exit(
            f"{address}: policy quota {grant.policy.daily_send_quota} in {grant.workspace!r}, "
            f"expected {quota} in {WORKSPACE!r}"
        )


async def policy_update_costs(backend: str) -> tuple[dict[int, float], float]:
    """Median update time (ms) by workspace size, and the provisioning rate while growing.

    The workspace grows between sizes; the second figure is grants/s of the
    ``provision_many`` call that takes it from the first size to the last,
    i.e. bulk provisioning into an application that already holds many grants.
    """
    costs: dict[int, float] = {}
    with scratch_database(backend) as url:
        async with open_fleet(url) as fleet:
            await fleet.add_domain(DOMAIN)
            await fleet.create_workspace(WORKSPACE)
            held = 0
            for size in POLICY_SIZES:
                seconds = await provision(fleet, addresses(held, size), workspace=WORKSPACE)
                growth_rate = (size - held) / seconds
                print(
                    f"[{backend}] workspace grown to {size:,} grants: "
                    f"{size - held:,} in {seconds:.2f} s = {growth_rate:,.0f} grants/s"
                )
                held = size
                ms, quota = await median_policy_update_ms(fleet, first_quota=size)
                await check_inherited(fleet, addresses(size - 1, size)[0], quota)
                costs[size] = ms
                print(
                    f"[{backend}] update_policy with {size:,} grants: median {ms:.2f} ms "
                    f"(of {POLICY_UPDATES}; new quota visible on a grant)"
                )
    return costs, growth_rate


# -- profiling -------------------------------------------------------------------------


async def profile_provisioning() -> None:
    """Print where SQLite ``provision_many`` spends its time (cProfile).

    cProfile sees one thread only, so for this run the fleet's transactions
    execute inline on the event loop thread instead of in a worker thread:
    the profile then covers validation, SQLAlchemy, the driver and SQLite.
    """
    with scratch_database("sqlite") as url:
        async with open_fleet(url) as fleet:
            await fleet.add_domain(DOMAIN)
            run_inline(fleet)
            wanted = addresses(0, PROVISION_COUNT, prefix="profiled")
            profiler = cProfile.Profile()
            with stopwatch() as elapsed:
                profiler.enable()
                await fleet.provision_many(wanted)
                profiler.disable()
    print(f"[sqlite] profiled provision_many({PROVISION_COUNT:,}): {elapsed():.2f} s")
    for order in ("tottime", "cumulative"):
        report = io.StringIO()
        pstats.Stats(profiler, stream=report).sort_stats(order).print_stats(30)
        print(report.getvalue())


def run_inline(fleet: Fleet) -> None:
    """Make ``fleet.database`` run transactions on the calling thread (for profiling)."""
    database = fleet.database

    async def write(work):  # type: ignore[no-untyped-def]
        return database.write_sync(work)

    async def read(work):  # type: ignore[no-untyped-def]
        return database.read_sync(work)

    database.write = write  # type: ignore[method-assign]
    database.read = read  # type: ignore[method-assign]


# -- main --------------------------------------------------------------------------------


async def main(profile: bool) -> None:
    figures: dict[str, float | str] = {}
    for backend in BACKENDS:
        figures[f"grants_per_s_{backend}"] = await grants_per_second(backend)
    if figures["grants_per_s_sqlite"] < TARGET_GRANTS_PER_S:
        print(
            f"SQLite is below the target of {TARGET_GRANTS_PER_S:,} grants/s "
            "(run with --profile to see where the time goes)"
        )

    for backend in BACKENDS:
        costs, growth_rate = await policy_update_costs(backend)
        small, large = (costs[size] for size in POLICY_SIZES)
        # SQLite carries the headline keys; other backends are extra keys.
        suffix = "" if backend == "sqlite" else f"_{backend}"
        figures[f"policy_update_ms_{POLICY_SIZES[0]}{suffix}"] = small
        figures[f"policy_update_ms_{POLICY_SIZES[1]}{suffix}"] = large
        figures[f"policy_update_ratio{suffix}"] = large / small
        figures[f"grants_per_s_{backend}_growing_to_{POLICY_SIZES[1]}"] = growth_rate
        print(
            f"[{backend}] policy update ratio {POLICY_SIZES[1]:,}/{POLICY_SIZES[0]:,} "
            f"grants: {large / small:.2f}"
        )
    figures["policy_update_backend"] = "sqlite"

    if profile:
        await profile_provisioning()
    emit(figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="profile SQLite provisioning")
    asyncio.run(main(parser.parse_args().profile))
