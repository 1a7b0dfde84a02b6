"""Several supervisors on one queue: every one of them gets its share of the jobs.

Every supervisor of a queue pulls from the queue's one durable consumer, each asking
for no more than its free slots and look-ahead places, so no supervisor's pulls can
hold the jobs another is asking for (``bench/scaleout.py`` measures the shares at 1
to 8 supervisors).
"""

from __future__ import annotations

from collections import Counter

import pytest

from naq.producer.queue import Queue
from naq.settings import Settings
from naq.state.store import iter_records
from naq.transport.server import EmbeddedCluster
from tests.jobs import async_sleep
from tests.procs import NAQ_SUPERVISE, READY, Spawn

SUPERVISORS = 3
SLOTS = 2
JOBS = 150
RUN = 0.2
"""Seconds each job sleeps: 150 jobs on 3 x 2 slots take about 5 s, long enough that
each supervisor asks again many times (about 25 times per slot)."""


async def fair_shares(spawn: Spawn, queue: Queue, url: str, *args: str) -> None:
    """Start the supervisors, then the jobs; every job finishes, and each supervisor's
    share is at least a third of the equal one."""
    base = ("--nats-url", url, "--namespace", queue.settings.namespace, "-c", str(SLOTS))
    sups = [spawn(NAQ_SUPERVISE, *base, "--pull-expires", "2", *args) for _ in range(SUPERVISORS)]
    workers = [(await sup.line(READY)).group("id") for sup in sups]
    jobs = await queue.enqueue_many([(async_sleep, (RUN,))] * JOBS)
    ids = [job.job_id for job in jobs]
    client = await queue.connection()
    records = {r.job_id: r async for r in iter_records(client, queue.layout, ids, 120)}

    assert sorted(r.status for r in records.values()) == ["finished"] * JOBS
    shares = Counter(r.worker for r in records.values())
    assert set(shares) <= set(workers), f"records name unknown workers: {shares}"
    fair = JOBS / SUPERVISORS
    assert all(shares[w] >= fair / 3 for w in workers), (
        f"shares {dict(shares)}: one supervisor ran less than a third of {fair:.0f}"
    )


async def test_three_supervisors_on_one_queue_each_run_a_fair_share(
    spawn: Spawn, nats_url: str, queue: Queue
) -> None:
    """3 supervisors of 2 slots each, started before 150 jobs of 0.2 s are enqueued:
    every job finishes, and each supervisor ran at least a third of its equal share
    (50).

    Why a third cannot flake: a supervisor holds a pull request open whenever it has a
    free slot, and gets a job as soon as one is there (the jobs are asyncio sleeps,
    so a slot frees on time even on a loaded machine). Running fewer than a third of
    its share would take not asking for two thirds of the run, about 3 s, while the
    others were served: a process frozen that long, not a matter of scheduling. A
    supervisor whose pulls took more than its slots (the starvation this guards
    against) would leave another with nothing while the jobs last.
    """
    await fair_shares(spawn, queue, nats_url)


@pytest.mark.cluster
async def test_on_a_cluster_three_supervisors_each_run_a_fair_share(
    spawn: Spawn, nats_cluster: EmbeddedCluster, cluster_settings: Settings
) -> None:
    """The same on a 3-node R3 cluster, each supervisor given every node's URL, so
    they are spread over the nodes and their pulls reach the consumer's leader
    through routes, some from a node that is not the leader's."""
    async with Queue(settings=cluster_settings) as queue:
        await fair_shares(spawn, queue, nats_cluster.url, "--replicas", "3")
