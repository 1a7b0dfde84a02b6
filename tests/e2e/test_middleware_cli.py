"""``--middleware`` and ``NAQ_MIDDLEWARE`` on the real command line, with real signals."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from naq import Queue
from naq.settings import Settings
from naq.tracing import Tracing
from tests import jobs, otel_jobs
from tests.e2e.conftest import NAQ, READY, Spawn, SuperviseFn
from tests.middleware import Stamp

pytestmark = pytest.mark.e2e


def _events(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_supervise_runs_the_named_middleware_around_each_job(
    settings: Settings, supervise: SuperviseFn, tmp_path: Path, how: str
) -> None:
    record = tmp_path / "events"
    spec = "tests.middleware:FileRecorder"
    env = {"NAQ_TEST_MIDDLEWARE_FILE": str(record)}
    proc = (
        supervise("--middleware", spec, **env)
        if how == "flag"
        else supervise(**env, NAQ_MIDDLEWARE=spec)
    )
    worker_id = (await proc.line(READY))["id"]
    async with Queue(settings=settings, middleware=[Stamp()]) as queue:
        job = await queue.enqueue(jobs.add, 1, 2)
        assert await queue.fetch_result(job.job_id, timeout=10) == 3
    proc.send(signal.SIGTERM)
    assert await proc.exit_code(15) == 0, proc.output()
    assert _events(record) == [
        ["on_start", worker_id],
        ["before_job", job.job_id, f"stamped {job.job_id}"],
        ["after_settle", job.job_id, "finished"],
        ["on_stop", worker_id],
    ]


@pytest.mark.parametrize("command", [("supervise",), (NAQ, "scheduler")])
async def test_an_unloadable_middleware_is_a_usage_error_before_connecting(
    spawn: Spawn, supervise: SuperviseFn, command: tuple[str, ...]
) -> None:
    bad = "tests.middleware:NotAMiddleware"
    if command == ("supervise",):
        proc = supervise("--middleware", bad)
    else:  # nothing listens on port 1: it must not get as far as connecting
        proc = spawn(*command, "--nats-url", "nats://127.0.0.1:1", "--middleware", bad)
    assert await proc.exit_code(15) == 2, proc.output()
    assert "is not a naq Middleware" in proc.output()


async def test_the_tracing_entry_point_carries_the_producers_trace_into_the_job(
    settings: Settings, supervise: SuperviseFn
) -> None:
    """``NAQ_MIDDLEWARE=tracing`` by its entry-point name; the supervisor has no tracer
    provider set up (its spans are not recorded), yet the job still runs in the
    producer's trace."""
    proc = supervise(NAQ_MIDDLEWARE="tracing")
    await proc.line(READY)
    provider = TracerProvider()
    with provider.get_tracer("tests").start_as_current_span("request") as request:
        async with Queue(settings=settings, middleware=[Tracing(tracer_provider=provider)]) as q:
            job = await q.enqueue(otel_jobs.current_span_ids)
            trace_id, _ = await q.fetch_result(job.job_id, timeout=15)
    assert trace_id == f"{request.get_span_context().trace_id:032x}"
