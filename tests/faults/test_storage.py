"""The server's storage fills in the middle of a run, stays full, and is freed."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from naq.producer.queue import Queue
from naq.settings import Settings
from naq.transport.server import EmbeddedServer
from tests.conftest import FILLER, fill_store
from tests.faults import jobs
from tests.faults.conftest import Ledger, Row, SuperviseAt, audit, enqueue_marks, report
from tests.procs import READY

JOBS = 2_000
RUN = 0.01
"""Seconds each job takes: the run lasts a few seconds, so the store fills mid-run."""
FULL_FOR = 3.0
"""Seconds the store stays full: the fault itself, so a fixed time."""


@pytest.mark.quick
async def test_storage_filled_and_freed_every_job_ends_once(
    small_store: EmbeddedServer, namespace: str, ledger: Ledger, supervise_at: SuperviseAt
) -> None:
    """Fill the store after 500 of 2,000 jobs, keep it full 3 s, free it: every job ends
    finished, none has its effect twice, and processing resumes after the freeing."""
    settings = Settings(nats_url=small_store.url, namespace=namespace)
    nc = await nats.connect(small_store.url)
    try:
        async with Queue(settings=settings) as queue:
            ids = await enqueue_marks(queue, ledger, JOBS, jobs.mark, RUN)
            sup = supervise_at(small_store.url, "--executor", "thread", "-c", "4")
            await sup.line(READY)
            await ledger.reach(500, 60, "before filling the store")
            await fill_store(nc)
            done_when_full = ledger.done()
            await sup.line(r"storage is full|no space|insufficient", timeout=30)
            await asyncio.sleep(FULL_FOR)
            held = ledger.done() - done_when_full
            await nc.jetstream().delete_stream(FILLER)
            freed = time.monotonic()
            resumed = await ledger.grows(30)
            result = await audit(queue, ids, ledger, timeout=120)
            total = time.monotonic() - freed
    finally:
        await nc.close()
    report(
        Row(
            "JetStream storage filled mid-run, freed 3 s later",
            result.jobs,
            result.lost,
            result.twice,
            f"resumed {resumed:.1f}s after the freeing; all done in {total:.1f}s",
            f"full after {done_when_full} runs; {held} more ran while full",
        )
    )
    assert result.lost == 0, result.why() + "\n" + sup.output()
    assert result.twice == 0
