"""The public read API against a real server: queues and their counts, live workers,
the scheduler leader, with the ``*_sync`` twins.

Counts that depend on a consumer's state are made deterministic by playing the
worker by hand (pull, nak, pull again) on the queue's own consumer, and an open
pull request is registered behind naq's flush barrier before it is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from naq import (
    ConfigurationError,
    JobFailed,
    JobNotFound,
    LeaderInfo,
    LiveWorker,
    NaqError,
    Overview,
    Queue,
    QueueInfo,
    QueueNotFound,
    Settings,
    close_connections,
    close_sync_connections,
    current_leader,
    current_leader_sync,
    list_queues,
    list_queues_sync,
    list_workers,
    list_workers_sync,
    overview,
    overview_sync,
    queue_info,
    queue_info_sync,
    queues_info,
)
from naq.executors.registry import load_executor
from naq.scheduler import Scheduler
from naq.supervisor import Supervisor
from naq.transport.connect import flush
from naq.transport.declare import ensure_consumer
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import first_json, run_until_ready

UNREACHABLE = "nats://127.0.0.1:1"
"""Nothing listens there: a call that tried to connect would fail with NaqConnectionError."""


@pytest.fixture
async def target(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    """The read API's connection arguments; its connections are closed afterwards."""
    yield {"nats_url": settings.nats_url, "namespace": settings.namespace}
    await close_connections()
    await asyncio.to_thread(close_sync_connections)


async def test_a_queue_nobody_served_yet(settings: Settings, target: dict[str, Any]) -> None:
    """Jobs enqueued before any supervisor: no consumer yet, so the queue is not
    listed, but asked by name its waiting and delayed jobs are counted from the stream."""
    async with (
        Queue("early", settings=settings) as early,
        Queue("later", settings=settings) as later,
    ):
        for i in range(3):
            await early.enqueue(jobs.add, i, i)
        await early.enqueue_in(3600, jobs.add, 1, 1)
        await later.enqueue_in(3600, jobs.add, 2, 2)
        await later.enqueue_in(3600, jobs.add, 3, 3)

    assert await list_queues(**target) == []
    assert await queue_info("early", **target) == QueueInfo(
        "early", waiting=3, running=0, redelivered=0, failed=0, scheduled=1, consumers=0
    )
    # Known by its delayed jobs alone.
    assert await queue_info("later", **target) == QueueInfo("later", 0, 0, 0, 0, 2, 0)
    assert await queues_info(["later", "early"], **target) == [
        await queue_info("later", **target),
        await queue_info("early", **target),
    ]


async def test_waiting_running_redelivered_and_open_requests(
    settings: Settings, target: dict[str, Any], nc: NATS
) -> None:
    """The test is the worker: it pulls a job (running), naks it and pulls it again
    (redelivered), and leaves a pull request open on an idle queue (consumers)."""
    layout = Layout(settings.namespace)
    js = nc.jetstream()
    async with Queue("work", settings=settings) as work, Queue("idle", settings=settings) as idle:
        for i in range(3):
            await work.enqueue(jobs.add, i, i)
        await work.enqueue_in(3600, jobs.add, 9, 9)
        await idle.connection()  # declares the namespace's streams
    for name in ("work", "idle"):
        await ensure_consumer(js, layout, name, settings)

    assert await list_queues(**target) == ["idle", "work"]
    assert await queue_info("work", **target) == QueueInfo("work", 3, 0, 0, 0, 1, 0)

    puller = await js.pull_subscribe_bind(layout.consumer("work"), layout.stream)
    [first] = await puller.fetch(1, timeout=5)
    assert await queue_info("work", **target) == QueueInfo("work", 2, 1, 0, 0, 1, 0)

    await nc.request(first.reply, b"-NAK", timeout=5)  # a nak the server confirms
    [again] = await puller.fetch(1, timeout=5)  # redeliveries come before new messages
    assert again.metadata.num_delivered == 2
    assert again.subject == first.subject
    assert await queue_info("work", **target) == QueueInfo("work", 2, 1, 1, 0, 1, 0)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    request = {"batch": 1, "expires": 30 * 10**9}
    await nc.publish(layout.pull_subject("idle"), json.dumps(request).encode(), reply=inbox)
    await flush(nc)  # the server holds the request once this returns
    assert await queue_info("idle", **target) == QueueInfo("idle", 0, 0, 0, 0, 0, 1)
    await sub.unsubscribe()

    await again.ack_sync()
    assert [info.name for info in await queues_info(**target)] == ["idle", "work"]
    assert (await queue_info("work", **target)).running == 0
    assert await asyncio.to_thread(list_queues_sync, **target) == ["idle", "work"]
    assert await asyncio.to_thread(queue_info_sync, "work", **target) == QueueInfo(
        "work", 2, 0, 0, 0, 1, 0
    )


