"""The middleware seam against a real server: hooks on both sides, headers end to end,
and a middleware that raises everywhere costing no job and no supervisor."""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path

import pytest

from naq import Queue, Settings
from naq.producer.schedules import schedule
from naq.scheduler import Scheduler
from naq.transport.pool import close_connections
from tests import jobs
from tests.conftest import StartSupervisor, run_until_ready, stop_all
from tests.middleware import HEADER, Raising, Recorder, Stamp


async def test_every_hook_fires_in_order_for_a_job_that_finishes(
    settings: Settings, start_supervisor: StartSupervisor
) -> None:
    producer, worker = Recorder(), Recorder()
    sup = await start_supervisor(middleware=[worker])
    async with Queue(settings=settings, middleware=[producer]) as queue:
        job = await queue.enqueue(jobs.add, 1, 2)
        assert await queue.fetch_result(job.job_id, timeout=10) == 3
    assert producer.of(job.job_id) == [("before_enqueue", None), ("after_enqueue", None)]
    await sup.wait_until(lambda c: c.processed == 1)
    assert worker.of(job.job_id) == [
        ("before_job", 1),
        ("after_outcome", "ok"),
        ("after_settle", "finished"),
    ]
    assert worker.of(sup.worker_id) == [("on_start", ("default",))]


async def test_retries_and_failures_are_told_as_settle_actions(
    settings: Settings, start_supervisor: StartSupervisor
) -> None:
    worker = Recorder()
    sup = await start_supervisor(middleware=[worker])
    async with Queue(settings=settings) as queue:
        job = await queue.enqueue(jobs.fail, "no", max_retries=1, retry_delay=0.05)
        await sup.wait_until(lambda c: c.failed == 1)
    assert worker.of(job.job_id) == [
        ("before_job", 1),
        ("after_outcome", "error"),
        ("after_settle", "retry"),
        ("before_job", 2),
        ("after_outcome", "error"),
        ("after_settle", "failed"),
    ]


async def test_on_stop_follows_the_drain(settings: Settings) -> None:
    from naq.executors.registry import load_executor
    from naq.supervisor import Supervisor

    worker = Recorder()
    conf = settings.replace(executor="asyncio")
    sup = Supervisor(conf, load_executor("asyncio")(2, conf), middleware=[worker])
    task = await run_until_ready(sup)
    await stop_all([(sup, task)])
    assert [hook for hook, _ in worker.of(sup.worker_id)] == ["on_start", "on_stop"]


async def test_headers_a_producer_middleware_adds_reach_the_supervisor_on_every_path(
    settings: Settings, start_supervisor: StartSupervisor
) -> None:
    """Enqueued one by one, in a batch, delayed, and held for a dependency: the header
    travels with the job each way (signing and trace context depend on it)."""
    worker = Recorder()
    sup = await start_supervisor(middleware=[worker])
    async with Queue(settings=settings, middleware=[Stamp()]) as queue:
        one = await queue.enqueue(jobs.add, 1, 1)
        many = await queue.enqueue_many([(jobs.add, (2, 2)), (jobs.add, (3, 3))])
        later = await queue.enqueue_in(datetime.timedelta(milliseconds=200), jobs.add, 4, 4)
        held = await queue.enqueue(jobs.add, 5, 5, depends_on=one)
        ids = [one.job_id, *(j.job_id for j in many), later.job_id, held.job_id]
        await queue.fetch_results(ids, timeout=15)
    await sup.wait_until(lambda c: c.processed == len(ids))
    for job_id in ids:
        assert worker.headers[job_id].get(HEADER) == f"stamped {job_id}", job_id


async def test_recurring_runs_carry_the_schedulers_middleware_headers(
    settings: Settings, start_supervisor: StartSupervisor
) -> None:
    worker, fired = Recorder(), Recorder()
    sup = await start_supervisor(middleware=[worker])
    scheduler = Scheduler(settings, middleware=[Stamp(), fired])
    task = asyncio.create_task(scheduler.run())
    try:
        await schedule(
            jobs.add,
            1,
            1,
            interval=1,
            repeat=1,
            nats_url=settings.url,
            namespace=settings.namespace,
        )
        await asyncio.wait_for(sup.wait_until(lambda c: c.processed == 1), 15)
    finally:
        scheduler.request_stop()
        await asyncio.wait_for(task, 15)
        await close_connections()
    (run_id,) = worker.headers
    assert worker.headers[run_id][HEADER] == f"stamped {run_id}"
    assert fired.of(run_id) == [("before_enqueue", None), ("after_enqueue", None)]


async def test_a_middleware_raising_in_every_hook_fails_no_job_and_stops_no_supervisor(
    settings: Settings,
    start_supervisor: StartSupervisor,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    after = Recorder()
    sup = await start_supervisor(middleware=[Raising(), after])
    with caplog.at_level(logging.ERROR, logger="naq.middleware"):
        async with Queue(settings=settings, middleware=[Raising()]) as queue:
            first = await queue.enqueue(jobs.add, 2, 3)
            assert await queue.fetch_result(first.job_id, timeout=10) == 5
            marks = str(tmp_path / "runs")
            again = await queue.enqueue(jobs.mark, marks, "ran")
            assert await queue.fetch_result(again.job_id, timeout=10) == 1
    await sup.wait_until(lambda c: c.processed == 2)
    assert sup.counters.failed == 0
    assert after.of(again.job_id)[-1] == ("after_settle", "finished")
    hooks = {r.getMessage().split(" failed in ")[1] for r in caplog.records if r.exc_info}
    assert hooks == {
        "before_enqueue; ignored",
        "after_enqueue; ignored",
        "on_start; ignored",
        "before_job; ignored",
        "after_outcome; ignored",
        "after_settle; ignored",
    }
