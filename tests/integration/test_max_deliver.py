"""The consumer's max_deliver backstop: a job the server gives up on is dead-lettered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from naq import JobFailed, Queue
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor


async def test_a_job_past_max_deliver_moves_to_the_failed_stream(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    failed = await nc.subscribe(f"{namespace}.failed.>")
    await start_supervisor(max_deliver=2)
    tries = tmp_path / "tries"
    job = await queue.enqueue(jobs.fail_with, str(tries), "ValueError", max_retries=5)
    dead = await failed.next_msg(timeout=15)
    assert dead.headers["Naq-Job-Id"] == job.job_id
    assert "max_deliver" in dead.headers["Naq-Reason"]
    assert len(tries.read_text().splitlines()) == 2
    with pytest.raises(JobFailed, match="max_deliver"):
        await queue.fetch_result(job.job_id, timeout=5)
    info = await nc.jetstream().stream_info(Layout(namespace).stream)
    assert info.state.messages == 0, "the exhausted job stayed in the work queue"
