"""Retries against a real server: delays as configured, filters by exception, Retry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from naq import JobFailed, Queue, Settings
from tests import jobs
from tests.conftest import StartSupervisor


def _tries(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_fails_twice_then_succeeds_with_exponential_delays(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    await start_supervisor()
    tries = tmp_path / "tries"
    started = time.monotonic()
    job = await queue.enqueue(
        jobs.flaky, str(tries), 2, max_retries=3, retry_delay=0.4, retry_strategy="exponential"
    )
    assert await queue.fetch_result(job.job_id, timeout=15) == 3
    elapsed = time.monotonic() - started
    assert 1.2 <= elapsed < 5, elapsed  # 0.4 s, then 0.8 s


@pytest.mark.parametrize(
    ("options", "kind", "expected_tries"),
    [
        ({"retry_on": [ValueError]}, "ValueError", 3),
        ({"retry_on": ["builtins:ValueError"]}, "KeyError", 1),
        ({"ignore_on": "KeyError"}, "KeyError", 1),
        ({"ignore_on": [KeyError]}, "ValueError", 3),
        ({"retry_on": [LookupError]}, "KeyError", 3),  # a base class matches
    ],
)
async def test_retry_on_and_ignore_on(
    settings: Settings,
    start_supervisor: StartSupervisor,
    tmp_path: Path,
    options: dict[str, object],
    kind: str,
    expected_tries: int,
) -> None:
    """The filters travel as names and work in json mode, where nothing is unpickled."""
    await start_supervisor(job_serializer="json")
    tries = tmp_path / "tries"
    async with Queue(settings=settings.replace(job_serializer="json")) as q:
        job = await q.enqueue(jobs.fail_with, str(tries), kind, max_retries=2, **options)
        with pytest.raises(JobFailed, match=kind):
            await q.fetch_result(job.job_id, timeout=15)
    assert _tries(tries) == expected_tries


async def test_subclass_of_retry_on_is_retried(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    await start_supervisor()
    tries = tmp_path / "tries"
    job = await queue.enqueue(
        jobs.fail_transient, str(tries), 1, max_retries=1, retry_on=ConnectionError
    )
    assert await queue.fetch_result(job.job_id, timeout=15) == 2


async def test_job_asks_for_a_retry(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    await start_supervisor()
    marks = tmp_path / "marks"
    job = await queue.enqueue(jobs.ask_for_retry, str(marks), 0.6, max_retries=1)
    assert await queue.fetch_result(job.job_id, timeout=15) == 2
    first, second = (float(t) for t in marks.read_text().split())
    assert second - first >= 0.6
    job = await queue.enqueue(jobs.ask_for_retry, str(tmp_path / "other"), 0.1)
    with pytest.raises(JobFailed, match="retries are used up"):
        await queue.fetch_result(job.job_id, timeout=15)


async def test_queue_default_timeout_applies_to_jobs_without_one(
    settings: Settings, start_supervisor: StartSupervisor
) -> None:
    await start_supervisor()
    async with Queue(settings=settings, default_timeout=0.3) as q:
        slow = await q.enqueue(jobs.async_sleep, 5)
        allowed = await q.enqueue(jobs.async_sleep, 0.5, timeout=5)  # its own beats the default
        with pytest.raises(JobFailed, match=r"exceeded 0\.3s"):
            await q.fetch_result(slow.job_id, timeout=10)
        assert await q.fetch_result(allowed.job_id, timeout=10) == 0.5
