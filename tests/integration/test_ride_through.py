"""NATS trouble rides through (``naq.transport.retry``): a server SIGKILLed and
restarted, no stream answering for a while, a pull answered 503. Each test runs its own
server where it kills one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from naq import Queue, Settings
from naq.executors.asyncio import AsyncioExecutor
from naq.supervisor import Supervisor
from naq.supervisor.puller import Puller
from naq.transport.connect import Client, connect
from naq.transport.kv import get_entry, write
from naq.transport.names import Layout, pull_subject
from naq.transport.pool import close_connections
from naq.transport.server import EmbeddedServer, free_port
from tests import jobs
from tests.conftest import run_until_ready, stop_all

DOWN = 6.0
"""Seconds the server stays down: longer than one request's timeout (5 s), which is
what a single try used to ride out."""
WAIT = 60.0


class Restartable:
    """A dedicated server that a test can SIGKILL and start again on the same port and
    store directory (what a crashed and restarted server looks like to clients)."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.server = EmbeddedServer(self.port, store).start()

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        self.server.kill()

    async def restart_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # the outage itself: how long the server is gone
        self.server = await asyncio.to_thread(EmbeddedServer(self.port, self.store).start)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Restartable]:
    server = Restartable(tmp_path / "js")
    yield server
    server.stop()


@pytest.fixture
async def own_settings(restartable: Restartable, namespace: str) -> AsyncIterator[Settings]:
    yield Settings(nats_url=restartable.url, namespace=namespace, pull_expires=1.0)
    await close_connections()


