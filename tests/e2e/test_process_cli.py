"""``naq-supervise --executor process`` as a real process: its children die, it does not."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from nats.js import JetStreamContext

from naq import Queue
from tests import jobs
from tests.e2e import jobs as e2e_jobs
from tests.e2e.conftest import READY, SuperviseFn, worker_record

pytestmark = pytest.mark.e2e


async def test_a_killed_child_costs_one_attempt_and_nothing_else(
    queue: Queue, supervise: SuperviseFn, js: JetStreamContext, namespace: str, tmp_path: Path
) -> None:
    proc = supervise("--executor", "process", "-c", "2")
    worker_id = (await proc.line(READY))["id"]
    marker = str(tmp_path / "ran-once")
    job = await queue.enqueue(e2e_jobs.slow_first_run, marker, 30, max_retries=1)

    record = await worker_record(
        js, namespace, worker_id, lambda r: any(c["job_id"] == job.job_id for c in r["children"])
    )
    victim = next(c["pid"] for c in record["children"] if c["job_id"] == job.job_id)
    assert record["rss"] > sum(c["rss"] for c in record["children"]) > 0
    os.kill(victim, signal.SIGKILL)

    assert await queue.fetch_result(job.job_id, timeout=15) == "second run"
    await proc.line(r"attempt 1: worker process killed by signal SIGKILL")
    after = await worker_record(js, namespace, worker_id, lambda r: r["processed"] == 1)
    assert victim not in {c["pid"] for c in after["children"]}
    assert len(after["children"]) == 2
    proc.send(signal.SIGTERM)
    assert await proc.exit_code(15) == 0, proc.output()


async def test_children_that_cannot_start_stop_the_supervisor(supervise: SuperviseFn) -> None:
    started = time.monotonic()
    proc = supervise("--executor", "process", "-c", "2", "--preload", "tests.e2e.broken_module")
    assert await proc.exit_code(30) == 4, proc.output()
    assert time.monotonic() - started < 20
    await proc.line(r"died at start-up; last: preloading 'tests.e2e.broken_module' failed")
    assert "this module is broken on purpose" in proc.output()


async def test_children_die_with_a_killed_supervisor(
    queue: Queue, supervise: SuperviseFn, js: JetStreamContext, namespace: str
) -> None:
    """SIGKILL leaves no orphan finishing a job that is about to be redelivered."""
    proc = supervise("--executor", "process", "-c", "1")
    worker_id = (await proc.line(READY))["id"]
    job = await queue.enqueue(jobs.sleep, 30)
    record = await worker_record(
        js, namespace, worker_id, lambda r: any(c["job_id"] == job.job_id for c in r["children"])
    )
    child = psutil.Process(next(c["pid"] for c in record["children"]))
    proc.send(signal.SIGKILL)
    assert await proc.exit_code(10) == -signal.SIGKILL
    gone, _ = await asyncio.to_thread(psutil.wait_procs, [child], 10)
    assert gone, "the child outlived its supervisor"
