"""Deliveries counted exactly: a message beyond the free slots is handed back at once
(never given to a full executor), and two deliveries of one job id in flight at once
each keep their own lease and cancellation."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from naq import Queue
from naq.state.record import ResultRecord, RunFacts, decode_result, interrupted
from naq.state.store import store_result
from naq.supervisor.settle import Delivery
from naq.transport.names import Layout
from naq.wire import decode_job
from tests import jobs
from tests.conftest import StartSupervisor
from tests.proxy import Proxy


async def _record_until(
    nc: Any, namespace: str, job_id: str, predicate: Callable[[ResultRecord], bool], timeout: float
) -> ResultRecord:
    """The first stored record of ``job_id`` that satisfies ``predicate``, through a
    KV watch (the current value first, then every update)."""
    kv = await nc.jetstream().key_value(Layout(namespace).results_bucket)
    watcher = await kv.watch(job_id)
    seen: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                entry = await watcher.updates(timeout=timeout)
                if entry is None or not entry.value:
                    continue
                record = decode_result(entry.value)
                if predicate(record):
                    return record
                seen.append(record.status)
    except TimeoutError:
        raise AssertionError(f"job {job_id}: no such record in {timeout}s; saw {seen}") from None
    finally:
        await watcher.stop()


async def _started(path: Path) -> None:
    """Until a job marks ``path`` (written by the job itself, in another process: a
    short bounded poll)."""
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)


async def test_a_message_beyond_the_free_slots_is_handed_back_at_once_and_runs(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pull request left open on the server across a reconnect delivers more jobs
    than the supervisor has slots. Made here by opening a second request on the
    supervisor's own inbox while its one slot is busy."""
    caplog.set_level(logging.WARNING)
    # No look-ahead: a busy slot then leaves the supervisor asking for nothing.
    sup = await start_supervisor(executor="process", concurrency=1, ack_wait=60.0, lookahead=0)
    gate, started = tmp_path / "gate", tmp_path / "started"
    busy = await queue.enqueue(jobs.wait_for_file, str(gate), str(started), 30.0)
    await _started(started)  # the only slot is busy: the supervisor asks for nothing

    inbox = sup._pullers["default"]._inbox
    request = {"batch": 1, "expires": int(10e9)}
    await nc.publish(Layout(namespace).pull_subject("default"), json.dumps(request).encode(), inbox)
    await nc.flush()
    extra = await queue.enqueue(jobs.add, 1, 2)

    # Handed back at once, as a run that did not happen (not a crash, not a run).
    handed = await _record_until(nc, namespace, extra.job_id, lambda r: True, 10)
    assert (handed.status, handed.interruptions) == ("interrupted", 1)
    assert handed.error == "more jobs arrived than free slots"

    gate.touch()
    assert isinstance(await queue.fetch_result(busy.job_id, timeout=20), int)  # its pid
    # It runs as soon as the slot frees, long before ack_wait (60 s) would bring it back.
    assert await queue.fetch_result(extra.job_id, timeout=20) == 3
    done = await _record_until(nc, namespace, extra.job_id, lambda r: r.final, 5)
    assert (done.attempt, done.crashes, done.interruptions) == (1, 0, 1)
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 2), 10)
    assert (sup.counters.processed, sup.counters.failed) == (2, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def _delivered_twice(queue: Queue, nc: Any, namespace: str, func: Any, *args: Any) -> str:
    """A job enqueued once and its message published a second time under another
    message id: two deliveries of one job id, as a redelivery overlapping its first
    run would make them."""
    job = await queue.enqueue(func, *args)
    layout = Layout(namespace)
    js = nc.jetstream()
    subject = layout.job_subject("default", job.job_id)
    first = await js.get_last_msg(layout.stream, subject)
    await js.publish(subject, first.data, headers={"Nats-Msg-Id": f"{job.job_id}-again"})
    return job.job_id


async def _both_running(sup: Any, job_id: str) -> None:
    """Until two deliveries of ``job_id`` run at once (job starts are not events the
    test can await: a short bounded poll)."""
    deadline = time.monotonic() + 20
    while sup.running_jobs() != [job_id, job_id]:
        assert time.monotonic() < deadline, f"running: {sup.running_jobs()}"
        await asyncio.sleep(0.01)


async def test_two_deliveries_of_one_job_each_keep_their_lease(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    """Both run longer than ack_wait: each lives only if its own lease is renewed
    (keyed by job id, the second delivery replaced the first's entry, and the first
    run's end removed the second's)."""
    # A third slot keeps a pull request open: a lapsed lease shows as a redelivery.
    sup = await start_supervisor(executor="thread", concurrency=3, ack_wait=1.0)
    await _delivered_twice(queue, nc, namespace, jobs.sleep, 3.5)  # both start at once
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 2), 20)
    consumer = await nc.jetstream().consumer_info(
        Layout(namespace).stream, Layout(namespace).consumer("default")
    )
    # A lapsed lease brings a running delivery back: taken for a dead worker, it fails.
    assert (sup.counters.processed, sup.counters.failed) == (2, 0)
    assert consumer.num_redelivered == 0
    assert sup.running_jobs() == []


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_a_cancel_stops_both_deliveries_of_one_job(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    tmp_path: Path,
    executor: str,
) -> None:
    sup = await start_supervisor(executor=executor, concurrency=2)
    gate = tmp_path / "gate"  # never opened: only a cancellation ends these runs
    job_id = await _delivered_twice(queue, nc, namespace, jobs.wait_for_file, str(gate), None, 60)
    await _both_running(sup, job_id)
    assert await queue.cancel(job_id) is True
    await asyncio.wait_for(sup.wait_until(lambda _: sup.running_jobs() == []), 10)
    record = await _record_until(nc, namespace, job_id, lambda r: r.final, 5)
    assert record.status == "cancelled"