async def _stored(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


async def _run_all(settings: Settings, job_ids: list[str]) -> dict[str, Any]:
    sup = Supervisor(settings, AsyncioExecutor(8, settings))
    running = [(sup, await run_until_ready(sup))]
    try:
        async with Queue(settings=settings) as queue:
            return await queue.fetch_results(job_ids, timeout=WAIT)
    finally:
        await stop_all(running)


async def test_enqueue_many_rides_through_a_server_restart(
    restartable: Restartable, own_settings: Settings, namespace: str
) -> None:
    """SIGKILL in the middle of a batch, the server back a few seconds later: every job
    is stored once (re-sent with its own ``Nats-Msg-Id``) and then runs. Before: jobs of
    4 KiB in a window of 2,048 overflowed nats-py's reconnect buffer while the server was
    gone, and the batch died on ``OutboundBufferLimitError``."""
    count = 3_000
    observer = await nats.connect(restartable.url)
    first = asyncio.Event()

    async def seen(msg: Msg) -> None:
        first.set()

    await observer.subscribe(f"{namespace}.jobs.>", cb=seen)
    async with Queue(settings=own_settings) as queue:
        await queue.connection()  # declared before the fault
        sending = asyncio.create_task(
            queue.enqueue_many([(jobs.echo, ("x" * 4096, i)) for i in range(count)])
        )
        await asyncio.wait_for(first.wait(), WAIT)
        await observer.close()
        restartable.kill()
        assert not sending.done(), "the batch ended before the server was killed"
        await restartable.restart_after(DOWN)
        created = await asyncio.wait_for(sending, WAIT)
    assert len({job.job_id for job in created}) == count
    assert await _stored(restartable.url, Layout(namespace).stream) == count
    results = await _run_all(own_settings, [job.job_id for job in created])
    assert sorted(args[1] for args, _ in results.values()) == list(range(count))


async def test_enqueue_one_by_one_rides_through_a_server_restart(
    restartable: Restartable, own_settings: Settings, namespace: str
) -> None:
    """The server is SIGKILLed before a producer's first call on a namespace, and comes
    back after longer than a request's timeout: the declaration and the enqueues that
    follow wait for it. Before: the declaration's stream-info request failed with
    ``nats: timeout`` (what killed a producer during a leader election)."""
    count = 200
    async with Queue(settings=own_settings.replace(namespace=f"{namespace}o")) as other:
        await other.connection()  # the pooled connection exists, this namespace is new
        restartable.kill()
        back = asyncio.create_task(restartable.restart_after(DOWN))
        async with Queue(settings=own_settings) as queue:
            created = [await queue.enqueue(jobs.add, i, 1) for i in range(count)]
        await back
    assert await _stored(restartable.url, Layout(namespace).stream) == count
    results = await _run_all(own_settings, [job.job_id for job in created])
    assert sorted(results.values()) == [i + 1 for i in range(count)]


async def test_kv_reads_and_writes_ride_through_a_server_restart(
    restartable: Restartable, own_settings: Settings
) -> None:
    """A status read and a KV write made while the server is gone complete once it is
    back. Before: each was one request, failed after 5 s with ``nats: timeout``."""
    async with Queue(settings=own_settings) as queue:
        job = await queue.enqueue(jobs.add, 2, 3)
        client = await queue.connection()
        kv = await client.kv(queue.layout.deps_bucket)
        restartable.kill()
        back = asyncio.create_task(restartable.restart_after(DOWN))
        status, revision = await asyncio.gather(
            queue.status(job.job_id), write(kv, "note", b"written while down")
        )
        await back
        assert status.status == "queued"
        assert await get_entry(kv, "note") == (b"written while down", revision)


async def test_a_publish_waits_for_a_stream_that_is_not_there_yet(
    nats_server: EmbeddedServer, settings: Settings, nc: Any
) -> None:
    """No stream answers (503 no responders, as during a leader election) and then one
    does: the publish gets through. Before: four tries in a row with no pause, then
    ``NoStream``."""
    subject = f"{settings.namespace}.late.1"
    client = Client(await connect(settings), settings)
    try:
        publishing = asyncio.create_task(client.publisher.publish(subject, b"hello", None))
        await asyncio.sleep(1.0)  # nobody listens for a while: every try meets no responders
        assert not publishing.done()
        await nc.jetstream().add_stream(
            StreamConfig(
                name=f"LATE_{settings.namespace}", subjects=[f"{settings.namespace}.late.*"]
            )
        )
        ack = await asyncio.wait_for(publishing, WAIT)
        assert ack.seq == 1
    finally:
        await client.close()


async def test_the_puller_backs_off_after_a_503_instead_of_spinning(
    nats_server: EmbeddedServer, settings: Settings, nc: Any
) -> None:
    """Pulls on a consumer nobody serves are answered 503 by the server (no responders,
    what a consumer in a leader election looks like). The puller asks again after a
    growing, capped backoff; once the consumer exists, its next pull delivers. Before,
    it asked again at once: thousands of requests a second."""
    stream, consumer = f"LATE_{settings.namespace}", "worker"
    puller_nc = await connect(settings)
    delivered: asyncio.Queue[Msg] = asyncio.Queue()
    slots_changed = asyncio.Event()
    puller = Puller(
        puller_nc,
        "default",
        pull_subject(stream, consumer),
        expires=1.0,
        free=lambda: 1,
        slots_changed=slots_changed,
        deliver=lambda queue, msg: delivered.put_nowait(msg),
        on_consumer_gone=lambda queue: None,
        hand_back=lambda queue, msg: pytest.fail("a message beyond the credits"),
    )
    await puller.start()
    running = asyncio.create_task(puller.run())
    try:
        await asyncio.sleep(2.0)  # the window over which the requests are counted
        sent = puller_nc.stats["out_msgs"]
        assert 1 <= sent <= 10, f"{sent} pull requests in 2 s"
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{settings.namespace}.late.*"]))
        await js.add_consumer(stream, durable_name=consumer, ack_policy="explicit")
        await js.publish(f"{settings.namespace}.late.1", b"job")
        msg = await asyncio.wait_for(delivered.get(), WAIT)
        assert msg.data == b"job"
    finally:
        await puller.stop()  # run() returns once stopped
        await asyncio.wait_for(running, 10)
        await puller_nc.close()


async def test_a_job_stream_deleted_behind_the_producers_back_is_declared_again(
    settings: Settings, nc: Any
) -> None:
    """No stream answers because the stream is gone (an operator deleted it): the first
    "no stream" answer makes the client declare its namespace again, and the enqueue
    lands well within a short window instead of failing at its end."""
    quick = settings.replace(retry_window=10.0)
    async with Queue(settings=quick) as queue:
        await queue.enqueue(jobs.add, 1, 1)
        await nc.jetstream().delete_stream(queue.layout.stream)
        job = await queue.enqueue(jobs.add, 2, 2)
    info = await nc.jetstream().stream_info(queue.layout.stream, subjects_filter=">")
    assert list(info.state.subjects or {}) == [queue.layout.job_subject("default", job.job_id)]
