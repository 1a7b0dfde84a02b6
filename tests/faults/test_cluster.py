"""A 3-node R3 cluster losing nodes under load: the job stream's leader, the queue
consumer's leader and the node the supervisor is connected to, SIGKILLed in turn; and
the stream leader frozen (SIGSTOP) for 30 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psutil
import pytest

from naq.producer.queue import Queue
from naq.settings import Settings
from naq.transport.names import Layout
from naq.transport.server import EmbeddedCluster
from tests.faults import jobs
from tests.faults.conftest import (
    Ledger,
    Progress,
    Row,
    SuperviseAt,
    audit,
    enqueue_marks,
    report,
)
from tests.procs import READY, Proc

JOBS = 10_000
RUN = 0.02
"""Seconds per job: with 16 slots, about 800 jobs a second, so the faults land mid-run."""
SLOTS = "16"
FROZEN = 30.0
"""Seconds a node stays frozen: the fault itself, so a fixed time."""


def connected_node(cluster: EmbeddedCluster, proc: Proc) -> str:
    """The node a CLI process is connected to, from its own TCP connections."""
    ports = {node.port for node in cluster.nodes}
    for conn in psutil.Process(proc.pid).net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port in ports and conn.status == psutil.CONN_ESTABLISHED:
            return cluster.node_serving(conn.raddr.port).name
    raise AssertionError(f"process {proc.pid} has no connection to the cluster")


async def start_run(
    queue: Queue, ledger: Ledger, supervise_at: SuperviseAt, cluster: EmbeddedCluster, total: int
) -> tuple[dict[str, int], Proc]:
    ids = await enqueue_marks(queue, ledger, total, jobs.amark, RUN)
    sup = supervise_at(cluster.url, "-c", SLOTS, "--replicas", "3", "--ack-wait", "10")
    await sup.line(READY)
    return ids, sup


@pytest.mark.quick
async def test_leaders_and_the_connected_node_killed_in_turn_lose_nothing(
    nats_cluster: EmbeddedCluster,
    cluster_settings: Settings,
    ledger: Ledger,
    supervise_at: SuperviseAt,
) -> None:
    """In the middle of 10,000 jobs on R3, SIGKILL the job stream's leader, then (once
    it is back) the queue consumer's leader, then the node the supervisor is connected
    to: 0 lost; the longest stall of processing after each kill is reported."""
    layout = Layout(cluster_settings.namespace)
    victims: list[tuple[str, Callable[[], str]]] = []
    async with Queue(settings=cluster_settings) as queue:
        ids, sup = await start_run(queue, ledger, supervise_at, nats_cluster, JOBS)
        victims = [
            ("stream leader", lambda: nats_cluster.stream_placement(layout.stream).leader),
            (
                "consumer leader",
                lambda: (
                    nats_cluster.consumer_placement(
                        layout.stream, layout.consumer("default")
                    ).leader
                ),
            ),
            ("the supervisor's node", lambda: connected_node(nats_cluster, sup)),
        ]
        stalls: list[str] = []
        async with Progress(ledger) as progress:
            for i, (what, find) in enumerate(victims):
                await ledger.reach(1_500 + 2_500 * i, 120, f"before killing the {what}")
                assert ledger.done() < JOBS - 1_000, "the run ended before the faults"
                name = await asyncio.to_thread(find)
                killed = time.monotonic()
                await asyncio.to_thread(nats_cluster.kill, name)
                await ledger.reach(ledger.done() + 300, 60, f"after killing the {what}")
                stalls.append(f"{what} ({name}) {progress.stall_after(killed):.1f}s")
                await asyncio.to_thread(nats_cluster.restart, name)
            result = await audit(queue, ids, ledger, timeout=180)
    report(
        Row(
            "3-node R3: SIGKILL stream leader, consumer leader, supervisor's node",
            result.jobs,
            result.lost,
            result.twice,
            "longest stall: " + "; ".join(stalls),
            "each node restarted before the next kill",
        )
    )
    assert result.lost == 0, result.why() + "\n" + sup.output()


async def test_a_node_frozen_for_30s_loses_nothing(
    nats_cluster: EmbeddedCluster,
    cluster_settings: Settings,
    ledger: Ledger,
    supervise_at: SuperviseAt,
) -> None:
    """SIGSTOP the job stream's leader for 30 s in the middle of 10,000 jobs, then
    SIGCONT it: 0 lost; the longest stall is reported."""
    layout = Layout(cluster_settings.namespace)
    async with Queue(settings=cluster_settings) as queue:
        ids, sup = await start_run(queue, ledger, supervise_at, nats_cluster, JOBS)
        async with Progress(ledger) as progress:
            await ledger.reach(1_500, 120, "before freezing a node")
            name = await asyncio.to_thread(
                lambda: nats_cluster.stream_placement(layout.stream).leader
            )
            frozen = time.monotonic()
            nats_cluster.pause(name)
            try:
                await asyncio.sleep(FROZEN)
            finally:
                nats_cluster.resume(name)
            done_frozen = ledger.done()
            result = await audit(queue, ids, ledger, timeout=180)
            stall = progress.stall_after(frozen)
    report(
        Row(
            "3-node R3: SIGSTOP the stream leader for 30 s",
            result.jobs,
            result.lost,
            result.twice,
            f"longest stall {stall:.1f}s",
            f"{done_frozen} runs done when it woke",
        )
    )
    assert result.lost == 0, result.why() + "\n" + sup.output()
