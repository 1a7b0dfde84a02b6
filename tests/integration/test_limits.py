"""Resource limits against a real server: a full stream refuses new work loudly and
drops nothing, oversized jobs are refused before they are sent, and a supervisor's
cap on result lifetimes holds whatever a job asks for."""

from __future__ import annotations

from typing import Any

import pytest

from naq import NASQueue, PayloadTooLarge, PublishError, Queue, Settings
from naq.errors import QueueFull
from naq.transport.names import Layout, NasqLayout, kv_stream, kv_subject
from tests import jobs
from tests.conftest import StartSupervisor


async def test_a_full_job_stream_refuses_the_next_jobs_and_keeps_the_others(
    settings: Settings, nc: Any
) -> None:
    limited = settings.replace(max_stream_msgs=3, max_message_size=4096)
    async with Queue(settings=limited) as queue:
        kept = [await queue.enqueue(jobs.add, i, i) for i in range(2)]
        with pytest.raises(QueueFull, match="holds 2 jobs"):
            await queue.enqueue_many([(jobs.add, (i, i)) for i in range(2)])
        kept.append(await queue.enqueue(jobs.add, 3, 3))
        with pytest.raises(QueueFull, match="nothing was sent"):
            await queue.enqueue_in(60, jobs.add, 9, 9)
        info = await nc.jetstream().stream_info(Layout(settings.namespace).stream)
    assert info.state.messages == len(kept) == 3
    assert info.config.max_msg_size == 4096


async def test_a_byte_limit_counts_what_is_queued(settings: Settings) -> None:
    async with Queue(settings=settings.replace(max_stream_bytes=3000)) as queue:
        await queue.enqueue(jobs.echo, "x" * 1000)
        with pytest.raises(QueueFull):
            await queue.enqueue(jobs.echo, "y" * 2500)
        await queue.enqueue(jobs.echo, "z" * 100)


async def test_a_job_over_max_message_size_is_refused_before_it_is_sent(
    settings: Settings, nc: Any
) -> None:
    async with Queue(settings=settings.replace(max_message_size=2048)) as queue:
        with pytest.raises(PayloadTooLarge, match=r"over max_message_size \(2048 bytes\)"):
            await queue.enqueue(jobs.echo, "x" * 4096)
        info = await nc.jetstream().stream_info(Layout(settings.namespace).stream)
    assert info.state.messages == 0


async def test_buckets_take_their_size_limit(settings: Settings, nc: Any) -> None:
    async with Queue(settings=settings.replace(max_bucket_bytes=8 * 1024**2)) as queue:
        await queue.connection()  # declares the namespace
    layout = Layout(settings.namespace)
    for bucket in layout.buckets:
        info = await nc.jetstream().stream_info(kv_stream(bucket))
        assert info.config.max_bytes == 8 * 1024**2, bucket


async def test_a_supervisors_cap_bounds_result_ttl_minus_one(
    settings: Settings, start_supervisor: StartSupervisor, nc: Any
) -> None:
    await start_supervisor(max_result_ttl=60)
    async with Queue(settings=settings) as queue:
        forever = await queue.enqueue(jobs.add, 1, 1, result_ttl=-1)
        long = await queue.enqueue(jobs.add, 2, 2, result_ttl=10 * 24 * 3600)
        short = await queue.enqueue(jobs.add, 3, 3, result_ttl=30)
        await queue.fetch_results([forever.job_id, long.job_id, short.job_id], timeout=10)
    layout = Layout(settings.namespace)
    stream = kv_stream(layout.results_bucket)
    ttls = {}
    for job in (forever, long, short):
        msg = await nc.jetstream().get_last_msg(
            stream, kv_subject(layout.results_bucket, job.job_id)
        )
        ttls[job.job_id] = (msg.headers or {}).get("Nats-TTL")
    assert ttls == {forever.job_id: "60s", long.job_id: "60s", short.job_id: "30s"}


async def test_a_full_durable_nasqueue_refuses_a_push(settings: Settings, nc: Any) -> None:
    namespace = f"{settings.namespace}nq"
    host, port = settings.url.removeprefix("nats://").rsplit(":", 1)
    queue = NASQueue(
        host, int(port), namespace, durable=True, settings=settings.replace(max_stream_msgs=2)
    )
    assert await queue.connect(), queue.connect_error
    try:
        await queue.push("orders", "one")
        await queue.push("orders", "two")
        with pytest.raises(PublishError):
            await queue.push("orders", "three")
        info = await nc.jetstream().stream_info(NasqLayout(namespace).stream)
        assert info.state.messages == 2
        assert (await queue.pop())["message"] == b"one"
    finally:
        await queue.disconnect()
