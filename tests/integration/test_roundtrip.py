"""Enqueue -> supervisor -> result, against a real server."""

from __future__ import annotations

import pytest

from naq import JobFailed, JobNotFound, Queue, ResultTimeout
from tests import jobs
from tests.conftest import StartSupervisor


@pytest.mark.parametrize("executor", ["asyncio", "thread", "process"])
async def test_result_round_trip(
    queue: Queue, start_supervisor: StartSupervisor, executor: str
) -> None:
    await start_supervisor(executor=executor)
    job = await queue.enqueue(jobs.add, 2, 3)
    assert await queue.fetch_result(job.job_id, timeout=10) == 5
    job = await queue.enqueue(jobs.async_add, 4, 5)
    assert await queue.fetch_result(job.job_id, timeout=10) == 9


async def test_failed_job_raises_with_remote_traceback(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    await start_supervisor()
    job = await queue.enqueue(jobs.fail, "no good")
    with pytest.raises(JobFailed) as info:
        await queue.fetch_result(job.job_id, timeout=10)
    assert info.value.error == "ValueError: no good"
    assert "raise ValueError(message)" in (info.value.remote_traceback or "")


async def test_unknown_job_and_timeout(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        await queue.fetch_result("nope")
    with pytest.raises(ResultTimeout):
        await queue.fetch_result("nope", timeout=0.3)