async def test_failed_jobs_are_counted_per_queue(
    settings: Settings, target: dict[str, Any], nc: NATS
) -> None:
    """A job that fails for good on a real supervisor counts on its own queue only."""
    layout = Layout(settings.namespace)
    conf = settings.replace(executor="asyncio", concurrency=2)
    sup = Supervisor(conf, load_executor("asyncio")(2, conf), ["broken", "fine"])
    task = await run_until_ready(sup)
    stored = await nc.jetstream().subscribe(layout.failed_subject("broken"), ordered_consumer=True)
    try:
        async with Queue("broken", settings=settings) as broken:
            job = await broken.enqueue(jobs.fail, "boom", max_retries=0)
            with pytest.raises(JobFailed):
                await broken.fetch_result(job.job_id, timeout=10)
        await stored.next_msg(timeout=10)  # through a consumer: the entry is stored
    finally:
        await stored.unsubscribe()
        sup.request_stop()
        await asyncio.wait_for(task, 15)

    broken_info, fine_info = await queues_info(["broken", "fine"], **target)
    assert (broken_info.name, broken_info.failed, broken_info.waiting) == ("broken", 1, 0)
    assert fine_info == QueueInfo("fine", 0, 0, 0, 0, 0, 0)
    assert await list_queues(**target) == ["broken", "fine"]


async def test_unknown_and_bad_queue_names(target: dict[str, Any], namespace: str) -> None:
    with pytest.raises(QueueNotFound, match="no queue 'nope' in namespace"):
        await queue_info("nope", **target)
    with pytest.raises(QueueNotFound):
        await queues_info(["nope"], **target)
    assert issubclass(QueueNotFound, NaqError)
    assert issubclass(QueueNotFound, LookupError)
    assert not issubclass(QueueNotFound, JobNotFound)

    # Bad names fail before anything connects (nothing listens at UNREACHABLE).
    nowhere = {"nats_url": UNREACHABLE, "namespace": namespace}
    for bad in ("bad.name", "", "a b", "q*"):
        with pytest.raises(ConfigurationError, match="invalid queue name"):
            await queue_info(bad, **nowhere)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        await queues_info(["fine", "bad.name"], **nowhere)
    with pytest.raises(ConfigurationError, match="list of queue names"):
        await queues_info("default", **nowhere)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        await asyncio.to_thread(queue_info_sync, "bad.name", **nowhere)


