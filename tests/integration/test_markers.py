"""Delete and purge markers expire (``Settings.marker_ttl``) instead of piling up in
the buckets every scan reads: supervisors restarting in a loop, and dependencies
released one after another, leave nothing behind once the markers are gone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from naq import Queue, Settings, list_workers
from naq.heartbeat import beat, remove
from naq.scheduler.leader import Lease
from naq.transport.connect import Client, connect
from naq.transport.declare import declare
from naq.transport.names import Layout, kv_stream
from tests import jobs
from tests.conftest import StartSupervisor

MARKER_TTL = 1.0
RESTARTS = 1_000


async def _messages_until(nc: Any, bucket: str, most: int, timeout: float = 15.0) -> int:
    """The bucket's message count, once it is at most ``most`` or ``timeout`` passed.
    The server expires markers on its own time, with no event to wait on: a short
    bounded poll."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while True:
        count: int = (await js.stream_info(kv_stream(bucket))).state.messages
        if count <= most or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.1)


async def test_a_thousand_restarts_leave_the_workers_bucket_as_it_was(
    settings: Settings, start_supervisor: StartSupervisor, nc: Any, target: dict[str, str]
) -> None:
    """Each restart writes a heartbeat under a new worker id and removes it at its clean
    stop (the supervisor's own calls); a live supervisor beats all along."""
    settings = settings.replace(marker_ttl=MARKER_TTL)
    live = await start_supervisor(marker_ttl=MARKER_TTL)
    layout = Layout(settings.namespace)
    client = Client(await connect(settings, name="restarts"), settings)
    try:
        for i in range(RESTARTS):
            worker_id = f"restarted-{i}"
            await beat(client, layout, {"id": worker_id, "queues": ["default"]}, 30.0)
            await remove(client, layout, worker_id)
    finally:
        await client.close()
    assert [w["id"] for w in await list_workers(**target)] == [live.worker_id]
    # Only the live supervisor's record is left once the markers expired.
    assert await _messages_until(nc, layout.workers_bucket, 1) == 1
    assert [w["id"] for w in await list_workers(**target)] == [live.worker_id]


async def test_released_dependencies_leave_no_markers_in_the_deps_bucket(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    """A release removes the held record and the dependency's waiters, each with a
    marker; without a TTL they stayed for ever, two per dependent job."""
    await start_supervisor(marker_ttl=MARKER_TTL)
    parents = [await queue.enqueue(jobs.add, i, 1) for i in range(3)]
    children = [await queue.enqueue(jobs.add, i, 2, depends_on=p) for i, p in enumerate(parents)]
    results = await queue.fetch_results([c.job_id for c in children], timeout=20)
    assert sorted(results.values()) == [2, 3, 4]
    assert await _messages_until(nc, Layout(namespace).deps_bucket, 0) == 0


async def test_a_released_scheduler_lease_leaves_a_marker_that_expires(
    settings: Settings, nc: Any
) -> None:
    """A leader stopping cleanly gives its lease up at once (standbys see the delete),
    and the marker it leaves expires like every other; the next leader acquires the
    key whether the marker is still there or gone."""
    settings = settings.replace(marker_ttl=MARKER_TTL)
    layout = Layout(settings.namespace)
    client = Client(await connect(settings, name="lease"), settings)
    try:
        await declare(client.js, layout, settings)
        first = Lease(client, layout, "first", ttl=30.0, renew_interval=10.0)
        assert await first.try_acquire()
        await first.release()
        second = Lease(client, layout, "second", ttl=30.0, renew_interval=10.0)
        assert await second.try_acquire()  # over the marker
        await second.release()
        assert await _messages_until(nc, layout.leader_bucket, 0) == 0
        third = Lease(client, layout, "third", ttl=30.0, renew_interval=10.0)
        assert await third.try_acquire()  # on an empty key
    finally:
        await client.close()
