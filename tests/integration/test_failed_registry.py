"""The failed-job registry on a real server: list, get, requeue and purge failed jobs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from naq import (
    ConfigurationError,
    JobFailed,
    JobNotFound,
    Queue,
    Settings,
    close_sync_connections,
)
from naq.executors.registry import load_executor
from naq.job import Job
from naq.producer.failed import (
    get_failed,
    get_failed_sync,
    list_failed,
    list_failed_sync,
    purge_failed,
    purge_failed_sync,
    requeue_failed,
    requeue_failed_sync,
)
from naq.queue import fetch_job_result
from naq.supervisor import Supervisor
from naq.transport.names import Layout
from naq.wire import decode_job
from tests import jobs
from tests.conftest import StartSupervisor, run_until_ready


@pytest.fixture
def target(nats_url: str, namespace: str) -> dict[str, str]:
    """The registry functions' connection arguments for this test's namespace."""
    return {"nats_url": nats_url, "namespace": namespace}


async def _fail(queue: Queue, sup: Supervisor, func: Any, *args: Any, **options: Any) -> Job:
    """Enqueue a job that fails for good; return once its failed entry is stored.

    A failure is counted after its entry is in the failed stream, so waiting on the
    counter (not on the result, which is stored first) makes the entry visible.
    """
    before = sup.counters.failed
    job = await queue.enqueue(func, *args, **options)
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), 10)
    return job


@contextlib.asynccontextmanager
async def _supervisor(settings: Settings, queues: list[str]) -> AsyncIterator[Supervisor]:
    """A supervisor the test can stop midway, and know it has stopped."""
    sup = Supervisor(settings, load_executor("asyncio")(4, settings), queues)
    task = await run_until_ready(sup)
    try:
        yield sup
    finally:
        sup.request_stop()
        await asyncio.wait_for(task, 15)


async def test_a_failed_job_is_listed_with_why_it_failed(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str]
) -> None:
    sup = await start_supervisor()
    started = time.time()
    job = await _fail(queue, sup, jobs.fail, "boom", max_retries=1)

    [entry] = await list_failed(**target)
    assert entry.job_id == job.job_id
    assert entry.function == "tests.jobs:fail"
    assert entry.queue == "default"
    assert "boom" in entry.reason
    assert entry.traceback is not None
    assert "raise ValueError(message)" in entry.traceback
    assert entry.attempts == 2
    assert entry.worker == sup.worker_id
    assert started <= entry.failed_at <= time.time()
    assert entry.seq >= 1
    meta, _ = decode_job(entry.body)  # the whole job message, as enqueued
    assert (meta.job_id, meta.function) == (job.job_id, job.function)

    assert await get_failed(job.job_id, **target) == entry
    with pytest.raises(JobNotFound, match="no-such-job"):
        await get_failed("no-such-job", **target)
    assert await list_failed(queue="other", **target) == []


async def test_listing_is_oldest_first_by_queue_and_limit(
    settings: Settings,
    start_supervisor: StartSupervisor,
    target: dict[str, str],
    nc: Any,
    namespace: str,
) -> None:
    sup = await start_supervisor(["a", "b"])
    async with Queue("a", settings=settings) as qa, Queue("b", settings=settings) as qb:
        first = await _fail(qa, sup, jobs.fail, "one")
        second = await _fail(qb, sup, jobs.fail, "two")
        third = await _fail(qa, sup, jobs.fail, "three")

    listed = await list_failed(**target)
    assert [e.job_id for e in listed] == [first.job_id, second.job_id, third.job_id]
    assert [e.queue for e in listed] == ["a", "b", "a"]
    assert [e.job_id for e in await list_failed(limit=2, **target)] == [
        first.job_id,
        second.job_id,
    ]
    assert [e.job_id for e in await list_failed("a", **target)] == [first.job_id, third.job_id]
    assert [e.job_id for e in await list_failed("a", limit=1, **target)] == [first.job_id]
    assert await list_failed(limit=0, **target) == []
    # Each scan's consumer is gone with it, also after a listing cut short by its limit.
    info = await nc.jetstream().stream_info(Layout(namespace).failed_stream)
    assert info.state.consumer_count == 0
    with pytest.raises(ConfigurationError, match="limit"):
        await list_failed(limit=-1, **target)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        await list_failed("a.b", **target)


async def test_a_requeued_job_runs_again_under_its_id(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str], tmp_path: Path
) -> None:
    sup = await start_supervisor()
    job = await _fail(queue, sup, jobs.flaky, str(tmp_path / "tries"), 1)
    with pytest.raises(JobFailed, match="failure 1 of 1"):
        await queue.fetch_result(job.job_id)

    # Within the duplicate window: a republish under the bare job id would be dropped.
    assert await requeue_failed([job.job_id], **target) == [job.job_id]
    assert await queue.fetch_result(job.job_id, timeout=10) == 2
    assert await list_failed(**target) == []
    with pytest.raises(JobNotFound):
        await get_failed(job.job_id, **target)
    with pytest.raises(JobNotFound, match=job.job_id):
        await requeue_failed([job.job_id], **target)


async def test_a_job_sent_again_after_it_failed_keeps_its_record_and_is_requeued_once(
    queue: Queue,
    start_supervisor: StartSupervisor,
    target: dict[str, str],
    tmp_path: Path,
    nc: Any,
    namespace: str,
) -> None:
    """A final record is never overwritten: the same job sent again (as a second
    producer would) after it failed for good is acked with its failed record kept and
    no second entry; requeueing it, which removes that record first, runs it again."""
    sup = await start_supervisor()
    tries = tmp_path / "tries"
    job = await _fail(queue, sup, jobs.flaky, str(tries), 2)
    first = await get_failed(job.job_id, **target)
    layout = Layout(namespace)
    acks = await nc.subscribe(f"$JS.ACK.{layout.stream}.>")
    await nc.jetstream().publish(
        layout.job_subject("default", job.job_id),
        first.body,
        headers={"Nats-Msg-Id": "second-send"},
    )
    async with asyncio.timeout(10):
        while (await acks.next_msg(timeout=10)).data not in (b"", b"+ACK"):
            pass
    entries = await list_failed(**target)
    assert [e.job_id for e in entries] == [job.job_id]
    assert await get_failed(job.job_id, **target) == first
    with pytest.raises(JobFailed, match="failure 1 of 2"):
        await queue.fetch_result(job.job_id, timeout=5)

    assert await requeue_failed(job.job_id, **target) == [job.job_id]  # one id as a string
    assert await queue.fetch_result(job.job_id, timeout=10) == 3
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 1), 10)
    assert sup.counters.processed == 1
    assert tries.read_text().count("try") == 3
    assert await list_failed(**target) == []


async def test_requeue_all(
    settings: Settings, start_supervisor: StartSupervisor, target: dict[str, str], tmp_path: Path
) -> None:
    sup = await start_supervisor(["a", "b"])
    async with Queue("a", settings=settings) as qa, Queue("b", settings=settings) as qb:
        one = await _fail(qa, sup, jobs.flaky, str(tmp_path / "one"), 1)
        two = await _fail(qb, sup, jobs.flaky, str(tmp_path / "two"), 1)
        assert await requeue_failed(all=True, **target) == [one.job_id, two.job_id]
        results = await qa.fetch_results([one.job_id, two.job_id], timeout=10)
    assert results == {one.job_id: 2, two.job_id: 2}
    assert await list_failed(**target) == []
    assert await requeue_failed(all=True, **target) == []


async def test_requeue_checks_every_id_before_changing_anything(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str]
) -> None:
    sup = await start_supervisor()
    job = await _fail(queue, sup, jobs.fail)
    with pytest.raises(JobNotFound, match="unknown-1, unknown-2"):
        await requeue_failed([job.job_id, "unknown-1", "unknown-2"], **target)
    assert [e.job_id for e in await list_failed(**target)] == [job.job_id]
    with pytest.raises(JobFailed):  # and its result still tells of the failure
        await queue.fetch_result(job.job_id)

    with pytest.raises(ConfigurationError, match="not both"):
        await requeue_failed([job.job_id], all=True, **target)
    with pytest.raises(ConfigurationError, match="all=True"):
        await requeue_failed(**target)
    assert await requeue_failed([], **target) == []


async def test_an_unreadable_entry_is_listed_and_never_requeued(
    queue: Queue,
    start_supervisor: StartSupervisor,
    target: dict[str, str],
    nc: Any,
    namespace: str,
) -> None:
    sup = await start_supervisor()
    job = await _fail(queue, sup, jobs.fail)
    before = sup.counters.failed
    await nc.jetstream().publish(Layout(namespace).job_subject("default", "junk"), b"\x00garbage")
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), 10)

    readable, junk = await list_failed(**target)
    assert readable.job_id == job.job_id
    assert (junk.job_id, junk.function, junk.queue) == (None, None, "default")
    assert "not a naq message" in junk.reason
    assert junk.body == b"\x00garbage"
    assert junk.ref == f"#{junk.seq}"

    with pytest.raises(ConfigurationError, match=f"#{junk.seq} \\(not a naq message"):
        await requeue_failed(all=True, **target)
    assert await list_failed(**target) == [readable, junk], "a refused requeue changed things"
    assert await requeue_failed([job.job_id], **target) == [job.job_id]  # by id, it goes
    with pytest.raises(JobFailed):  # tests.jobs.fail fails again
        await queue.fetch_result(job.job_id, timeout=10)


async def test_purge_removes_one_queue_or_all(
    settings: Settings, start_supervisor: StartSupervisor, target: dict[str, str]
) -> None:
    sup = await start_supervisor(["a", "b"])
    async with Queue("a", settings=settings) as qa, Queue("b", settings=settings) as qb:
        for _ in range(2):
            await _fail(qa, sup, jobs.fail)
        kept = await _fail(qb, sup, jobs.fail)
        assert await purge_failed("a", **target) == 2
        assert [e.job_id for e in await list_failed(**target)] == [kept.job_id]
        assert await purge_failed(**target) == 1
        assert await list_failed(**target) == []
        assert await purge_failed(**target) == 0
        with pytest.raises(JobFailed):  # the jobs did fail: their results still say so
            await qb.fetch_result(kept.job_id)


async def test_a_waiter_after_the_requeue_gets_the_new_outcome(
    settings: Settings, target: dict[str, str], tmp_path: Path
) -> None:
    """The requeue clears the stored failure, so a caller waiting for the rerun is not
    answered with the old one. No supervisor serves the queue between the requeue and
    the rerun, so the waiter is certainly waiting before the new result exists."""
    async with Queue("later", settings=settings) as later:
        async with _supervisor(settings, ["later"]) as sup:
            job = await _fail(later, sup, jobs.flaky, str(tmp_path / "tries"), 1)
        await requeue_failed([job.job_id], **target)
        with pytest.raises(JobNotFound):  # no old failure: not finished yet
            await fetch_job_result(job.job_id, **target)
        waiter = asyncio.create_task(fetch_job_result(job.job_id, timeout=20, **target))
        async with _supervisor(settings, ["later"]):
            assert await waiter == 2


async def test_sync_twins(
    queue: Queue, start_supervisor: StartSupervisor, target: dict[str, str], tmp_path: Path
) -> None:
    """Called from a worker thread: the sync API runs on its own loop thread."""
    sup = await start_supervisor()
    job = await _fail(queue, sup, jobs.flaky, str(tmp_path / "tries"), 1)
    [entry] = await asyncio.to_thread(list_failed_sync, **target)
    assert entry.job_id == job.job_id
    assert await asyncio.to_thread(get_failed_sync, job.job_id, **target) == entry
    requeued = await asyncio.to_thread(requeue_failed_sync, [job.job_id], **target)
    assert requeued == [job.job_id]
    assert await queue.fetch_result(job.job_id, timeout=10) == 2
    await _fail(queue, sup, jobs.fail)
    assert await asyncio.to_thread(purge_failed_sync, **target) == 1
    await asyncio.to_thread(close_sync_connections)


async def test_a_requeue_interrupted_before_its_cleanup_runs_the_job_once(
    settings: Settings, target: dict[str, str], nc: Any, namespace: str
) -> None:
    """The republish's message id names the failed entry: finishing an interrupted
    requeue (job published, entry not yet removed) does not queue the job twice."""
    from naq.state.failed import _requeue
    from naq.transport.pool import acquire

    layout = Layout(namespace)
    async with Queue("later", settings=settings) as later:
        async with _supervisor(settings, ["later"]) as sup:
            job = await _fail(later, sup, jobs.fail)
        entry = await get_failed(job.job_id, **target)
        client = await acquire(settings, sticky=True)
        await _requeue(client, layout, [(job.job_id, entry)], {job.job_id: []})
        assert await list_failed(**target) == [entry]  # published, not cleaned up
        assert await requeue_failed([job.job_id], **target) == [job.job_id]
    info = await nc.jetstream().stream_info(layout.stream)
    assert info.state.messages == 1
    assert await list_failed(**target) == []