async def test_workers_and_the_scheduler_leader(
    settings: Settings, target: dict[str, Any], nc: NATS
) -> None:
    """A supervisor and a scheduler, seen through both twins of each call; the leader
    reads as None before any scheduler leads and after the lease is released."""
    assert await current_leader(**target) is None  # the key was never written
    assert await asyncio.to_thread(current_leader_sync, **target) is None
    assert await list_workers(**target) == []

    conf = settings.replace(executor="thread", concurrency=3)
    sup = Supervisor(conf, load_executor("thread")(3, conf), ["alpha"])
    sup_task = await run_until_ready(sup)
    sched = Scheduler(settings, "only")
    sched_task = asyncio.create_task(sched.run())
    try:
        await asyncio.wait_for(sched.leading.wait(), 10)
        kv = await nc.jetstream().key_value(Layout(settings.namespace).workers_bucket)
        assert await first_json(kv, sup.worker_id, lambda r: True, 10) is not None
        assert await first_json(kv, sched.heartbeat_key, lambda r: r["leader"], 10) is not None

        for records in (
            await list_workers(**target),
            await asyncio.to_thread(list_workers_sync, **target),
        ):
            by_id = {record["id"]: record for record in records}
            assert set(by_id) == {sup.worker_id, sched.heartbeat_key}
            worker = by_id[sup.worker_id]
            assert (worker["executor"], worker["slots"]) == ("thread", 3)
            assert worker["queues"] == ["alpha"]
            assert by_id[sched.heartbeat_key]["role"] == "scheduler"

        for leader in (
            await current_leader(**target),
            await asyncio.to_thread(current_leader_sync, **target),
        ):
            assert leader is not None
            assert leader["id"] == sched.scheduler_id
            assert {"host", "pid", "since"} <= set(leader)
    finally:
        sched.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sched_task, 10)
        sup.request_stop()
        await asyncio.wait_for(sup_task, 15)

    assert await current_leader(**target) is None  # released: a delete marker
    assert await asyncio.to_thread(current_leader_sync, **target) is None


async def test_the_overview_is_the_queues_workers_and_leader_typed(
    settings: Settings, target: dict[str, Any], nc: NATS, namespace: str
) -> None:
    """One call for the whole screen (what ``naq info`` prints and a dashboard shows):
    the same queue counts as ``queues_info``, the heartbeats typed (supervisors
    first), the lease typed; the same through the ``_sync`` twin."""
    empty = await overview(**target)
    assert (empty.namespace, empty.queues, empty.workers, empty.leader) == (
        namespace,
        [],
        [],
        None,
    )

    conf = settings.replace(executor="thread", concurrency=3)
    sup = Supervisor(conf, load_executor("thread")(3, conf), ["alpha"])
    sup_task = await run_until_ready(sup)
    sched = Scheduler(settings, "only")
    sched_task = asyncio.create_task(sched.run())
    try:
        await asyncio.wait_for(sched.leading.wait(), 10)
        async with Queue("alpha", settings=settings) as queue:
            job = await queue.enqueue(jobs.fail, "boom", max_retries=0)
            with pytest.raises(JobFailed):
                await queue.fetch_result(job.job_id, timeout=10)
        kv = await nc.jetstream().key_value(Layout(namespace).workers_bucket)
        assert await first_json(kv, sup.worker_id, lambda r: r["failed"] == 1, 10) is not None
        assert await first_json(kv, sched.heartbeat_key, lambda r: r["leader"], 10) is not None

        for view in (await overview(**target), await asyncio.to_thread(overview_sync, **target)):
            assert isinstance(view, Overview)
            assert view.queues == await queues_info(**target)
            assert [(q.name, q.failed) for q in view.queues] == [("alpha", 1)]
            worker, scheduler = view.workers
            assert isinstance(worker, LiveWorker)
            assert (worker.id, worker.role, worker.pid) == (
                sup.worker_id,
                "supervisor",
                os.getpid(),
            )
            assert (worker.busy, worker.slots) == (0, 3)
            assert worker.rss > 0
            assert worker.heartbeat_age is not None
            assert worker.heartbeat_age >= 0
            assert worker.record["failed"] == 1  # the whole heartbeat record
            assert (scheduler.id, scheduler.role, scheduler.leader) == (
                sched.heartbeat_key,
                "scheduler",
                True,
            )
            assert isinstance(view.leader, LeaderInfo)
            assert view.leader.id == sched.scheduler_id
            assert view.leader.since is not None
            assert view.leader.since <= view.taken_at
        only = await overview(["alpha"], **target)
        assert [q.name for q in only.queues] == ["alpha"]
    finally:
        sched.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sched_task, 10)
        sup.request_stop()
        await asyncio.wait_for(sup_task, 15)

    with pytest.raises(QueueNotFound):
        await overview(["nope"], **target)
    nowhere = {"nats_url": UNREACHABLE, "namespace": namespace}  # checked before connecting
    with pytest.raises(ConfigurationError, match="list of queue names"):
        await overview("alpha", **nowhere)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        await overview(["bad.name"], **nowhere)
