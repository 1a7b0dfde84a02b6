"""Waiting for results: told the moment one lands, with nothing held on the server.

A wait used to hold a KV watch, so a consumer on the results stream; nats-server
2.15 allows 1,000 consumers per stream, and a stopped watch left its consumer for
five minutes. Now a wait is a core subscription on the result's key, with reads of
the key to find what was stored before it, or while its connection was down.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from naq.errors import ResultTimeout
from naq.executors.asyncio import AsyncioExecutor
from naq.queue import Queue
from naq.settings import Settings
from naq.state import store as results
from naq.state.record import ResultRecord, encode_result
from naq.supervisor import Supervisor
from naq.transport.connect import Client
from naq.transport.server import EmbeddedServer, free_port
from tests import jobs
from tests.conftest import StartSupervisor, run_until_ready, stop_all
from tests.proxy import Proxy

WAIT = 20.0


@pytest.fixture
def first_read(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once a wait has read the keys for the first time: it has subscribed before
    that read, so from then on it is waiting."""
    event = asyncio.Event()
    read_bodies = results._read_bodies

    async def reading(*args: Any) -> list[tuple[str, bytes]]:
        found = await read_bodies(*args)
        event.set()
        return found

    monkeypatch.setattr(results, "_read_bodies", reading)
    return event


async def _consumers(queue: Queue) -> int:
    client = await queue.connection()
    info = await client.js.stream_info(f"KV_{queue.layout.results_bucket}")
    return info.state.consumer_count


async def test_waiting_leaves_no_consumer(queue: Queue, start_supervisor: StartSupervisor) -> None:
    with pytest.raises(ResultTimeout):
        await queue.fetch_result("never-enqueued", timeout=0.05)
    with pytest.raises(ResultTimeout, match="2 of 2 job"):
        await queue.fetch_results(["never-1", "never-2"], timeout=0.05)
    await start_supervisor()
    job = await queue.enqueue(jobs.add, 1, 2)
    assert await queue.fetch_result(job.job_id, timeout=WAIT) == 3
    assert await _consumers(queue) == 0


async def test_more_concurrent_waits_than_a_stream_takes_consumers(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    """1,100 callers wait at once, each for its own job: more than the 1,000 consumers
    the server allows on the results stream."""
    enqueued = await queue.enqueue_many([(jobs.add, (i, i), {}) for i in range(1_100)])
    waits = [asyncio.create_task(queue.fetch_result(job.job_id, timeout=60)) for job in enqueued]
    await start_supervisor(concurrency=50)  # while they wait
    assert await asyncio.gather(*waits) == [2 * i for i in range(1_100)]


async def test_results_stored_before_and_during_a_wait_for_many(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    await start_supervisor()
    before = await queue.enqueue(jobs.add, 1, 1)
    assert await queue.fetch_result(before.job_id, timeout=WAIT) == 2
    failing = await queue.enqueue(jobs.fail, "boom", max_retries=0)
    later = await queue.enqueue(jobs.add, 2, 2)
    got = await queue.fetch_results([before.job_id, failing.job_id, later.job_id], timeout=WAIT)
    assert (got[before.job_id], got[later.job_id]) == (2, 4)
    assert "boom" in str(got[failing.job_id])


async def test_a_result_stored_while_the_waiter_was_cut_off_is_found(
    nats_server: EmbeddedServer,
    settings: Settings,
    start_supervisor: StartSupervisor,
    monkeypatch: pytest.MonkeyPatch,
    first_read: asyncio.Event,
) -> None:
    """The result's message goes out while the waiter's connection is down, so the
    waiter never hears it; its read of the key after reconnecting finds it (long
    before the periodic read, which this test puts out of reach)."""
    monkeypatch.setattr(results, "RECHECK", 1_000.0)
    proxy = await Proxy(nats_server.port).start()
    async with (
        Queue(settings=settings.replace(nats_url=proxy.url)) as waiter,
        Queue(settings=settings) as producer,
    ):
        job = await producer.enqueue(jobs.add, 20, 22)
        wait = asyncio.create_task(waiter.fetch_result(job.job_id, timeout=WAIT))
        await asyncio.wait_for(first_read.wait(), WAIT)
        await proxy.cut()
        sup = await start_supervisor()
        await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= 1), WAIT)
        assert not wait.done()
        await proxy.start()
        assert await wait == 42


