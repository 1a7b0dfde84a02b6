"""Supervisors coming and going on one queue mid-run, as in a scale-out or a rolling
restart: one added while the others work, one stopped with SIGTERM (its drain), on
one server and on a 3-node R3 cluster."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from naq.producer.queue import Queue
from naq.settings import Settings
from naq.transport.server import EmbeddedCluster
from tests.faults import jobs
from tests.faults.conftest import Ledger, Row, SuperviseAt, audit, enqueue_marks, report
from tests.procs import READY

JOBS = 2_000
RUN = 0.05
"""Seconds per job: with 4 slots a supervisor runs about 80 jobs a second, so 2,000
jobs last long enough for a supervisor to join and another to leave mid-run."""
SLOTS = "4"
ADD_AT = 300
STOP_AT = 1_000
"""Runs recorded before the third supervisor is started, and before the second is
stopped."""


async def add_and_stop_mid_run(
    scenario: str, url: str, queue: Queue, ledger: Ledger, supervise_at: SuperviseAt, *args: str
) -> None:
    """Two supervisors start on ``JOBS`` jobs; a third joins after ``ADD_AT`` runs; the
    second gets SIGTERM after ``STOP_AT`` and must drain and exit 0. Then every job
    must have finished once, each supervisor having run some."""
    ids = await enqueue_marks(queue, ledger, JOBS, jobs.amark, RUN)
    sups = [supervise_at(url, "-c", SLOTS, *args) for _ in range(2)]
    workers = [(await sup.line(READY)).group("id") for sup in sups]
    await ledger.reach(ADD_AT, 60, "before the third supervisor")
    sups.append(supervise_at(url, "-c", SLOTS, *args))
    workers.append((await sups[2].line(READY)).group("id"))
    await ledger.reach(STOP_AT, 60, "before the SIGTERM")
    stopped = time.monotonic()
    sups[1].send(signal.SIGTERM)
    code = await sups[1].exit_code(30)
    drained = time.monotonic() - stopped
    result = await audit(queue, ids, ledger, timeout=120)
    ran = Counter(r.worker for r in result.records.values())
    report(
        Row(
            scenario,
            result.jobs,
            result.lost,
            result.twice,
            f"the SIGTERMed supervisor exited {code} in {drained:.1f}s",
            "runs by the first, stopped, added supervisor: "
            + " / ".join(str(ran[w]) for w in workers),
        )
    )
    assert code == 0, sups[1].output()
    assert result.lost == 0, result.why() + "\n" + "\n".join(s.output() for s in sups)
    assert result.twice == 0, f"{result.twice} jobs ran twice"
    assert all(ran[w] > 0 for w in workers), f"a supervisor ran nothing: {dict(ran)}"


@pytest.mark.quick
async def test_a_supervisor_added_and_one_sigtermed_mid_run_lose_nothing(
    queue: Queue, ledger: Ledger, supervise_at: SuperviseAt, nats_url: str
) -> None:
    """2,000 jobs on two supervisors; a third joins after 300 runs, the second is
    SIGTERMed after 1,000: it drains and exits 0, the jobs it held in its look-ahead
    are handed back and run elsewhere. 0 lost, 0 run twice, and each of the three
    ran jobs."""
    await add_and_stop_mid_run(
        "add a supervisor, SIGTERM another, mid-run", nats_url, queue, ledger, supervise_at
    )


@pytest.mark.cluster
async def test_on_a_cluster_a_supervisor_added_and_one_sigtermed_mid_run_lose_nothing(
    nats_cluster: EmbeddedCluster,
    cluster_settings: Settings,
    ledger: Ledger,
    supervise_at: SuperviseAt,
) -> None:
    """The same on a 3-node cluster with R3 streams, each supervisor given every
    node's URL (nats-py picks one at random, so they spread over the nodes)."""
    async with Queue(settings=cluster_settings) as queue:
        await add_and_stop_mid_run(
            "add a supervisor, SIGTERM another, mid-run, R3 cluster",
            nats_cluster.url,
            queue,
            ledger,
            supervise_at,
            "--replicas",
            "3",
        )
