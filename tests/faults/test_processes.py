"""Processes dying: a process-executor child SIGKILLed mid-job, and the supervisor
itself SIGKILLed in the middle of a run and started again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any

import psutil
import pytest

from naq.producer.queue import Queue
from naq.transport.names import Layout
from tests.faults import jobs
from tests.faults.conftest import Ledger, Row, SuperviseAt, audit, enqueue_marks, report

KILLS = 100
KILLS_PER_JOB = 3
JOBS = 150
"""More jobs than kills: most are killed once or more, the rest run through."""


@pytest.mark.quick
async def test_children_sigkilled_mid_job_lose_nothing(
    queue: Queue, ledger: Ledger, supervise_at: SuperviseAt, nats_url: str
) -> None:
    """SIGKILL a child of ``naq-supervise --executor process -c 2`` while it runs a job,
    100 times (at most 3 times per job, within its retries): every job ends finished
    (0 lost, 0 stuck), and none has its effect twice."""
    sup = supervise_at(nats_url, "--executor", "process", "-c", "2")
    await sup.line(r"supervisor \S+: queues")
    ids = await enqueue_marks(queue, ledger, JOBS, jobs.mark, 0.3, max_retries=KILLS_PER_JOB + 1)
    killed: set[int] = set()
    per_job: Counter[int] = Counter()
    deadline = time.monotonic() + 240
    last_kill = time.monotonic()
    while len(killed) < KILLS:
        assert time.monotonic() < deadline, f"only {len(killed)} kills in time\n{sup.output()}"
        children = {child.pid for child in psutil.Process(sup.pid).children(recursive=True)}
        finished = ledger.counts()
        target = next(
            (
                (n, pid)
                for n, pid in reversed(ledger.started())
                if pid in children
                and pid not in killed
                and not finished[n]
                and per_job[n] < KILLS_PER_JOB
            ),
            None,
        )
        if target is None:
            assert ledger.done() < len(ids), "every job finished before the kills were done"
            await asyncio.sleep(0.01)
            continue
        n, pid = target
        os.kill(pid, signal.SIGKILL)  # a child of the supervisor this test started
        killed.add(pid)
        per_job[n] += 1
        last_kill = time.monotonic()
    result = await audit(queue, ids, ledger, timeout=120)
    recovery = time.monotonic() - last_kill
    report(
        Row(
            "SIGKILL a process-executor child mid-job",
            result.jobs,
            result.lost,
            result.twice,
            f"all done {recovery:.1f}s after the last kill",
            f"{len(killed)} kills",
        )
    )
    assert result.lost == 0, result.why() + "\n" + sup.output()
    assert result.twice == 0


@pytest.mark.quick
async def test_supervisor_sigkilled_mid_run_loses_nothing(
    queue: Queue, ledger: Ledger, supervise_at: SuperviseAt, nats_url: str, nc: Any
) -> None:
    """SIGKILL the supervisor after 3,000 of 10,000 jobs and start another: 0 lost, and
    jobs run twice at most the ones it held un-acknowledged when it died."""
    total = 10_000
    ids = await enqueue_marks(queue, ledger, total, jobs.amark)
    args = ("-c", "64", "--ack-wait", "3")
    first = supervise_at(nats_url, *args)
    await ledger.reach(3_000, 60, "before the kill")
    first.kill()
    js = nc.jetstream()
    layout = Layout(queue.settings.namespace)
    info = await js.consumer_info(layout.stream, layout.consumer("default"))
    in_flight = info.num_ack_pending
    done_at_kill = ledger.done()
    second = supervise_at(nats_url, *args)
    restarted = time.monotonic()
    await second.line(r"supervisor \S+: queues")
    resumed = await ledger.grows(30)
    result = await audit(queue, ids, ledger, timeout=120)
    total_time = time.monotonic() - restarted
    report(
        Row(
            "SIGKILL the supervisor mid-run, start another",
            result.jobs,
            result.lost,
            result.twice,
            f"resumed {resumed:.1f}s after the restart; all done in {total_time:.1f}s",
            f"killed after {done_at_kill} runs with {in_flight} in flight",
        )
    )
    assert result.lost == 0, result.why()
    assert result.twice <= in_flight
