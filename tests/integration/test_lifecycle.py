"""A job's life against a real server: its status at each step, cancellation, and
jobs that wait for other jobs (``depends_on``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from nats.js.errors import KeyNotFoundError

from naq import (
    ConfigurationError,
    JobFailed,
    JobNotFound,
    JobPending,
    Queue,
    cancel_job,
    cancel_job_sync,
    close_sync_connections,
    fetch_job_status,
    fetch_job_status_sync,
)
from naq.state.record import ResultRecord
from naq.state.store import store_result
from naq.supervisor import Supervisor
from naq.transport.names import Layout
from naq.transport.streams import purge_subject
from tests import jobs
from tests.conftest import StartSupervisor, first_json


async def _listed_as_running(
    nc: Any, namespace: str, worker_id: str, job_id: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The first heartbeat of ``worker_id`` whose ``running`` list holds ``job_id``,
    through a watch on the workers KV."""
    kv = await nc.jetstream().key_value(Layout(namespace).workers_bucket)
    record = await first_json(
        kv, worker_id, lambda r: any(j["job_id"] == job_id for j in r.get("running", ())), timeout
    )
    if record is not None:
        return record
    raise AssertionError(f"no heartbeat of {worker_id} listed job {job_id} in {timeout}s")


async def _no_waiters_on(nc: Any, namespace: str, dep: str, timeout: float = 10.0) -> None:
    """Until ``waiters.{dep}`` is gone from the deps KV: every job that waited on ``dep``
    has been released or cancelled by whoever saw it end."""
    kv = await nc.jetstream().key_value(Layout(namespace).deps_bucket)
    key = f"waiters.{dep}"
    watcher = await kv.watch(key)  # before the read: a delete after it shows up here
    try:
        try:
            if not (await kv.get(key)).value:
                return
        except KeyNotFoundError:
            return
        async with asyncio.timeout(timeout):
            while (entry := await watcher.updates(timeout=timeout)) is None or entry.value:
                pass
    finally:
        await watcher.stop()


async def _drained(nc: Any, namespace: str, timeout: float = 5.0) -> tuple[int, int, int]:
    """(messages in the job stream, pending, unacknowledged) of the default queue, once
    all are 0 or ``timeout`` passed. An ack is fire-and-forget and the server removes an
    acked message on its own time, with no event to wait on: a short bounded poll."""
    layout = Layout(namespace)
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while True:
        stream = await js.stream_info(layout.stream)
        consumer = await js.consumer_info(layout.stream, layout.consumer("default"))
        state = (stream.state.messages, consumer.num_pending, consumer.num_ack_pending)
        if state == (0, 0, 0) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.02)


