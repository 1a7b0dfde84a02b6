"""Recurring jobs end to end: a real server, supervisors and scheduler roles in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from naq import current_leader
from naq.producer.schedules import (
    cancel_recurring,
    list_schedules,
    pause_scheduled_job,
    resume_scheduled_job,
    schedule,
)
from naq.scheduler import Scheduler
from naq.settings import Settings
from naq.state.schedules import DONE
from naq.state.store import read_record
from naq.transport.connect import Client
from naq.transport.names import Layout
from naq.transport.pool import close_connections
from tests.conftest import StartSupervisor
from tests.jobs import add

FAST = {"scheduler_lock_ttl": 2.0, "scheduler_lock_renew_interval": 1.0}


@pytest.fixture
async def schedulers(settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    running: list[tuple[Scheduler, asyncio.Task[int]]] = []

    async def start(name: str) -> tuple[Scheduler, asyncio.Task[int]]:
        sched = Scheduler(settings.replace(**FAST), name)
        task = asyncio.create_task(sched.run())
        await asyncio.wait_for(sched.ready.wait(), 10)
        running.append((sched, task))
        return sched, task

    yield start
    for sched, task in running:
        sched.request_stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 10)
    await close_connections()


async def results(nc: Any, settings: Settings, prefix: str) -> AsyncIterator[str]:
    """Job ids of finished runs of a schedule, as their results land."""
    kv = await nc.jetstream().key_value(f"{settings.namespace}_results")
    watcher = await kv.watchall()
    try:
        async for entry in watcher:
            if entry is not None and entry.key.startswith(prefix + "-") and entry.value:
                yield entry.key
    finally:
        await watcher.stop()


async def collect(nc: Any, settings: Settings, sid: str, n: int, timeout: float) -> list[str]:
    seen: list[str] = []

    async def run() -> None:
        async for key in results(nc, settings, sid):
            if key not in seen:
                seen.append(key)
            if len(seen) >= n:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run(), timeout)
    return seen


async def test_interval_schedule_runs_repeat_times_with_distinct_ids(
    settings: Settings, start_supervisor: StartSupervisor, schedulers: Any, nc: Any
) -> None:
    await start_supervisor()
    await schedulers("only")
    sid = await schedule(
        add, 2, 3, interval=1, repeat=3, nats_url=settings.nats_url, namespace=settings.namespace
    )
    ids = await collect(nc, settings, sid, 3, 10)
    assert len(ids) == 3
    assert len(set(ids)) == 3
    (record,) = await list_schedules(
        schedule_id=sid, nats_url=settings.nats_url, namespace=settings.namespace
    )
    for _ in range(50):
        if record.status == DONE:
            break
        await asyncio.sleep(0.05)
        (record,) = await list_schedules(
            schedule_id=sid, nats_url=settings.nats_url, namespace=settings.namespace
        )
    assert record.status == DONE
    assert record.repeat == 0
    assert record.runs == 3
    assert len(await collect(nc, settings, sid, 4, 1.5)) == 3  # and no fourth


async def test_a_schedule_id_outside_nats_pys_key_alphabet(settings: Settings) -> None:
    """Schedule ids are checked like job ids (``nightly:report`` passes), so the store
    must not apply nats-py's narrower key check."""
    target = {"nats_url": settings.nats_url, "namespace": settings.namespace}
    sid = await schedule(add, 1, 1, cron="0 3 * * *", schedule_id="nightly:report", **target)
    assert sid == "nightly:report"
    assert await pause_scheduled_job(sid, **target)
    assert [s.status for s in await list_schedules(schedule_id=sid, **target)] == ["paused"]
    assert await resume_scheduled_job(sid, **target)
    assert await cancel_recurring(sid, **target)
    assert await list_schedules(schedule_id=sid, **target) == []


async def test_cron_with_seconds_field(
    settings: Settings, start_supervisor: StartSupervisor, schedulers: Any, nc: Any
) -> None:
    await start_supervisor()
    await schedulers("only")
    target = {"nats_url": settings.nats_url, "namespace": settings.namespace}
    sids = [await schedule(add, i, 1, cron="* * * * * *", repeat=3, **target) for i in range(5)]
    runs = [run for sid in sids for run in await collect(nc, settings, sid, 3, 8)]
    assert len(runs) == 15
    # Precision: cron fires fall on whole seconds, the run id carries the second, and
    # the run's record says when it started.
    client = Client(nc, settings)
    lateness = []
    for run in runs:
        record = await read_record(client, Layout(settings.namespace), run)
        assert record is not None
        lateness.append(record.started_at - int(run.rsplit("-", 1)[1]))
    assert min(lateness) >= 0, lateness  # never early
    assert max(lateness) < 1.0, lateness
    print(
        f"recurring fire to job start: median {statistics.median(lateness) * 1000:.0f} ms, "
        f"worst {max(lateness) * 1000:.0f} ms over {len(lateness)} runs"
    )


