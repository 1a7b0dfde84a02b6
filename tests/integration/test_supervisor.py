"""Supervisor behaviour against a real server: leases, retries, heartbeats, reconnects."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

import pytest

from naq import Outcome, Queue, Settings, close_connections, list_workers
from naq.executors.asyncio import AsyncioExecutor
from naq.executors.registry import load_executor
from naq.middleware import JobContext, Middleware
from naq.supervisor import Supervisor
from naq.transport.server import EmbeddedServer, free_port
from tests import jobs
from tests.conftest import StartSupervisor, run_until_ready, stop_all


async def test_job_longer_than_ack_wait_runs_once(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    await start_supervisor(ack_wait=1.0)
    marks = str(tmp_path / "runs")
    job = await queue.enqueue(jobs.record_run, marks, 3.0)
    assert await queue.fetch_result(job.job_id, timeout=15) == 1
    assert Path(marks).read_text().count("run") == 1


async def test_retries_with_delay_then_success(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    await start_supervisor()
    tries = str(tmp_path / "tries")
    started = time.monotonic()
    job = await queue.enqueue(jobs.flaky, tries, 2, max_retries=3, retry_delay=0.5)
    assert await queue.fetch_result(job.job_id, timeout=15) == 3
    assert time.monotonic() - started >= 1.0  # two retries, 0.5 s apart


class Concurrency(Middleware):
    """Counts the jobs running at once, told by the supervisor as each starts and ends."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def before_job(self, job: JobContext) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def after_outcome(self, job: JobContext, outcome: Outcome) -> None:
        self.now -= 1


async def test_concurrency_limit_is_honoured(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    concurrent = Concurrency()
    await start_supervisor(executor="asyncio", concurrency=3, middleware=[concurrent])
    created = await queue.enqueue_many([(jobs.async_sleep, (0.2,)) for _ in range(9)])
    assert len(await queue.fetch_results([j.job_id for j in created], timeout=20)) == 9
    assert concurrent.peak == 3


async def test_heartbeat_record_and_removal(settings: Settings) -> None:
    """Listed from the moment it is ready (its first heartbeat is written before), with
    its queues, executor and slots; gone once it stopped cleanly."""
    conf = settings.replace(executor="thread", concurrency=3)
    sup = Supervisor(conf, load_executor("thread")(3, conf), ["alpha", "beta"])
    task = await run_until_ready(sup)
    try:
        (record,) = [w for w in await list_workers(settings.url, settings.namespace)]
        assert record["id"] == sup.worker_id
        assert record["queues"] == ["alpha", "beta"]
        assert (record["executor"], record["slots"], record["busy"]) == ("thread", 3, 0)
        assert record["rss"] > 0
        assert record["pid"] > 0
    finally:
        await stop_all([(sup, task)])
    assert await task == 0
    assert await list_workers(settings.url, settings.namespace) == []
    await close_connections()


async def test_survives_a_server_restart(tmp_path: Path, namespace: str) -> None:
    """The server goes away mid-run and comes back: every job still completes."""
    port = free_port()
    server = EmbeddedServer(port, tmp_path / "js").start()
    settings = Settings(nats_url=server.url, namespace=namespace, pull_expires=1.0)
    from naq.executors.asyncio import AsyncioExecutor
    from naq.supervisor import Supervisor

    sup = Supervisor(settings, AsyncioExecutor(4, settings))
    task = asyncio.create_task(sup.run())
    try:
        await sup.ready.wait()
        async with Queue(settings=settings) as q:
            before = await q.enqueue_many([(jobs.add, (i, i)) for i in range(20)])
            assert len(await q.fetch_results([j.job_id for j in before], timeout=10)) == 20
            server.stop()
            server = EmbeddedServer(port, tmp_path / "js").start()
            after = await q.enqueue_many([(jobs.add, (i, 1)) for i in range(20)])
            results = await q.fetch_results([j.job_id for j in after], timeout=20)
            assert sorted(results.values()) == [i + 1 for i in range(20)]
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 15)
        server.stop()


async def test_an_idle_queue_does_not_starve_a_busy_one(
    queue: Queue, settings: Settings, start_supervisor: StartSupervisor
) -> None:
    """Two queues, four slots: once "quiet" has expired a pull empty-handed it holds one
    slot, so "busy" runs three jobs at once instead of waiting for quiet's request."""
    sup = await start_supervisor(["busy", "quiet"], concurrency=4, pull_expires=0.5)
    for name in ("busy", "quiet"):
        await asyncio.wait_for(sup.wait_queue_idle(name), 10)
    async with Queue("busy", settings=settings) as busy:
        created = await busy.enqueue_many([(jobs.async_sleep, (0.3,)) for _ in range(6)])
        started = time.monotonic()
        results = await busy.fetch_results([j.job_id for j in created], timeout=20)
    assert len(results) == 6
    assert time.monotonic() - started < 1.5  # 3 at a time: two rounds of 0.3 s, not six


class StumblingExecutor(AsyncioExecutor):
    """A plugin whose free_slots() raises once: the fault that used to end a puller."""

    stumbled = False

    def free_slots(self) -> int:
        if not StumblingExecutor.stumbled:
            StumblingExecutor.stumbled = True
            raise RuntimeError("free_slots stumbled")
        return super().free_slots()


async def test_a_puller_that_fails_is_logged_and_started_again(
    queue: Queue, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    StumblingExecutor.stumbled = False
    conf = settings.replace(concurrency=2)
    sup = Supervisor(conf, StumblingExecutor(2, conf))
    with caplog.at_level(logging.WARNING, logger="naq.supervised"):
        task = await run_until_ready(sup)
        try:
            job = await queue.enqueue(jobs.add, 20, 22)
            assert await queue.fetch_result(job.job_id, timeout=15) == 42
        finally:
            await stop_all([(sup, task)])
    assert StumblingExecutor.stumbled
    (failure,) = [
        r for r in caplog.records if r.getMessage().startswith("naq-pull-default failed;")
    ]
    assert failure.exc_info is not None
    assert str(failure.exc_info[1]) == "free_slots stumbled"


async def test_a_ready_supervisor_has_frozen_what_was_alive_at_its_start(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    """The garbage collector's full passes skip what a supervisor holds for its life
    (docs/architecture.md, "Supervisor"): frozen once it is ready, and jobs still run."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    await start_supervisor()
    assert gc.get_freeze_count() > 0
    job = await queue.enqueue(jobs.add, 2, 3)
    assert await queue.fetch_result(job.job_id, timeout=10) == 5