def _stamps(path: Path) -> dict[str, tuple[float, float]]:
    """``stamp`` lines by job name; every name must appear once."""
    lines = [line.split() for line in path.read_text().splitlines()]
    names = [name for name, _, _ in lines]
    assert len(names) == len(set(names)), f"a job ran twice: {names}"
    return {name: (float(start), float(end)) for name, start, end in lines}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _exits(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` dies within ``timeout``. SIGKILL lands asynchronously and nothing
    tells this process (the child belongs to the forkserver): a short bounded poll."""
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _processed(*sups: Supervisor) -> int:
    return sum(sup.counters.processed for sup in sups)


async def _wait_stopped(sup: Supervisor, job_id: str) -> None:
    """Until ``sup`` has settled ``job_id``: woken by each settled job, no polling."""
    await asyncio.wait_for(sup.wait_until(lambda _: job_id not in sup.running_jobs()), 10)


# -- status -----------------------------------------------------------------------------


async def test_an_unknown_job_is_not_found(queue: Queue, target: dict[str, str]) -> None:
    with pytest.raises(JobNotFound, match="no job nope"):
        await fetch_job_status("nope", **target)
    with pytest.raises(JobNotFound) as info:
        await queue.fetch_result("nope")
    assert not isinstance(info.value, JobPending), "an unknown job is not pending"


async def test_status_from_queued_to_running_to_finished(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    target: dict[str, str],
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    job = await queue.enqueue(jobs.async_wait_for_file, str(gate))

    queued = await fetch_job_status(job.job_id, **target)
    assert (queued.status, queued.attempt) == ("queued", 0)
    assert (queued.queue, queued.enqueued_at) == ("default", job.enqueue_time)
    assert (queued.started_at, queued.finished_at, queued.worker) == (None, None, None)
    with pytest.raises(JobPending, match="is queued: pass timeout="):
        await queue.fetch_result(job.job_id)
    assert issubclass(JobPending, JobNotFound)

    sup = await start_supervisor()
    await _listed_as_running(nc, namespace, sup.worker_id, job.job_id)
    running = await fetch_job_status(job.job_id, **target)
    assert (running.status, running.attempt, running.worker) == ("running", 1, sup.worker_id)
    assert (running.queue, running.enqueued_at) == ("default", job.enqueue_time)
    assert running.started_at is not None
    assert running.started_at >= job.enqueue_time
    assert running.finished_at is None
    with pytest.raises(JobPending, match="is running"):
        await queue.fetch_result(job.job_id)

    gate.touch()
    assert await queue.fetch_result(job.job_id, timeout=10) == "opened"
    finished = await fetch_job_status(job.job_id, **target)
    assert (finished.status, finished.attempt, finished.worker) == ("finished", 1, sup.worker_id)
    assert finished.started_at == running.started_at
    assert finished.finished_at is not None
    assert finished.finished_at >= finished.started_at
    assert (finished.queue, finished.enqueued_at, finished.error) == (
        "default",
        job.enqueue_time,
        None,
    )


async def test_a_failed_job_counts_every_attempt(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str]
) -> None:
    sup = await start_supervisor()
    job = await queue.enqueue(jobs.fail, "no good", max_retries=2)
    with pytest.raises(JobFailed, match="ValueError: no good"):
        await queue.fetch_result(job.job_id, timeout=10)
    status = await fetch_job_status(job.job_id, **target)
    assert (status.status, status.attempt) == ("failed", 3)
    assert status.error == "ValueError: no good"
    assert (status.queue, status.worker) == ("default", sup.worker_id)
    assert status.finished_at is not None
    assert status.started_at is not None
    assert status.finished_at >= status.started_at >= job.enqueue_time


async def test_a_held_dependent_is_queued_waiting_for_its_dependency(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str]
) -> None:
    first = await queue.enqueue(jobs.add, 1, 2)
    then = await queue.enqueue(jobs.add, 3, 4, depends_on=first)
    status = await fetch_job_status(then.job_id, **target)
    assert (status.status, status.attempt, status.waiting_for) == ("queued", 0, (first.job_id,))
    assert (status.queue, status.enqueued_at) == ("default", then.enqueue_time)
    with pytest.raises(JobPending, match="is queued"):
        await queue.fetch_result(then.job_id)

    await start_supervisor()
    assert await queue.fetch_result(then.job_id, timeout=10) == 7
    status = await fetch_job_status(then.job_id, **target)
    assert (status.status, status.attempt, status.waiting_for) == ("finished", 1, ())


async def test_sync_status_and_cancel(queue: Queue, target: dict[str, str]) -> None:
    """Called from a worker thread: the sync API runs on its own loop thread."""
    job = await queue.enqueue(jobs.noop)
    try:
        with pytest.raises(JobNotFound):
            await asyncio.to_thread(fetch_job_status_sync, "nope", **target)
        status = await asyncio.to_thread(fetch_job_status_sync, job.job_id, **target)
        assert (status.status, status.queue) == ("queued", "default")
        assert await asyncio.to_thread(cancel_job_sync, job.job_id, **target) is True
        status = await asyncio.to_thread(fetch_job_status_sync, job.job_id, **target)
        assert (status.status, status.error) == ("cancelled", "cancelled")
        assert await asyncio.to_thread(cancel_job_sync, job.job_id, **target) is False
        assert await asyncio.to_thread(cancel_job_sync, "nope", **target) is False
    finally:
        await asyncio.to_thread(close_sync_connections)


# -- cancellation -----------------------------------------------------------------------


async def test_a_cancelled_queued_job_never_runs(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    target: dict[str, str],
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    job = await queue.enqueue(jobs.record_run, str(marker))
    assert await cancel_job(job.job_id, **target) is True
    status = await fetch_job_status(job.job_id, **target)
    assert (status.status, status.error, status.queue) == ("cancelled", "cancelled", "default")
    assert status.enqueued_at == job.enqueue_time

    sup = await start_supervisor()
    later = await queue.enqueue(jobs.add, 1, 1)
    assert await queue.fetch_result(later.job_id, timeout=10) == 2
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 1), 10)
    assert not marker.exists(), "the cancelled job ran"
    assert (sup.counters.processed, sup.counters.failed) == (1, 0)
    assert await _drained(nc, namespace) == (0, 0, 0)

    # A cancelled job has no value: its result is the failure, with the reason.
    with pytest.raises(JobFailed, match="cancelled"):
        await queue.fetch_result(job.job_id)


async def test_cancelling_a_running_async_job_stops_it(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    target: dict[str, str],
) -> None:
    sup = await start_supervisor(concurrency=2)
    job = await queue.enqueue(jobs.async_sleep, 30)
    await _listed_as_running(nc, namespace, sup.worker_id, job.job_id)
    assert (await fetch_job_status(job.job_id, **target)).status == "running"

    assert await cancel_job(job.job_id, **target) is True
    await _wait_stopped(sup, job.job_id)
    status = await fetch_job_status(job.job_id, **target)
    assert (status.status, status.error, status.attempt) == ("cancelled", "cancelled", 1)
    assert status.started_at is not None
    assert (sup.counters.processed, sup.counters.failed, sup.counters.retried) == (0, 0, 0)
    assert await _drained(nc, namespace) == (0, 0, 0), "the cancelled job was not acknowledged"
    assert sup.executor.free_slots() == 2

    later = await queue.enqueue(jobs.async_add, 2, 3)
    assert await queue.fetch_result(later.job_id, timeout=10) == 5
    assert await cancel_job(job.job_id, **target) is False


async def test_cancelling_a_running_process_job_kills_its_child(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    target: dict[str, str],
    tmp_path: Path,
) -> None:
    sup = await start_supervisor(executor="process", concurrency=1)
    started = tmp_path / "started"
    job = await queue.enqueue(jobs.sleep_marked, str(started), 30)
    await _listed_as_running(nc, namespace, sup.worker_id, job.job_id)
    child = int(started.read_text())
    assert not _gone(child)

    assert await cancel_job(job.job_id, **target) is True
    await _wait_stopped(sup, job.job_id)
    assert await _exits(child), "the child running the cancelled job is still alive"
    status = await fetch_job_status(job.job_id, **target)
    assert (status.status, status.error, status.attempt) == ("cancelled", "cancelled", 1)
    assert (sup.counters.processed, sup.counters.failed, sup.counters.retried) == (0, 0, 0)
    assert await _drained(nc, namespace) == (0, 0, 0)

    later = await queue.enqueue(jobs.pid)  # on the one slot's replacement child
    assert await queue.fetch_result(later.job_id, timeout=20) not in (child, None)
    assert sup.fatal is None


async def test_cancel_of_a_finished_or_unknown_job_is_false(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str]
) -> None:
    await start_supervisor()
    job = await queue.enqueue(jobs.add, 2, 2)
    assert await queue.fetch_result(job.job_id, timeout=10) == 4
    assert await cancel_job(job.job_id, **target) is False
    assert (await fetch_job_status(job.job_id, **target)).status == "finished"
    assert await queue.fetch_result(job.job_id) == 4
    assert await cancel_job("no-such-job", **target) is False
    with pytest.raises(JobNotFound):
        await fetch_job_status("no-such-job", **target)


# -- dependencies -----------------------------------------------------------------------


async def test_a_chain_runs_in_order(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    await start_supervisor()
    a = await queue.enqueue(jobs.stamp, str(log), "A", 0.05)
    b = await queue.enqueue(jobs.stamp, str(log), "B", 0.05, depends_on=a)
    c = await queue.enqueue(jobs.stamp, str(log), "C", depends_on=b.job_id)
    assert await queue.fetch_result(c.job_id, timeout=15) == "C"
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["A", "B", "C"]
    stamps = _stamps(log)
    assert stamps["B"][0] >= stamps["A"][1]
    assert stamps["C"][0] >= stamps["B"][1]


async def test_a_diamond_under_two_supervisors(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    """B and C wait for A, D for both: whichever supervisor finishes the last of B and C
    releases D, and D starts only once both have finished."""
    log = tmp_path / "log"
    first = await start_supervisor(concurrency=2)
    second = await start_supervisor(concurrency=2)
    a = await queue.enqueue(jobs.stamp, str(log), "A", 0.2)
    b = await queue.enqueue(jobs.stamp, str(log), "B", 0.2, depends_on=a)
    c = await queue.enqueue(jobs.stamp, str(log), "C", 0.3, depends_on=[a])
    d = await queue.enqueue(jobs.stamp, str(log), "D", 0.2, depends_on=[b, c.job_id])
    assert await queue.fetch_result(d.job_id, timeout=15) == "D"
    stamps = _stamps(log)
    assert set(stamps) == {"A", "B", "C", "D"}
    assert min(stamps["B"][0], stamps["C"][0]) >= stamps["A"][1]
    assert stamps["D"][0] >= max(stamps["B"][1], stamps["C"][1])
    both = [
        asyncio.create_task(sup.wait_until(lambda _: _processed(first, second) >= 4))
        for sup in (first, second)
    ]
    done, pending = await asyncio.wait(both, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "the counters never reached 4"
    assert _processed(first, second) == 4


async def test_a_dependency_finished_before_the_dependent_was_enqueued_counts(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str]
) -> None:
    await start_supervisor()
    first = await queue.enqueue(jobs.add, 1, 1)
    assert await queue.fetch_result(first.job_id, timeout=10) == 2
    then = await queue.enqueue(jobs.add, 2, 2, depends_on=first)
    assert await queue.fetch_result(then.job_id, timeout=10) == 4
    assert (await fetch_job_status(then.job_id, **target)).status == "finished"


async def test_waiters_of_a_job_settled_while_no_supervisor_watched_are_released(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str]
) -> None:
    """A supervisor stored a job's result and died before releasing its dependents:
    the next supervisor's dependency watch finds the waiter in its replay, reads the
    record, and releases it."""
    first = await queue.enqueue(jobs.add, 1, 1)
    then = await queue.enqueue(jobs.add, 2, 2, depends_on=first)
    assert (await fetch_job_status(then.job_id, **target)).waiting_for == (first.job_id,)
    client, layout = await queue.connection(), queue.layout
    await store_result(
        client, layout, ResultRecord(first.job_id, "finished", "json", time.time()), 60
    )
    await purge_subject(client, layout.stream, layout.any_queue_subject(first.job_id))

    await start_supervisor()
    assert await queue.fetch_result(then.job_id, timeout=10) == 4


async def test_a_dependency_that_fails_for_good_cancels_the_chain_after_it(
    queue: Queue,
    start_supervisor: StartSupervisor,
    target: dict[str, str],
    tmp_path: Path,
) -> None:
    a = await queue.enqueue(jobs.fail, "broken", max_retries=1)
    b = await queue.enqueue(jobs.record_run, str(tmp_path / "b"), depends_on=a)
    c = await queue.enqueue(jobs.record_run, str(tmp_path / "c"), depends_on=b)
    await start_supervisor()
    with pytest.raises(JobFailed, match="ValueError: broken"):
        await queue.fetch_result(a.job_id, timeout=10)
    # Wait for both final records; as_completed hands back whatever fetch_result raises.
    ids = [b.job_id, c.job_id]
    settled = {job_id: value async for job_id, value in queue.as_completed(ids, timeout=10)}
    assert set(settled) == {b.job_id, c.job_id}

    b_status = await fetch_job_status(b.job_id, **target)
    assert (b_status.status, b_status.attempt) == ("cancelled", 0)
    assert b_status.error == f"dependency {a.job_id} failed: ValueError: broken"
    c_status = await fetch_job_status(c.job_id, **target)
    assert c_status.status == "cancelled"
    assert c_status.error is not None
    assert f"dependency {b.job_id} cancelled" in c_status.error
    assert a.job_id in c_status.error, "the reason does not name the failed job"
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "c").exists()

    # A cancelled job has no value: fetch_result raises JobFailed with the reason.
    for job, status in ((b, b_status), (c, c_status)):
        assert isinstance(settled[job.job_id], JobFailed), repr(settled[job.job_id])
        with pytest.raises(JobFailed) as info:
            await queue.fetch_result(job.job_id)
        assert info.value.error == status.error
        with pytest.raises(JobFailed):
            await queue.fetch_result(job.job_id, timeout=5)


async def test_cancelling_a_held_job_cancels_its_dependents(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    target: dict[str, str],
    tmp_path: Path,
) -> None:
    a = await queue.enqueue(jobs.add, 1, 1)
    b = await queue.enqueue(jobs.record_run, str(tmp_path / "b"), depends_on=a)
    c = await queue.enqueue(jobs.record_run, str(tmp_path / "c"), depends_on=b)
    assert await cancel_job(b.job_id, **target) is True
    b_status = await fetch_job_status(b.job_id, **target)
    assert (b_status.status, b_status.error) == ("cancelled", "cancelled")
    c_status = await fetch_job_status(c.job_id, **target)
    assert (c_status.status, c_status.error) == (
        "cancelled",
        f"dependency {b.job_id} cancelled: cancelled",
    )
    assert await cancel_job(c.job_id, **target) is False

    # A still runs; once it ends, its cancelled waiter is not released.
    await start_supervisor()
    assert await queue.fetch_result(a.job_id, timeout=10) == 2
    await _no_waiters_on(nc, namespace, a.job_id)
    assert await _drained(nc, namespace) == (0, 0, 0)
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "c").exists()
    assert (await fetch_job_status(b.job_id, **target)).status == "cancelled"


async def test_depends_on_an_unknown_job_is_refused(
    queue: Queue, nc: Any, namespace: str, target: dict[str, str]
) -> None:
    with pytest.raises(ConfigurationError, match="depends on no-such-job, which is unknown"):
        await queue.enqueue(jobs.noop, depends_on="no-such-job", job_id="orphan")
    with pytest.raises(JobNotFound):
        await fetch_job_status("orphan", **target)
    kv = await nc.jetstream().key_value(Layout(namespace).deps_bucket)
    assert (await kv.status()).values == 0, "something was held or registered"


async def test_dependents_enqueued_while_their_dependency_runs_each_run_once(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    """The dependency ends before, during or after the dependent is held: whichever side
    sees it end releases the dependent, and no dependent is lost or run twice."""
    pairs = 20
    sup = await start_supervisor(concurrency=8)
    dependents = []
    for i in range(pairs):
        dep = await queue.enqueue(jobs.async_sleep, (i % 5) * 0.005)
        dependents.append(
            await queue.enqueue(jobs.record_run, str(tmp_path / f"run{i}"), depends_on=dep)
        )
    results = await queue.fetch_results([j.job_id for j in dependents], timeout=20)
    assert results == {j.job_id: 1 for j in dependents}
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 2 * pairs), 10)
    assert await _drained(nc, namespace) == (0, 0, 0)
    assert (sup.counters.processed, sup.counters.failed) == (2 * pairs, 0)
    for i in range(pairs):
        assert (tmp_path / f"run{i}").read_text() == "run\n"
