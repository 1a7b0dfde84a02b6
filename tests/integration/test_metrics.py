"""A supervisor's metrics against a real server: the consumer info behind the queue
gauges is read at most once per TTL, labels carry no job data, the process executor
is counted without a multiprocess mode, and a failing metric never fails a job."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from naq import Queue
from naq.settings import Settings
from naq.transport.names import Layout, consumer_info_api_subject
from naq.transport.server import free_port
from tests import jobs
from tests.conftest import StartSupervisor, until
from tests.metrics import named, samples, scrape, value

JOB = {"queue": "default", "executor": "asyncio"}


def metrics_on(**overrides: Any) -> dict[str, Any]:
    return {"metrics_port": free_port(), "metrics_host": "127.0.0.1", **overrides}


async def test_a_scrape_reads_the_consumer_info_at_most_once_per_ttl(
    settings: Settings, start_supervisor: StartSupervisor, nc: Any
) -> None:
    # max_memory of one byte: the supervisor pulls nothing, so the jobs stay queued;
    # a long ack_wait keeps the lease loop's own consumer reads out of the way.
    sup = await start_supervisor(**metrics_on(max_memory=1, ack_wait=300))
    layout = Layout(settings.namespace)
    reads: list[bytes] = []

    async def heard(msg: Any) -> None:
        reads.append(msg.data)

    await nc.subscribe(consumer_info_api_subject(layout.stream, "default"), cb=heard)
    await nc.flush()
    async with Queue(settings=settings) as queue:
        for i in range(3):
            await queue.enqueue(jobs.add, i, i)
    port = sup.settings.metrics_port

    texts = await asyncio.gather(*(scrape(port) for _ in range(4)))  # at once: one read
    texts += [await scrape(port), await scrape(port)]  # within the TTL: none
    await nc.flush()
    assert len(reads) == 1
    assert {value(t, "naq_queue_backlog", queue="default") for t in texts} == {3}

    async with Queue(settings=settings) as queue:
        await queue.enqueue(jobs.add, 9, 9)
    assert value(await scrape(port), "naq_queue_backlog", queue="default") == 3  # cached
    stats = sup._consumer_stats
    assert stats is not None
    stats.ttl = 0.0  # the TTL over: the next scrape reads again
    assert value(await scrape(port), "naq_queue_backlog", queue="default") == 4
    await nc.flush()
    assert len(reads) == 2


async def test_labels_never_carry_exception_messages_or_job_arguments(
    settings: Settings, start_supervisor: StartSupervisor
) -> None:
    """Counted in the supervisor with the process executor (no multiprocess mode):
    failures by class only, the children's RSS by slot."""
    sup = await start_supervisor(executor="process", concurrency=2, **metrics_on())
    async with Queue(settings=settings) as queue:
        failing = [
            await queue.enqueue(jobs.fail, "token-AAA"),
            await queue.enqueue(jobs.boom, "token-BBB"),
            await queue.enqueue(jobs.sleep, 30, timeout=0.5),
            await queue.enqueue(jobs.echo, "token-CCC", key="token-DDD"),
        ]
        for job in failing:
            await queue.fetch_results([job.job_id], timeout=30)
    await sup.wait_until(lambda c: c.processed + c.failed == 4)
    text = await scrape(sup.settings.metrics_port)
    assert "token-" not in text
    assert named(text, "naq_jobs_failed_total") == {
        frozenset({"queue": "default", "executor": "process", "exception": name}.items()): 1
        for name in ("ValueError", "tests.jobs.Boom", "TimeoutError")
    }
    allowed = {
        "queue": {"default"},
        "executor": {"process"},
        "exception": {"ValueError", "tests.jobs.Boom", "TimeoutError"},
        "slot": {"0", "1"},
    }
    for (name, labels), _ in samples(text).items():
        for key, label in labels:
            if key != "le":  # histogram buckets
                assert label in allowed[key], (name, key, label)

    # A child is listed while it lives (the timed-out job's child was killed, and its
    # slot's next child is taken on at its next job).
    children = named(text, "naq_child_rss_bytes")
    assert children
    assert {dict(labels)["slot"] for labels in children} <= {"0", "1"}
    assert all(rss > 1_000_000 for rss in children.values())


class Exploding:
    """Stands in for a metric whose every use raises."""

    def labels(self, *args: Any) -> Any:
        raise RuntimeError("metric broken")

    def inc(self, *args: Any) -> None:
        raise RuntimeError("metric broken")