async def test_pause_stops_fires_and_resume_restarts_them(
    settings: Settings, start_supervisor: StartSupervisor, schedulers: Any, nc: Any
) -> None:
    await start_supervisor()
    await schedulers("only")
    target = dict(nats_url=settings.nats_url, namespace=settings.namespace)
    sid = await schedule(add, 1, 2, interval=1, **target)  # type: ignore[arg-type]
    assert len(await collect(nc, settings, sid, 1, 5)) == 1
    assert await pause_scheduled_job(sid, **target)
    settled = await collect(nc, settings, sid, 100, 1.2)  # a fire in flight may land
    assert len(await collect(nc, settings, sid, 100, 2.2)) == len(settled)
    assert await resume_scheduled_job(sid, **target)
    assert len(await collect(nc, settings, sid, len(settled) + 1, 5)) == len(settled) + 1


async def test_one_leader_and_takeover_without_double_fires(
    settings: Settings, start_supervisor: StartSupervisor, schedulers: Any, nc: Any
) -> None:
    await start_supervisor()
    a, a_task = await schedulers("a")
    b, b_task = await schedulers("b")
    done, _ = await asyncio.wait(
        [asyncio.create_task(a.leading.wait()), asyncio.create_task(b.leading.wait())],
        timeout=5,
        return_when=asyncio.FIRST_COMPLETED,
    )
    assert done
    await asyncio.sleep(0.3)
    assert a.is_leader != b.is_leader
    leader, leader_task, standby = (a, a_task, b) if a.is_leader else (b, b_task, a)
    client_view = await _leader_record(settings)
    assert client_view is not None
    assert client_view["id"] == leader.scheduler_id

    sid = await schedule(
        add, 4, 4, interval=1, nats_url=settings.nats_url, namespace=settings.namespace
    )
    assert len(await collect(nc, settings, sid, 2, 5)) == 2
    leader_task.cancel()  # dies without releasing: the standby waits out the lease
    killed = time.monotonic()
    await asyncio.wait_for(standby.leading.wait(), FAST["scheduler_lock_ttl"] + 2.5)
    takeover = time.monotonic() - killed
    assert takeover <= FAST["scheduler_lock_ttl"] + FAST["scheduler_lock_renew_interval"] + 1.0
    before = len(await collect(nc, settings, sid, 10_000, 0.5))
    ids = await collect(nc, settings, sid, before + 2, 5)
    assert len(ids) == len(set(ids)) >= before + 2
    assert leader.fired + standby.fired == len(ids) or leader.fired + standby.fired == len(ids) + 1


async def _leader_record(settings: Settings) -> dict[str, Any] | None:
    return await current_leader(settings.nats_url, settings.namespace)


async def test_cancel_scheduled_job_cancels_a_recurring_schedule(settings: Settings) -> None:
    """The seed's one name for cancelling covers delayed jobs and recurring schedules."""
    from naq import cancel_scheduled_job

    url, ns = settings.url, settings.namespace
    schedule_id = await schedule(add, 1, 2, interval=60, nats_url=url, namespace=ns)
    assert schedule_id in {s.schedule_id for s in await list_schedules(nats_url=url, namespace=ns)}
    assert await cancel_scheduled_job(schedule_id, url, ns) is True
    assert await list_schedules(nats_url=url, namespace=ns) == []
    assert await cancel_scheduled_job(schedule_id, url, ns) is False
    await close_connections()


async def test_heartbeats_say_which_scheduler_leads(
    schedulers: Callable[..., Any], nc: Any, settings: Settings
) -> None:
    first, _ = await schedulers("first")
    second, _ = await schedulers("second")
    leader = await _first_leader(first, second)
    kv = await nc.jetstream().key_value(f"{settings.namespace}_workers")
    records: dict[str, dict[str, Any]] = {}
    watcher = await kv.watchall()
    try:
        async for entry in watcher:  # beats land at once on a change of leader
            if entry is not None and entry.value and entry.key.startswith("scheduler-"):
                rec = json.loads(entry.value)
                records[rec["id"]] = rec
            if len(records) == 2 and sum(r["leader"] for r in records.values()) == 1:
                break
    finally:
        await watcher.stop()
    leaders = [r["id"] for r in records.values() if r["leader"]]
    assert leaders == [f"scheduler-{leader.scheduler_id}"]
    assert all(r["role"] == "scheduler" for r in records.values())


async def _first_leader(*candidates: Scheduler) -> Scheduler:
    waits = {asyncio.create_task(s.leading.wait()): s for s in candidates}
    done, pending = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "no scheduler became leader"
    return waits[next(iter(done))]
