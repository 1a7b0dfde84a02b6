"""A job's life across real ``naq-supervise`` processes: a job that kills its supervisor
every time, and a job handed back by a supervisor that was told to stop."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from naq import Queue, fetch_job_status, list_failed
from naq.supervisor.jobs import DEATHS_FORGIVEN
from tests import jobs
from tests.e2e import jobs as e2e_jobs
from tests.e2e.conftest import READY, SuperviseFn, stream_name, worker_record

pytestmark = pytest.mark.e2e

MAX_STARTS = 5


async def test_a_job_that_kills_its_supervisor_is_dead_lettered_after_its_retries(
    queue: Queue, supervise: SuperviseFn, target: dict[str, str], tmp_path: Path
) -> None:
    """``os._exit`` in an asyncio-executor job takes the supervisor down with it. Each
    fresh supervisor gets the job again after ``ack_wait``; once max(max_retries, the
    deaths forgiven) + 1 deliveries ended with their worker dead, the next supervisor
    dead-letters the job instead of running it, and lives on."""
    runs = tmp_path / "runs"
    poison = await queue.enqueue(jobs.exit_after_record, str(runs), 1, max_retries=1)
    dead_lettered = f"job {poison.job_id} failed for good: its worker died"
    deaths = 0
    for _ in range(MAX_STARTS):
        proc = supervise("--ack-wait", "1", "--concurrency", "2")
        await proc.line(READY)
        try:
            await proc.line(dead_lettered, timeout=15)
            break
        except AssertionError:  # the process ended before it said so: the job killed it
            assert await proc.exit_code(5) == 1, proc.output()
            deaths += 1
    else:
        pytest.fail(f"not dead-lettered after {MAX_STARTS} supervisor starts")

    assert deaths == max(poison.options.max_retries, DEATHS_FORGIVEN) + 1
    assert runs.read_text().count("run") == deaths, "the last supervisor ran the job"
    [entry] = await list_failed(**target)
    assert entry.job_id == poison.job_id
    assert "died" in entry.reason
    assert entry.function == "tests.jobs:exit_after_record"
    status = await fetch_job_status(poison.job_id, **target)
    assert status.status == "failed"
    assert status.error is not None
    assert "died" in status.error

    later = await queue.enqueue(jobs.add, 20, 22)
    assert await queue.fetch_result(later.job_id, timeout=10) == 42
    assert proc.popen.poll() is None, proc.output()
    proc.send(signal.SIGTERM)
    assert await proc.exit_code(10) == 0, proc.output()


async def test_a_handed_back_job_with_no_retries_runs_again_as_its_first_attempt(
    queue: Queue,
    supervise: SuperviseFn,
    js: JetStreamContext,
    namespace: str,
    target: dict[str, str],
    tmp_path: Path,
) -> None:
    """A second signal cuts the running job short and hands it back: not the job's
    failure, so with ``max_retries=0`` it still runs, and counts one attempt."""
    proc = supervise("--shutdown-grace", "30")
    worker_id = (await proc.line(READY))["id"]
    job = await queue.enqueue(e2e_jobs.slow_first_run, str(tmp_path / "ran"), 30, max_retries=0)
    await worker_record(js, namespace, worker_id, lambda r: r["busy"] == 1)

    proc.send(signal.SIGTERM)
    await proc.line(r"stopping: no new jobs; 1 running get 30s")
    proc.send(signal.SIGINT)
    assert await proc.exit_code(10) == 0, proc.output()
    assert proc.matching(f"job {job.job_id} cut short by shutdown: handed back"), proc.output()
    assert (await js.stream_info(stream_name(namespace))).state.messages == 1

    assert (await fetch_job_status(job.job_id, **target)).status == "queued"

    second = supervise()
    await second.line(READY)
    assert await queue.fetch_result(job.job_id, timeout=10) == "second run"
    done = await fetch_job_status(job.job_id, **target)
    assert (done.status, done.attempt) == ("finished", 1)
