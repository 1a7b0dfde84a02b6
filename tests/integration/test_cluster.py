"""naq on a 3-node JetStream cluster (``tests.conftest.nats_cluster``): every stream,
bucket and consumer naq declares follows ``replicas``; a client given several URLs
finds a live server; losing a follower node loses no job.

The cluster runs with ``sync_interval: always``, as ``naq server --cluster 3`` does.
Killing a leader is not tested here: riding through a leader election needs the
retries of the fault suite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from naq.errors import JobFailed
from naq.executors.registry import load_executor
from naq.nasqueue import NASQueue
from naq.producer.schedules import schedule
from naq.queue import Queue
from naq.scheduler import Scheduler
from naq.settings import Settings
from naq.supervisor import Supervisor
from naq.transport.connect import connect
from naq.transport.names import (
    DEAD_LETTER_CONSUMER,
    HELD_CONSUMER,
    Layout,
    NasqLayout,
    kv_stream,
)
from naq.transport.pool import close_connections
from naq.transport.server import EmbeddedCluster, EmbeddedServer, free_port
from tests import jobs
from tests.conftest import connected, run_until_ready, stop_all

FAST_LEASE = {"scheduler_lock_ttl": 2.0, "scheduler_lock_renew_interval": 1.0}


@pytest.fixture
async def supervisors() -> AsyncIterator[list[tuple[Supervisor, asyncio.Task[int]]]]:
    """Supervisors a test starts with its own settings; drained at teardown."""
    running: list[tuple[Supervisor, asyncio.Task[int]]] = []
    yield running
    await stop_all(running)
    await close_connections()


async def start_supervisor(
    running: list[tuple[Supervisor, asyncio.Task[int]]], settings: Settings
) -> Supervisor:
    conf = settings.replace(executor="asyncio", concurrency=16)
    sup = Supervisor(conf, load_executor("asyncio")(16, conf))
    running.append((sup, await run_until_ready(sup)))
    return sup


async def plain_client(urls: list[str]) -> NATS:
    return await nats.connect(servers=urls, max_reconnect_attempts=-1)


def namespace_streams(namespace: str) -> set[str]:
    """Every stream naq declares for a namespace, a durable NASQueue's included."""
    layout = Layout(namespace)
    return {
        layout.stream,
        layout.failed_stream,
        layout.advisory_stream,
        NasqLayout(namespace).stream,
        *(kv_stream(bucket) for bucket in layout.buckets),
    }