async def test_a_failing_metric_never_fails_a_job(
    settings: Settings,
    start_supervisor: StartSupervisor,
    caplog: pytest.LogCaptureFixture,
    js: Any,
) -> None:
    """Every hook's metric and what the supervisor feeds (a dead letter no hook sees)
    raise: the jobs still finish, the unreadable message is still dead-lettered, and
    the scrape still answers."""
    sup = await start_supervisor(**metrics_on())
    metrics = sup.metrics
    assert metrics is not None
    for name in ("started", "failed", "succeeded", "retried", "dead_lettered", "duration"):
        setattr(metrics, name, Exploding())
    layout = Layout(settings.namespace)
    with caplog.at_level(logging.ERROR):
        async with Queue(settings=settings) as queue:
            ok = await queue.enqueue(jobs.add, 2, 3)
            assert await queue.fetch_result(ok.job_id, timeout=10) == 5
            bad = await queue.enqueue(jobs.fail, "x")
            await queue.fetch_results([bad.job_id], timeout=10)
        await js.publish(layout.job_subject("default", "not-a-job"), b"garbage")
        await until(
            lambda: _failed_count(js, layout, 2), 10, "the failed job and the garbage dead-lettered"
        )
    await sup.wait_until(lambda c: c.processed == 1 and c.failed == 2)
    assert sup.ready.is_set()
    said = [r.getMessage() for r in caplog.records]
    assert any("middleware SupervisorMetrics failed in before_job" in m for m in said)
    assert any("metrics: counting failed; ignored" in m for m in said)
    text = await scrape(sup.settings.metrics_port)
    assert value(text, "naq_jobs_in_progress", queue="default", executor="asyncio") == 0


async def _failed_count(js: Any, layout: Layout, n: int) -> bool:
    info = await js.stream_info(layout.failed_stream)
    return bool(info.state.messages == n)


async def test_a_job_dead_lettered_without_a_run_is_counted(
    settings: Settings, start_supervisor: StartSupervisor, js: Any
) -> None:
    """No hook sees an unreadable message: the supervisor feeds its dead letter."""
    sup = await start_supervisor(**metrics_on())
    layout = Layout(settings.namespace)
    await js.publish(layout.job_subject("default", "not-a-job"), b"garbage")
    await sup.wait_until(lambda c: c.failed == 1)
    text = await scrape(sup.settings.metrics_port)
    labels = {"queue": "default", "executor": "asyncio"}
    assert value(text, "naq_jobs_dead_lettered_total", **labels) == 1
    assert value(text, "naq_jobs_started_total", **labels) is None  # never ran
    assert named(text, "naq_jobs_failed_total") == {}


async def test_the_metrics_port_answers_only_metrics_and_outlives_bad_requests(
    start_supervisor: StartSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    sup = await start_supervisor(**metrics_on())
    caplog.set_level(logging.DEBUG)
    port = sup.settings.metrics_port
    with pytest.raises(AssertionError, match="404"):
        await scrape(port, "/other")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /" + b"x" * 100_000 + b"\r\n\r\n")  # over the line limit
    await writer.drain()
    await reader.read()  # closed on us
    writer.close()
    assert value(await scrape(port), "naq_reconnects_total") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("metrics: a scrape ended early" in r.getMessage() for r in caplog.records)


async def test_a_job_past_max_deliver_is_counted_once_as_dead_lettered(
    settings: Settings, start_supervisor: StartSupervisor, nc: Any, tmp_path: Path
) -> None:
    """The backstop moves it (no hook sees the move): two failed runs, two retries
    asked for, one dead letter."""
    failed = await nc.subscribe(f"{settings.namespace}.failed.>")
    sup = await start_supervisor(**metrics_on(max_deliver=2))
    async with Queue(settings=settings) as queue:
        await queue.enqueue(jobs.fail_with, str(tmp_path / "tries"), "ValueError", max_retries=5)
    await failed.next_msg(timeout=15)
    port = sup.settings.metrics_port

    async def moved() -> bool:  # counted after the advisory is acked
        return value(await scrape(port), "naq_jobs_dead_lettered_total", **JOB) == 1

    await until(moved, 10, "the dead letter counted")
    text = await scrape(port)
    assert named(text, "naq_jobs_failed_total") == {
        frozenset({**JOB, "exception": "ValueError"}.items()): 2
    }
    assert value(text, "naq_jobs_retried_total", **JOB) == 2
