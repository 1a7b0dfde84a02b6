"""The look-ahead: jobs held beyond the running ones, already leased, each started the
moment a slot frees. Held, a job keeps its lease; a crash of the child running the job
ahead of it fails that job only; a drain hands it back at once, as a run that did not
happen; a wait past ``lookahead_wait`` hands it back for another worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from naq import JobFailed, Queue
from naq.executors.process import ProcessExecutor
from naq.state.record import ResultRecord
from naq.supervisor import Supervisor
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor
from tests.integration.test_deliveries import _record_until, _started


def _held(sup: Supervisor) -> list[str]:
    """Jobs waiting for a slot: in the supervisor's look-ahead, or (process executor)
    queued in a child behind the job it runs."""
    ahead = [job.meta.job_id for job in sup.jobs.waiting.values()]
    if isinstance(sup.executor, ProcessExecutor):
        ahead += sup.executor.queued()
    return ahead


async def _waiting(sup: Supervisor, job_id: str) -> None:
    """Until ``job_id`` waits for a slot (not an event the test can await: a short
    bounded poll)."""
    deadline = time.monotonic() + 20
    while job_id not in _held(sup):
        assert time.monotonic() < deadline, f"waiting: {_held(sup)}"
        await asyncio.sleep(0.01)


def _counts(record: ResultRecord) -> tuple[int, int, int]:
    return record.attempt, record.crashes, record.interruptions


async def test_a_waiting_job_keeps_its_lease_behind_a_long_job(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    """The job ahead runs three times ``ack_wait``; the one behind it waits as long.
    A lapsed lease would bring it back to the test's own pull request."""
    sup = await start_supervisor(
        executor="process", concurrency=1, ack_wait=1.0, lookahead=1, lookahead_wait=30.0
    )
    gate, started = tmp_path / "gate", tmp_path / "started"
    long = await queue.enqueue(jobs.wait_for_file, str(gate), str(started), 30.0)
    await _started(started)
    behind = await queue.enqueue(jobs.add, 1, 2)
    await _waiting(sup, behind.job_id)

    layout = Layout(namespace)
    js = nc.jetstream()
    watch = await js.pull_subscribe_bind(durable=layout.consumer("default"), stream=layout.stream)
    with pytest.raises(TimeoutError):  # three ack_waits: nothing comes back
        await watch.fetch(1, timeout=3.0)
    await watch.unsubscribe()
    assert behind.job_id in _held(sup)

    gate.touch()
    assert isinstance(await queue.fetch_result(long.job_id, timeout=20), int)
    assert await queue.fetch_result(behind.job_id, timeout=20) == 3
    done = await _record_until(nc, namespace, behind.job_id, lambda r: r.final, 5)
    assert _counts(done) == (1, 0, 0)  # ran once, on its first delivery
    consumer = await js.consumer_info(layout.stream, layout.consumer("default"))
    assert consumer.num_redelivered == 0


async def test_a_child_crash_fails_only_its_job_and_the_waiting_one_runs(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    sup = await start_supervisor(executor="process", concurrency=1, lookahead_wait=30.0)
    gate, started = tmp_path / "gate", tmp_path / "started"
    crasher = await queue.enqueue(jobs.exit_when_file, str(gate), str(started), 3, max_retries=0)
    await _started(started)
    behind = await queue.enqueue(jobs.add, 20, 22)
    await _waiting(sup, behind.job_id)

    gate.touch()  # the child exits with code 3 while the job behind it waits
    with pytest.raises(JobFailed) as info:
        await queue.fetch_result(crasher.job_id, timeout=20)
    assert info.value.error == "worker process exited with code 3"
    assert await queue.fetch_result(behind.job_id, timeout=20) == 42
    done = await _record_until(nc, namespace, behind.job_id, lambda r: r.final, 5)
    assert _counts(done) == (1, 0, 0)  # not failed, not crashed, not handed back
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed + c.failed >= 2), 10)
    assert (sup.counters.processed, sup.counters.failed) == (1, 1)


async def test_a_drain_hands_waiting_jobs_back_at_once(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    """The running job gets its ``shutdown_grace``; the one waiting behind it goes back
    the moment the stop begins, as an interrupted delivery, and another supervisor
    runs it while the first still drains."""
    first = await start_supervisor(
        executor="process", concurrency=1, shutdown_grace=30.0, lookahead_wait=30.0
    )
    gate, started = tmp_path / "gate", tmp_path / "started"
    long = await queue.enqueue(jobs.wait_for_file, str(gate), str(started), 30.0)
    await _started(started)
    behind = await queue.enqueue(jobs.add, 2, 3)
    await _waiting(first, behind.job_id)

    first.request_stop()
    handed = await _record_until(nc, namespace, behind.job_id, lambda r: True, 5)
    assert (handed.status, handed.error) == ("interrupted", "handed back by a stopping supervisor")
    assert not gate.exists()  # the job ahead of it still runs
    await start_supervisor(executor="thread", concurrency=1)
    assert await queue.fetch_result(behind.job_id, timeout=20) == 5
    done = await _record_until(nc, namespace, behind.job_id, lambda r: r.final, 5)
    assert _counts(done) == (1, 0, 1)  # its one run counts; the hand-back does not

    gate.touch()
    assert isinstance(await queue.fetch_result(long.job_id, timeout=20), int)
    await asyncio.wait_for(first.wait_until(lambda c: c.processed >= 1), 10)
    assert (first.counters.processed, first.counters.failed) == (1, 0)


async def test_a_job_waiting_past_lookahead_wait_goes_back_and_the_lookahead_closes(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    """Behind a long job, a held job is handed back for another worker after
    ``lookahead_wait``; the supervisor then holds nothing beyond its busy slot."""
    sup = await start_supervisor(executor="process", concurrency=1, lookahead_wait=0.5)
    gate, started = tmp_path / "gate", tmp_path / "started"
    long = await queue.enqueue(jobs.wait_for_file, str(gate), str(started), 30.0)
    await _started(started)
    behind = await queue.enqueue(jobs.add, 1, 1)
    handed = await _record_until(nc, namespace, behind.job_id, lambda r: True, 10)
    assert (handed.status, handed.interruptions) == ("interrupted", 1)
    assert handed.error == "no slot freed in time: handed back for another worker"
    assert not _held(sup)
    # The look-ahead is closed while its slot holds a long job: no room beyond it (a
    # pull asked for more while it was open may still be out: what it brings goes back).
    assert sup.jobs.room() == 0
    assert sup.free() <= 0

    gate.touch()
    assert isinstance(await queue.fetch_result(long.job_id, timeout=20), int)
    assert await queue.fetch_result(behind.job_id, timeout=20) == 2