async def _waiting_requests(nc: Any, namespace: str, count: int) -> int:
    """The consumer's open pull requests, once there are ``count`` (or 10 s passed):
    the server has no event for it, a short bounded poll."""
    layout = Layout(namespace)
    deadline = time.monotonic() + 10
    while True:
        info = await nc.jetstream().consumer_info(layout.stream, layout.consumer("default"))
        if info.num_waiting >= count or time.monotonic() > deadline:
            return int(info.num_waiting)
        await asyncio.sleep(0.02)


async def test_a_reconnect_blip_delivers_no_more_jobs_than_slots(
    queue: Queue,
    nats_server: Any,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The blip for real: the supervisor's connection is cut and comes back at once.
    Its old pull request stays open on the server beside the one it makes on
    reconnecting, so jobs for twice its slots arrive."""
    caplog.set_level(logging.INFO)
    proxy = await Proxy(nats_server.port).start()
    reconnected = asyncio.Event()

    class Heard(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "reconnected to NATS" in record.getMessage():
                reconnected.set()

    heard = Heard()
    logging.getLogger("naq.supervisor.supervisor").addHandler(heard)
    try:
        sup = await start_supervisor(  # no look-ahead: the credits are the two slots
            executor="process", concurrency=2, pull_expires=30.0, nats_url=proxy.url, lookahead=0
        )
        assert await _waiting_requests(nc, namespace, 1) == 1
        await proxy.cut()
        await proxy.start()
        await asyncio.wait_for(reconnected.wait(), 20)
        assert await _waiting_requests(nc, namespace, 2) == 2, "the old request is gone"

        gate = tmp_path / "gate"
        started = [tmp_path / f"started-{i}" for i in range(4)]
        four = [await queue.enqueue(jobs.wait_for_file, str(gate), str(s), 30.0) for s in started]
        deadline = time.monotonic() + 20  # two run (jobs start in children: a short poll)
        while sum(s.exists() for s in started) < 2:
            assert time.monotonic() < deadline, "two jobs never started"
            await asyncio.sleep(0.01)
        others = [job for job, s in zip(four, started, strict=True) if not s.exists()]
        assert len(others) == 2, "more jobs ran than the supervisor has slots"
        for job in others:  # handed back at once, not counted as runs
            record = await _record_until(nc, namespace, job.job_id, lambda r: True, 10)
            assert (record.status, record.error) == (
                "interrupted",
                "more jobs arrived than free slots",
            )
        gate.touch()
        results = await queue.fetch_results([j.job_id for j in four], timeout=30)
        assert len(results) == 4
        await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 4), 10)
        assert (sup.counters.processed, sup.counters.failed) == (4, 0)
        # No job crashed in the executor (the blip itself may make other tasks restart).
        ours = ("naq.supervisor.jobs", "naq.executors.process")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name in ours]
        assert not errors, caplog.text
    finally:
        logging.getLogger("naq.supervisor.supervisor").removeHandler(heard)


async def test_reading_a_redeliverys_history_twice_counts_no_crash(
    start_supervisor: StartSupervisor,
) -> None:
    """A redelivery's history is read when it starts and again when it is handed back
    (``late``, a drain): both reads must agree. The second once took the countable
    attempt the first had set for the delivery count, saw no record closing the
    delivery before, and counted a crash that never was, until a job handed back a
    few times was dead-lettered as one that kept killing its worker."""
    sup = await start_supervisor()
    client = sup.jobs._client
    assert client is not None
    layout = Layout(sup.settings.namespace)
    _, outgoing = Queue(settings=sup.settings).prepare(jobs.add, (1, 1))
    meta, _ = decode_job(outgoing.payload)
    # Delivery 2 was handed back (its record closes it); this is delivery 3.
    before = interrupted(
        meta.job_id, RunFacts(queue="default", attempt=2, interruptions=1), "handed back"
    )
    assert before.ended_delivery() == 2
    await store_result(client, layout, before, 60)
    reply = f"$JS.ACK.{layout.stream}.{layout.consumer('default')}.3.7.7.1796130199204026499.0"
    message = Msg(_client=client.nc, subject=outgoing.subject, reply=reply, data=outgoing.payload)
    delivery = Delivery(message, "default", meta, 3)
    for _ in range(2):
        record, previous_ended = await sup.jobs._history(delivery)
        assert record == before
        assert previous_ended
        assert (delivery.attempt, delivery.crashes, delivery.interruptions) == (2, 0, 1)
