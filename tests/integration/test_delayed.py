"""Delayed jobs on the server's own schedules: enqueue_at / enqueue_in."""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from typing import Any

import pytest

from naq import Queue, Settings, fetch_job_status
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_enqueue_in_runs_after_the_delay(
    queue: Queue, start_supervisor: StartSupervisor, settings: Settings
) -> None:
    await start_supervisor()
    started = time.monotonic()
    job = await queue.enqueue_in(dt.timedelta(seconds=1), jobs.add, 1, 2)
    status = await fetch_job_status(job.job_id, settings.url, settings.namespace)
    assert status.status == "scheduled"
    assert await queue.fetch_result(job.job_id, timeout=10) == 3
    assert time.monotonic() - started >= 0.95


async def test_naive_datetimes_are_utc_and_the_past_runs_at_once(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    await start_supervisor()
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)  # naive UTC
    job = await queue.enqueue_at(past, jobs.add, 2, 2)
    assert await queue.fetch_result(job.job_id, timeout=5) == 4


async def test_fires_without_any_naq_process(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    """The server fires it: with no supervisor running, the job lands on its queue."""
    job = await queue.enqueue_in(0.5, jobs.add, 3, 3)
    js, layout = nc.jetstream(), Layout(namespace)
    subject = layout.job_subject("default", job.job_id)
    deadline = time.monotonic() + 5  # nothing of ours runs to say so: look at the stream
    while subject not in (
        (await js.stream_info(layout.stream, subjects_filter=">")).state.subjects or {}
    ):
        assert time.monotonic() < deadline, "the schedule did not fire"
        await asyncio.sleep(0.05)
    await start_supervisor()
    assert await queue.fetch_result(job.job_id, timeout=10) == 6


async def test_cancel_before_it_fires(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Any
) -> None:
    await start_supervisor()
    marks = tmp_path / "runs"
    job = await queue.enqueue_in(1, jobs.record_run, str(marks))
    assert await queue.cancel_scheduled(job.job_id) is True
    assert await queue.cancel_scheduled(job.job_id) is False
    later = await queue.enqueue_in(1.2, jobs.add, 0, 0)
    assert await queue.fetch_result(later.job_id, timeout=10) == 0
    assert not marks.exists()


async def test_precision(queue: Queue, start_supervisor: StartSupervisor, tmp_path: Any) -> None:
    """Each delayed job starts within 1 s of its due time (measured: a few ms here)."""
    await start_supervisor(concurrency=20)
    due = [_now() + dt.timedelta(seconds=1 + i * 0.05) for i in range(20)]
    created = [
        await queue.enqueue_at(when, jobs.stamp, str(tmp_path / "stamps"), str(i), 0)
        for i, when in enumerate(due)
    ]
    await queue.fetch_results([j.job_id for j in created], timeout=15)
    lines = (line.split() for line in (tmp_path / "stamps").read_text().splitlines())
    started = {name: float(start) for name, start, _end in lines}
    lateness = [started[str(i)] - when.timestamp() for i, when in enumerate(due)]
    assert max(lateness) < 1.0, lateness
    assert min(lateness) > -0.05, lateness  # never early
    print(
        f"delayed-job lateness: median {statistics.median(lateness) * 1000:.0f} ms, "
        f"worst {max(lateness) * 1000:.0f} ms"
    )


def test_the_seed_examples_sync_api(
    settings: Settings, start_supervisor_sync: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import naq

    monkeypatch.setenv("NAQ_NAMESPACE", settings.namespace)
    with start_supervisor_sync():
        run_at = _now() + dt.timedelta(seconds=0.5)
        job_at = naq.enqueue_at_sync(run_at, jobs.count_words, "a b c", nats_url=settings.url)
        job_in = naq.enqueue_in_sync(
            dt.timedelta(seconds=0.5), jobs.count_words, "a b", nats_url=settings.url
        )
        assert naq.fetch_job_result_sync(job_at.job_id, timeout=10, nats_url=settings.url) == 3
        assert naq.fetch_job_result_sync(job_in.job_id, timeout=10, nats_url=settings.url) == 2
    naq.close_sync_connections()
