"""The scheduler leader dies: SIGKILLed in the middle of 1,000 fires, twice."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from naq.producer.schedules import list_schedules
from naq.state.schedules import DONE
from tests.conftest import until
from tests.faults.conftest import Row, report
from tests.procs import Spawn
from tests.schedulers import (
    TAKEOVER_BOUND,
    StartSchedulers,
    by_pid,
    job_subjects,
    leader_other_than,
    make_schedules,
    runs_by_schedule,
    start_schedulers,
)

SCHEDULES = 100
REPEAT = 10


@pytest.fixture
def schedulers(spawn: Spawn, js: Any, nats_url: str, namespace: str) -> StartSchedulers:
    return start_schedulers(spawn, js, nats_url, namespace)


@pytest.mark.quick
async def test_scheduler_leaders_sigkilled_mid_fires_miss_and_double_nothing(
    schedulers: StartSchedulers, nc: Any, js: Any, namespace: str, target: dict[str, str]
) -> None:
    """Three schedulers fire 100 schedules x 10 runs (every second); the leader is
    SIGKILLed after 300 fires and its successor after 600. Every schedule runs exactly
    10 times (0 missed), each run published once (0 doubled)."""
    total = SCHEDULES * REPEAT
    await list_schedules(**target)  # connects, and so declares the namespace
    procs = await schedulers(3)
    await make_schedules(SCHEDULES, target, interval=1, repeat=REPEAT)
    seen = 0
    kill_at = {total * 3 // 10, total * 6 // 10}
    killed: list[float] = []
    dead: set[int] = set()
    takeovers: list[float] = []

    async def kill_leader() -> None:
        record = await leader_other_than(js, namespace, dead, TAKEOVER_BOUND + 5, procs)
        leader = by_pid(procs, record["pid"])
        leader.send(signal.SIGKILL)  # a scheduler this test started
        dead.add(leader.pid)
        killed.append(time.monotonic())
        await leader_other_than(js, namespace, dead, TAKEOVER_BOUND + 5, procs)
        takeovers.append(time.monotonic() - killed[-1])

    kills: list[asyncio.Task[None]] = []

    async def on_run(_msg: Any) -> None:
        nonlocal seen
        seen += 1
        if seen in kill_at:
            kills.append(asyncio.create_task(kill_leader()))

    sub = await nc.subscribe(f"{namespace}.jobs.>", cb=on_run)
    try:

        async def all_done() -> bool:
            found = await list_schedules(**target)
            return len(found) == SCHEDULES and all(s.status == DONE for s in found)

        await until(all_done, 60, "every schedule to finish its runs")
    finally:
        await sub.unsubscribe()
    await asyncio.gather(*kills)  # each kill's takeover was seen (or raised here)
    subjects = await job_subjects(js, namespace)
    runs = runs_by_schedule(subjects, namespace)
    doubled = sum(count - 1 for count in subjects.values())
    missed = sum(max(0, REPEAT - len(fires)) for fires in runs.values()) + REPEAT * (
        SCHEDULES - len(runs)
    )
    report(
        Row(
            "SIGKILL the scheduler leader during 1,000 fires (twice)",
            total,
            missed,
            doubled,
            "standby led after " + ", ".join(f"{t:.1f}s" for t in takeovers),
            "lost = fires missed; run twice = fires published twice",
        )
    )
    assert len(killed) == 2
    assert doubled == 0
    assert missed == 0
    assert all(len(fires) == REPEAT for fires in runs.values())
    assert len(subjects) == total
