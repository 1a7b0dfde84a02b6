"""``--metrics-port`` on the real command line: scrape ``/metrics`` of a supervisor and
a scheduler after known work, and find the exact counts."""

from __future__ import annotations

import socket

import pytest
from nats.js import JetStreamContext

from naq import Queue
from naq.errors import EXIT_CONFIG, JobFailed
from naq.metrics import CONSUMER_INFO_TTL
from naq.producer.schedules import schedule
from naq.settings import Settings
from naq.transport.server import free_port
from tests import jobs
from tests.conftest import until
from tests.e2e.conftest import NAQ, NAQ_SUPERVISE, READY, Spawn, SuperviseFn
from tests.metrics import named, scrape, value
from tests.schedulers import job_count

pytestmark = pytest.mark.e2e

JOB = {"queue": "default", "executor": "asyncio"}
QUEUE_GAUGES = ("backlog", "ack_pending", "redelivered")


async def test_a_supervisor_counts_known_work_exactly(
    settings: Settings, supervise: SuperviseFn
) -> None:
    """5 successes; one job that fails twice with its own exception class: retried
    once, then dead-lettered. Its argument appears nowhere in the scrape."""
    port = free_port()
    proc = supervise("--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    await proc.line(READY)
    async with Queue(settings=settings) as queue:
        adds = [await queue.enqueue(jobs.add, i, i) for i in range(5)]
        failing = await queue.enqueue(jobs.boom, "s3cret-arg", max_retries=1, retry_delay=0.1)
        for i, job in enumerate(adds):
            assert await queue.fetch_result(job.job_id, timeout=15) == 2 * i
        with pytest.raises(JobFailed):
            await queue.fetch_result(failing.job_id, timeout=15)

    async def settled() -> bool:  # the hooks run after the record is stored
        text = await scrape(port)
        done = value(text, "naq_jobs_succeeded_total", **JOB)
        dead = value(text, "naq_jobs_dead_lettered_total", **JOB)
        return (done, dead) == (5, 1)

    await until(settled, 15, "5 successes and 1 dead letter counted")
    text = await scrape(port)
    assert value(text, "naq_jobs_started_total", **JOB) == 7
    assert value(text, "naq_jobs_succeeded_total", **JOB) == 5
    assert named(text, "naq_jobs_failed_total") == {
        frozenset({**JOB, "exception": "tests.jobs.Boom"}.items()): 2
    }
    assert value(text, "naq_jobs_retried_total", **JOB) == 1
    assert value(text, "naq_jobs_dead_lettered_total", **JOB) == 1
    assert value(text, "naq_jobs_redelivered_total", **JOB) == 1
    assert value(text, "naq_jobs_in_progress", **JOB) == 0
    assert value(text, "naq_job_duration_seconds_count", **JOB) == 7
    assert value(text, "naq_job_queue_wait_seconds_count", **JOB) == 6  # first runs only
    assert value(text, "naq_reconnects_total") == 0
    assert value(text, "naq_slots", executor="asyncio") == 10
    rss = value(text, "naq_supervisor_rss_bytes")
    assert rss is not None
    assert rss > 1_000_000
    assert "s3cret-arg" not in text
    assert "could not use" not in text

    async def queue_empty() -> bool:  # consumer info is cached: read again within its TTL
        text = await scrape(port)
        stats = [value(text, f"naq_queue_{n}", queue="default") for n in QUEUE_GAUGES]
        return stats == [0, 0, 0]

    await until(queue_empty, CONSUMER_INFO_TTL + 10, "the queue's consumer seen empty")


async def test_a_supervisor_without_the_flag_serves_no_metrics(
    settings: Settings, supervise: SuperviseFn
) -> None:
    port = free_port()
    proc = supervise(NAQ_METRICS_HOST="127.0.0.1")
    await proc.line(READY)
    with pytest.raises(ConnectionRefusedError):
        await scrape(port)
    assert "metrics at" not in proc.output()


@pytest.mark.parametrize("command", [(NAQ_SUPERVISE,), (NAQ, "scheduler")])
async def test_a_taken_metrics_port_is_a_configuration_error_before_connecting(
    spawn: Spawn, command: tuple[str, ...]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # nothing listens on NATS port 1: it must fail before getting that far
        proc = spawn(
            *command, "--nats-url", "nats://127.0.0.1:1",
            "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
        )  # fmt: skip
        assert await proc.exit_code(15) == EXIT_CONFIG, proc.output()
    assert f"metrics port 127.0.0.1:{port}" in proc.output()


async def test_the_scheduler_reports_its_lead_and_counts_its_fires(
    spawn: Spawn, js: JetStreamContext, nats_url: str, namespace: str, target: dict[str, str]
) -> None:
    port = free_port()
    proc = spawn(
        NAQ, "scheduler", "--nats-url", nats_url, "--namespace", namespace,
        "--scheduler-lock-ttl", "2", "--scheduler-lock-renew-interval", "0.5",
        "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
    )  # fmt: skip
    await proc.line("metrics at")

    async def leads() -> bool:
        return value(await scrape(port), "naq_scheduler_leader") == 1

    await until(leads, 15, "the scheduler to lead")
    await schedule(jobs.add, 1, 2, interval=1, repeat=3, queue_name="ticks", **target)

    async def fired_three() -> bool:
        return value(await scrape(port), "naq_scheduler_fires_total", queue="ticks") == 3

    await until(fired_three, 20, "3 fires counted")

    async def three_runs() -> bool:  # nothing consumes the stream: it holds the runs fired
        return await job_count(js, namespace) == 3

    await until(three_runs, 10, "3 runs in the stream")
    text = await scrape(port)
    assert value(text, "naq_scheduler_fires_total", queue="ticks") == 3
    assert value(text, "naq_scheduler_leader") == 1
    assert value(text, "naq_reconnects_total") == 0
