"""Reading a KV bucket whole: every live key, and no consumer left behind.

Workers, job status ("is it running?") and the schedule list all rest on this scan;
a key it misses makes a running job look queued.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from naq.queue import Queue
from naq.settings import Settings
from naq.transport import kv as streamscan
from naq.transport.connect import Client
from naq.transport.declare import _kv_config
from naq.transport.kv import current_values
from naq.transport.names import Layout


@pytest.fixture
async def client(queue: Queue) -> Client:
    return await queue.connection()


@pytest.fixture
async def layout(client: Client, namespace: str) -> Layout:
    return await client.layout(namespace)


async def _put(client: Client, layout: Layout, key: str, value: bytes, **headers: str) -> None:
    await client.js.publish(f"$KV.{layout.workers_bucket}.{key}", value, headers=headers or None)


async def _consumers(client: Client, layout: Layout, bucket: str | None = None) -> int:
    info = await client.js.stream_info(f"KV_{bucket or layout.workers_bucket}")
    return info.state.consumer_count


async def test_an_empty_bucket_gives_nothing(client: Client, layout: Layout) -> None:
    assert await current_values(client, layout.workers_bucket) == []
    assert await _consumers(client, layout) == 0


async def test_the_last_value_of_each_live_key(client: Client, layout: Layout) -> None:
    kv = await client.js.key_value(layout.workers_bucket)
    await kv.put("a", b"a1")
    await kv.put("a", b"a2")
    await kv.put("b", b"b1")
    await kv.put("gone", b"x")
    await kv.delete("gone")
    await kv.put("purged", b"x")
    await kv.purge("purged")
    await kv.put("empty", b"")
    assert sorted(await current_values(client, layout.workers_bucket)) == [b"a2", b"b1"]


async def test_a_key_the_server_expired_is_left_out(
    client: Client, namespace: str, settings: Settings
) -> None:
    """With delete markers on, an expired key leaves the server's own marker behind."""
    bucket = f"{namespace}_expiring"
    config = dataclasses.replace(_kv_config(bucket, settings), subject_delete_marker_ttl=60.0)
    await client.js.add_stream(config)
    kv = await client.js.key_value(bucket)
    watcher = await kv.watch("short")
    await client.js.publish(f"$KV.{bucket}.short", b"s", headers={"Nats-TTL": "1s"})
    await kv.put("kept", b"k")
    try:
        async with asyncio.timeout(10):  # the value, then the server's marker
            while (entry := await watcher.updates(timeout=10)) is None or entry.value:
                pass
    finally:
        await watcher.stop()
    assert entry.operation == "PURGE"
    assert await current_values(client, bucket) == [b"k"]


async def test_more_keys_than_one_pull_takes_several(
    client: Client, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streamscan, "KV_BATCH", 3)
    for i in range(11):
        await _put(client, layout, f"k{i}", str(i).encode())
    found = await current_values(client, layout.workers_bucket)
    assert sorted(found, key=int) == [str(i).encode() for i in range(11)]


async def test_scans_leave_no_consumer_and_never_miss_a_key(client: Client, layout: Layout) -> None:
    """A KV watch left one consumer per scan on the server for five minutes, and under
    load its "replay over" marker could come before the one key: an empty list."""
    await _put(client, layout, "worker", b"alive")
    stop = asyncio.Event()

    async def churn() -> None:  # other keys change while the scans run
        n = 0
        while not stop.is_set():
            await _put(client, layout, f"other{n % 5}", str(n).encode())
            n += 1

    writer = asyncio.create_task(churn())
    try:
        for _ in range(200):
            assert b"alive" in await current_values(client, layout.workers_bucket)
    finally:
        stop.set()
        await writer
    assert await _consumers(client, layout) == 0