async def test_a_timeout_is_never_declared_over_a_stored_result(
    nats_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch, first_read: asyncio.Event
) -> None:
    """A record the subscription never hears (here: stored by the waiter's own
    connection, opened with ``no_echo``) and the first read missed is found by the
    read at the deadline, not reported as a timeout."""
    monkeypatch.setattr(results, "TICK", 1_000.0)
    monkeypatch.setattr(results, "RECHECK", 1_000.0)
    nc = await nats.connect(nats_url, no_echo=True)
    try:
        client = Client(nc, settings)
        layout = await client.layout(settings.namespace)

        async def wait() -> list[ResultRecord]:
            return [r async for r in results.iter_records(client, layout, ["quiet"], 1.0)]

        waiting = asyncio.create_task(wait())
        await asyncio.wait_for(first_read.wait(), WAIT)
        record = ResultRecord("quiet", "finished", "json", time.time(), payload=b"7")
        await results.store_result(client, layout, record, 60)
        assert [r.payload for r in await waiting] == [b"7"]
    finally:
        await nc.close()


async def test_a_wait_outlives_a_server_restart(
    tmp_path: Path, namespace: str, first_read: asyncio.Event
) -> None:
    """The server restarts while a caller waits; the job's result is stored once it
    is back, and the caller has it (its reads around the reconnect may meet a
    JetStream still starting: they are tried again, not fatal)."""
    port = free_port()
    server = EmbeddedServer(port, tmp_path / "js").start()
    settings = Settings(nats_url=server.url, namespace=namespace)
    try:
        async with Queue(settings=settings) as queue:
            job = await queue.enqueue(jobs.add, 5, 6)
            wait = asyncio.create_task(queue.fetch_result(job.job_id, timeout=30))
            await asyncio.wait_for(first_read.wait(), WAIT)
            server.stop()
            server = EmbeddedServer(port, tmp_path / "js").start()
            sup = Supervisor(settings, AsyncioExecutor(2, settings))
            running = [(sup, await run_until_ready(sup))]
            try:
                assert await wait == 11
            finally:
                await stop_all(running)
    finally:
        server.stop()


async def test_a_failed_read_is_tried_again_not_fatal(
    queue: Queue, start_supervisor: StartSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that fails (a request timing out while JetStream starts after a restart)
    leaves the wait listening, and the read is tried again."""
    monkeypatch.setattr(results, "TICK", 0.1)
    read_bodies = results._read_bodies
    failures = []

    async def failing_once(*args: Any) -> list[tuple[str, bytes]]:
        if not failures:
            failures.append(1)
            raise nats.errors.TimeoutError
        return await read_bodies(*args)

    monkeypatch.setattr(results, "_read_bodies", failing_once)
    await start_supervisor()
    job = await queue.enqueue(jobs.add, 2, 3)
    assert await queue.fetch_result(job.job_id, timeout=WAIT) == 5
    assert failures == [1]


async def test_a_record_heard_but_refused_by_the_store_is_not_returned(
    nats_url: str, settings: Settings, first_read: asyncio.Event
) -> None:
    """Subscribers hear a write while the stream stores it, and hear it even when the
    stream refuses it (its sequence guard fails: the record turned final meanwhile).
    A wait returns only what it read back from the store, so a status read right
    after agrees with the result."""
    nc = await nats.connect(nats_url)
    try:
        client = Client(nc, settings)
        layout = await client.layout(settings.namespace)
        waiting = asyncio.create_task(
            _payloads(results.iter_records(client, layout, ["guarded"], WAIT))
        )
        await asyncio.wait_for(first_read.wait(), WAIT)
        refused = ResultRecord("guarded", "finished", "json", time.time(), payload=b"heard")
        await nc.publish(
            layout.kv_subject(layout.results_bucket, "guarded"),
            encode_result(refused),
            headers={"Nats-Expected-Last-Subject-Sequence": "999"},
        )
        await nc.flush()
        assert await results.read_record(client, layout, "guarded") is None  # never stored
        assert not waiting.done()
        kept = ResultRecord("guarded", "failed", "json", time.time(), error="kept")
        await results.store_result(client, layout, kept, 60)
        assert await asyncio.wait_for(waiting, WAIT) == [b""]
        stored = await results.read_record(client, layout, "guarded")
        assert stored is not None
        assert (stored.status, stored.error) == ("failed", "kept")
    finally:
        await nc.close()


async def _payloads(records: Any) -> list[bytes]:
    return [record.payload async for record in records]