async def wait_stream(nc: NATS, stream: str, timeout: float = 10.0) -> None:
    """The supervisor declares the advisory stream as its dead-letter drain starts."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while True:
        try:
            await js.stream_info(stream)
            return
        except NotFoundError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_every_stream_bucket_and_consumer_follows_replicas(
    nats_cluster: EmbeddedCluster,
    cluster_settings: Settings,
    supervisors: list[tuple[Supervisor, asyncio.Task[int]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = cluster_settings
    monkeypatch.setenv("NAQ_REPLICAS", "3")  # the module-level API reads the environment
    async with Queue(settings=settings) as queue:
        job = await queue.enqueue(jobs.add, 1, 2)
        await start_supervisor(supervisors, settings)
        assert await queue.fetch_result(job.job_id, timeout=20) == 3
        failing = await queue.enqueue(jobs.fail, "for good")
        with pytest.raises(JobFailed):
            await queue.fetch_result(failing.job_id, timeout=20)
    await schedule(
        jobs.add, 2, 3, interval=3600, nats_url=settings.nats_url, namespace=settings.namespace
    )
    scheduler = Scheduler(settings.replace(**FAST_LEASE), "cluster-scheduler")
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.wait_for(scheduler.leading.wait(), 20)
    finally:
        scheduler.request_stop()
        await asyncio.wait_for(task, 15)
    node = nats_cluster.nodes[0]
    nasq = await connected(
        NASQueue(node.host, node.port, settings.namespace, durable=True, settings=settings)
    )
    try:
        await nasq.push("orders", "one")
        popped = await nasq.pop()
        assert popped is not None
        assert popped["message"] == b"one"
    finally:
        await nasq.disconnect()

    nc = await plain_client(nats_cluster.urls)
    try:
        js = nc.jetstream()
        await wait_stream(nc, Layout(settings.namespace).advisory_stream)
        infos = [i for i in await js.streams_info() if settings.namespace in str(i.config.name)]
        assert {i.config.name for i in infos} == namespace_streams(settings.namespace)
        wrong = {
            i.config.name: (
                i.config.num_replicas,
                len(i.cluster.replicas or []) if i.cluster else 0,
            )
            for i in infos
            if i.config.num_replicas != 3 or i.cluster is None or len(i.cluster.replicas or []) != 2
        }
        assert not wrong, (
            f"streams not on 3 nodes (num_replicas, peers besides the leader): {wrong}"
        )
        durable = [
            (stream, c)
            for stream in namespace_streams(settings.namespace)
            for c in await js.consumers_info(stream)
            if c.config.durable_name
        ]
        assert {c.name for _, c in durable} >= {
            Layout(settings.namespace).consumer(settings.default_queue),
            NasqLayout(settings.namespace).consumer(0),
        }
        thin = [
            f"{stream}/{c.name}"
            for stream, c in durable
            if c.cluster is None or len(c.cluster.replicas or []) != 2
        ]
        assert not thin, f"durable consumers not on 3 nodes: {thin}"
    finally:
        await nc.close()


async def test_a_client_given_a_dead_url_first_connects_to_the_live_one(
    nats_server: EmbeddedServer,
    settings: Settings,
    supervisors: list[tuple[Supervisor, asyncio.Task[int]]],
) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    settings = settings.replace(nats_url=f"{dead},{nats_server.url}")
    assert settings.servers == [dead, nats_server.url]
    nc = await connect(settings, dont_randomize=True)  # the dead one tried first, for sure
    try:
        assert nc.connected_url is not None
        assert nc.connected_url.port == nats_server.port
    finally:
        await nc.close()
    async with Queue(settings=settings) as queue:
        job = await queue.enqueue(jobs.add, 2, 2)
        await start_supervisor(supervisors, settings)
        assert await queue.fetch_result(job.job_id, timeout=15) == 4


@pytest.mark.cluster  # about 10 s: the dead node's leaderships are elected again first
async def test_a_cluster_client_works_with_its_first_node_dead(
    nats_cluster: EmbeddedCluster,
    cluster_settings: Settings,
    supervisors: list[tuple[Supervisor, asyncio.Task[int]]],
) -> None:
    settings = cluster_settings
    layout = Layout(settings.namespace)
    consumers = [
        (layout.stream, layout.consumer(settings.default_queue)),
        (layout.stream, HELD_CONSUMER),
        (layout.advisory_stream, DEAD_LETTER_CONSUMER),
    ]

    async def led() -> None:
        """Every stream and consumer naq uses has a live leader."""
        for stream in namespace_streams(settings.namespace) - {
            NasqLayout(settings.namespace).stream
        }:
            await asyncio.to_thread(nats_cluster.stream_placement, stream, 30)
        for stream, consumer in consumers:
            await asyncio.to_thread(nats_cluster.consumer_placement, stream, consumer, 30)

    first_run: list[tuple[Supervisor, asyncio.Task[int]]] = []
    await start_supervisor(first_run, settings)  # declares everything while every node
    await led()  # can hold a replica: its consumers too, the dead-letter drain's included
    await stop_all(first_run)
    await close_connections()
    first = nats_cluster.nodes[0]
    nats_cluster.kill(first.name)
    # the meta leader and every leader naq needs are live nodes again: a leader
    # election is not under test here (riding through one needs retries)
    await asyncio.to_thread(nats_cluster.wait_ready, 30)
    await led()
    nc = await connect(settings, dont_randomize=True)
    try:
        assert nc.connected_url is not None
        assert nc.connected_url.port is not None
        assert nats_cluster.node_serving(nc.connected_url.port) is not first
    finally:
        await nc.close()
    async with Queue(settings=settings) as queue:
        job = await queue.enqueue(jobs.add, 3, 4)
        await start_supervisor(supervisors, settings)
        assert await queue.fetch_result(job.job_id, timeout=20) == 7
    nats_cluster.restart(first.name)


async def test_losing_a_follower_node_mid_traffic_loses_no_job(
    nats_cluster: EmbeddedCluster,
    cluster_settings: Settings,
    supervisors: list[tuple[Supervisor, asyncio.Task[int]]],
) -> None:
    """The victim leads nothing of the namespace (leaderships handed over first) and
    serves no client of the test; with it gone every stream still has a quorum."""
    meta_leader = nats_cluster.nodes[0].meta_leader()
    victim = next(n for n in reversed(nats_cluster.nodes) if n.name != meta_leader)
    others = [node.url for node in nats_cluster.nodes if node is not victim]
    settings = cluster_settings.replace(nats_url=",".join(others))
    async with Queue(settings=settings) as queue:
        warm = await queue.enqueue(jobs.add, 0, 0)
        sup = await start_supervisor(supervisors, settings)
        assert await queue.fetch_result(warm.job_id, timeout=20) == 0
        nc = await plain_client(others)
        try:
            streams = sorted(
                namespace_streams(settings.namespace) - {NasqLayout(settings.namespace).stream}
            )
            await nats_cluster.move_leaders(nc, streams, victim.name)
        finally:
            await nc.close()
        placement = await asyncio.to_thread(
            nats_cluster.stream_placement, Layout(settings.namespace).stream
        )
        assert placement.leader != victim.name
        assert victim.name in placement.followers

        nats_cluster.kill(victim.name)
        try:
            enqueued = await queue.enqueue_many([(jobs.add, (i, 1)) for i in range(200)])
            results = await queue.fetch_results([j.job_id for j in enqueued], timeout=60)
            assert results == {j.job_id: i + 1 for i, j in enumerate(enqueued)}
            assert sup.counters.failed == 0
        finally:
            await asyncio.to_thread(nats_cluster.restart, victim.name)
    assert victim.healthy()


@pytest.mark.parametrize("sync_always", [True, False])
def test_a_cluster_node_restarts_on_its_ports_and_store(tmp_path: Path, sync_always: bool) -> None:
    with EmbeddedCluster(3, tmp_path, sync_always=sync_always) as cluster:
        urls = cluster.urls
        jsz = cluster.nodes[1].monitor("/jsz")
        assert jsz is not None
        assert jsz["config"].get("sync_always", False) is sync_always
        node = cluster.kill("n2")
        assert not node.running
        assert node.monitor("/healthz") is None
        cluster.restart("n2")
        assert cluster.urls == urls
        assert node.healthy()
        cluster.pause("n2")
        assert node.monitor("/healthz") is None  # frozen: no answer
        cluster.resume("n2")
        cluster.wait_ready()
    assert not any(n.running for n in cluster.nodes)


@pytest.mark.parametrize("sync_always", [True, False])
def test_sync_always_reaches_the_single_server(tmp_path: Path, sync_always: bool) -> None:
    with EmbeddedServer(
        free_port(), tmp_path, sync_always=sync_always, http_port=free_port()
    ) as srv:
        jsz = srv.monitor("/jsz")
        assert jsz is not None
        assert jsz["config"].get("sync_always", False) is sync_always


@pytest.mark.parametrize("sync_always", [False, True])
async def test_a_killed_server_keeps_every_acknowledged_job(
    tmp_path: Path,
    namespace: str,
    sync_always: bool,
    supervisors: list[tuple[Supervisor, asyncio.Task[int]]],
) -> None:
    """A process crash loses no acknowledged job, whatever the fsync mode: the server
    hands each write to the OS before it acknowledges it (what an OS crash or a power
    loss does is the README's Guarantees: it cannot be made here)."""
    server = EmbeddedServer(free_port(), tmp_path, sync_always=sync_always).start()
    try:
        settings = Settings(nats_url=server.url, namespace=namespace)
        async with Queue(settings=settings) as queue:
            enqueued = await queue.enqueue_many([(jobs.add, (i, i)) for i in range(1000)])
        await close_connections()
        server.kill()  # SIGKILL right after the last acknowledgement
        server.start()
        async with Queue(settings=settings) as queue:
            await start_supervisor(supervisors, settings)
            results = await queue.fetch_results([j.job_id for j in enqueued], timeout=60)
        assert results == {j.job_id: 2 * i for i, j in enumerate(enqueued)}
        await stop_all(supervisors)
    finally:
        server.stop()
