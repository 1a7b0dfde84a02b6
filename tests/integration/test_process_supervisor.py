"""The process executor under a real supervisor: a crashing job fails alone, after its
retries, with the reason, and the jobs around it and the supervisor carry on."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from naq import JobFailed, JobNotFound, Queue
from naq.errors import BrokenExecutor
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor


async def test_a_job_that_always_crashes_fails_after_its_retries_and_nothing_else_does(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    sup = await start_supervisor(executor="process", concurrency=2)
    runs = tmp_path / "runs"
    before = await queue.enqueue_many([(jobs.add, (i, 1)) for i in range(5)])
    crasher = await queue.enqueue(jobs.exit_after_record, str(runs), 3, max_retries=2)
    after = await queue.enqueue_many([(jobs.add, (i, 2)) for i in range(5)])

    with pytest.raises(JobFailed) as info:
        await queue.fetch_result(crasher.job_id, timeout=20)
    assert info.value.error == "worker process exited with code 3"
    assert runs.read_text().count("run") == 3  # the first attempt and two retries

    # The result is stored before the dead letter is published: wait for the settling.
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed >= 1), 10)
    layout = Layout(namespace)
    dead = await nc.jetstream().get_last_msg(layout.failed_stream, layout.failed_subject("default"))
    assert dead.headers["Naq-Job-Id"] == crasher.job_id
    assert dead.headers["Naq-Attempts"] == "3"
    assert dead.headers["Naq-Reason"] == "worker process exited with code 3"

    results = await queue.fetch_results([j.job_id for j in before + after], timeout=20)
    assert sorted(results.values()) == sorted([i + 1 for i in range(5)] + [i + 2 for i in range(5)])
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 10 and c.failed >= 1), 10)
    assert (sup.counters.processed, sup.counters.failed, sup.counters.retried) == (10, 1, 2)

    assert sup.ready.is_set()
    assert sup.fatal is None
    later = await queue.enqueue(jobs.add, 40, 2)
    assert await queue.fetch_result(later.job_id, timeout=10) == 42


async def test_a_job_that_crashes_once_succeeds_on_its_retry(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    sup = await start_supervisor(executor="process", concurrency=2)
    marker = tmp_path / "crashed-once"
    job = await queue.enqueue(jobs.crash_once, str(marker), max_retries=1)
    assert await queue.fetch_result(job.job_id, timeout=20) == "survived"
    assert marker.exists()
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 1), 10)
    assert (sup.counters.processed, sup.counters.failed, sup.counters.retried) == (1, 0, 1)


async def test_a_job_over_its_timeout_fails_and_the_next_job_runs(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    await start_supervisor(executor="process", concurrency=1)
    slow = await queue.enqueue(jobs.sleep, 30, timeout=0.5)
    with pytest.raises(JobFailed, match=r"TimeoutError: job exceeded 0\.5s"):
        await queue.fetch_result(slow.job_id, timeout=10)
    job = await queue.enqueue(jobs.add, 2, 2)
    assert await queue.fetch_result(job.job_id, timeout=10) == 4


async def test_over_max_memory_the_supervisor_pulls_nothing(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``max_memory`` of one byte: always over, so no job may start, from the first one."""
    caplog.set_level(logging.WARNING, logger="naq.supervisor.supervisor")
    sup = await start_supervisor(executor="process", concurrency=2, max_memory=1)
    job = await queue.enqueue(jobs.add, 1, 1)

    # Woken at once if anything settles; otherwise a few pull and heartbeat rounds pass.
    settled = asyncio.create_task(sup.wait_until(lambda c: c.processed + c.failed > 0))
    done, _ = await asyncio.wait({settled}, timeout=2.5)
    settled.cancel()
    assert not done, f"a job ran while the supervisor was over max_memory: {sup.counters}"

    assert sup.free() == 0
    assert not sup.running_jobs()
    consumer = await nc.jetstream().consumer_info(Layout(namespace).stream, "default")
    assert consumer.num_pending == 1, "the job left the stream"
    assert consumer.num_ack_pending == 0, "the job was handed to the supervisor"
    assert consumer.delivered.stream_seq == 0
    assert any("not pulling jobs" in r.getMessage() for r in caplog.records)
    assert sup.ready.is_set()
    with pytest.raises(JobNotFound):
        await queue.fetch_result(job.job_id)


async def test_a_restart_storm_stops_the_supervisor(start_supervisor: StartSupervisor) -> None:
    with pytest.raises(BrokenExecutor, match=r"preloading 'tests\.broken_module' failed"):
        await asyncio.wait_for(
            start_supervisor(executor="process", concurrency=2, preload="tests.broken_module"),
            15,
        )
