"""The server dies: nats-server SIGKILLed in the middle of a run and started again on
the same port and store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from naq.producer.queue import Queue
from naq.settings import Settings
from naq.transport.server import EmbeddedServer, free_port
from tests.faults import jobs
from tests.faults.conftest import Ledger, Row, SuperviseAt, audit, enqueue_marks, report

DOWN = 2.0
"""Seconds the server stays dead: the fault itself, so a fixed time."""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(free_port(), tmp_path / "store").start()
    yield server
    server.stop()


@pytest.mark.quick
async def test_server_restarted_mid_run_loses_nothing(
    own_server: EmbeddedServer, namespace: str, ledger: Ledger, supervise_at: SuperviseAt
) -> None:
    """SIGKILL nats-server after 3,000 of 10,000 jobs, start it again 2 s later: 0 lost,
    and processing resumes within 5 s of the server's return."""
    total = 10_000
    settings = Settings(nats_url=own_server.url, namespace=namespace)
    async with Queue(settings=settings) as queue:
        ids = await enqueue_marks(queue, ledger, total, jobs.amark)
        sup = supervise_at(own_server.url, "-c", "64", "--ack-wait", "5")
        await ledger.reach(3_000, 60, "before the kill")
        own_server.kill()
        done_at_kill = ledger.done()
        await asyncio.sleep(DOWN)
        own_server.start()
        back = time.monotonic()
        resumed = await ledger.grows(30)
        result = await audit(queue, ids, ledger, timeout=120)
        total_time = time.monotonic() - back
    report(
        Row(
            "SIGKILL nats-server mid-run, start it again",
            result.jobs,
            result.lost,
            result.twice,
            f"resumed {resumed:.1f}s after the server's return; all done in {total_time:.1f}s",
            f"killed after {done_at_kill} runs, down {DOWN:g}s",
        )
    )
    assert result.lost == 0, result.why() + "\n" + sup.output()
    assert resumed <= 5.0, sup.output()
