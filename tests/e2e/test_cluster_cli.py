"""``naq server --cluster 3`` and ``naq server --sync`` through the real CLI."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import nats
import pytest

from naq import Queue
from naq.settings import Settings
from naq.transport.names import Layout
from tests import jobs
from tests.e2e.conftest import NAQ, NAQ_SUPERVISE, READY, Spawn

pytestmark = pytest.mark.e2e

NODE_LINE = r"^  (?P<name>n\d)  (?P<url>nats://\S+)  pid (?P<pid>\d+)  "


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_naq_server_cluster_serves_replicated_jobs_until_sigterm(
    spawn: Spawn, namespace: str, tmp_path: Path
) -> None:
    store = tmp_path / "cluster"
    server = spawn(NAQ, "server", "--cluster", "3", "--port", "0", "--store-dir", str(store))
    urls = (await server.line(r"^client URLs: (\S+)$", stream="stdout", timeout=60))[1]
    hint = await server.line(r"^use it: NAQ_NATS_URL=(\S+) NAQ_REPLICAS=3", stream="stdout")
    assert hint[1] == urls
    nodes = [re.search(NODE_LINE, line) for line in server.matching(NODE_LINE, "stdout")]
    pids = [int(node["pid"]) for node in nodes if node]
    assert [node["url"] for node in nodes if node] == urls.split(","), server.output()
    assert len(set(pids)) == 3, server.output()
    assert {p.name for p in store.iterdir()} >= {"n1", "n2", "n3"}

    # the URLs as the flag here; the hint's NAQ_NATS_URL takes the same list
    supervisor = spawn(NAQ_SUPERVISE, "--nats-url", urls, NAQ_NAMESPACE=namespace, NAQ_REPLICAS="3")
    await supervisor.line(READY, timeout=30)
    settings = Settings(nats_url=urls, namespace=namespace, replicas=3)
    async with Queue(settings=settings) as queue:
        job = await queue.enqueue(jobs.add, 20, 22)
        assert await queue.fetch_result(job.job_id, timeout=20) == 42
    nc = await nats.connect(servers=urls.split(","))
    try:
        info = await nc.jetstream().stream_info(Layout(namespace).stream)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2
    finally:
        await nc.close()
    supervisor.send(signal.SIGTERM)
    assert await supervisor.exit_code(20) == 0, supervisor.output()

    server.send(signal.SIGTERM)
    assert await server.exit_code(20) == 0, server.output()
    assert all(gone(pid) for pid in pids), f"nats-server children left: {pids}"


async def test_naq_server_cluster_outlives_a_node_and_restarts_it_on_sighup(
    spawn: Spawn, tmp_path: Path
) -> None:
    server = spawn(NAQ, "server", "--cluster", "3", "--port", "0", "--store-dir", str(tmp_path))
    urls = (await server.line(r"^client URLs: (\S+)$", stream="stdout", timeout=60))[1]
    nodes = [re.search(NODE_LINE, line) for line in server.matching(NODE_LINE, "stdout")]
    victim = nodes[1]
    assert victim is not None, server.output()
    os.kill(int(victim["pid"]), signal.SIGKILL)
    await server.line(rf"^node {victim['name']} exited; the others go on", timeout=10)
    assert server.popen.poll() is None, server.output()

    server.send(signal.SIGHUP)
    back = await server.line(rf"^node {victim['name']} restarted \(pid (\d+)\)", timeout=60)
    nc = await nats.connect(victim["url"])  # on its own port again
    try:
        assert nc.is_connected
    finally:
        await nc.close()
    assert urls.split(",")[1] == victim["url"]
    server.send(signal.SIGTERM)
    assert await server.exit_code(20) == 0, server.output()
    assert gone(int(back[1]))


async def test_naq_server_sync_writes_sync_interval_always(spawn: Spawn, tmp_path: Path) -> None:
    store = tmp_path / "store"
    server = spawn(NAQ, "server", "--port", "0", "--store-dir", str(store), "--sync")
    line = await server.line(
        r"^nats-server \S+ on (nats://\S+) \(store ", stream="stdout", timeout=30
    )
    assert "sync_interval: always" in line.string, server.output()
    assert "sync_interval: always" in (store / "nats-server.conf").read_text()
    nc = await nats.connect(line[1])
    try:
        js = nc.jetstream()
        await js.add_stream(name="SYNCED", subjects=["synced.>"])
        await js.publish("synced.one", b"kept")
    finally:
        await nc.close()
    server.send(signal.SIGINT)
    assert await server.exit_code(20) == 0, server.output()


async def test_naq_server_refuses_a_cluster_of_two(spawn: Spawn) -> None:
    server = spawn(NAQ, "server", "--cluster", "2")
    assert await server.exit_code(20) == 2
    assert server.matching(r"--cluster"), server.output()
