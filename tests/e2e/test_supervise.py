"""``naq-supervise`` and ``naq worker|purge|workers`` as real processes, with real signals."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from naq import Queue
from naq.settings import Settings
from tests import jobs
from tests.e2e import jobs as e2e_jobs
from tests.e2e.conftest import (
    NAQ,
    NAQ_SUPERVISE,
    READY,
    Spawn,
    SuperviseFn,
    stream_name,
    worker_record,
)

pytestmark = pytest.mark.e2e


async def test_supervise_runs_enqueued_jobs(queue: Queue, supervise: SuperviseFn) -> None:
    proc = supervise()
    await proc.line(READY)
    add = await queue.enqueue(jobs.add, 2, 3)
    async_add = await queue.enqueue(jobs.async_add, 4, 5)
    echo = await queue.enqueue(jobs.echo, "a", key="b")
    assert await queue.fetch_result(add.job_id, timeout=10) == 5
    assert await queue.fetch_result(async_add.job_id, timeout=10) == 9
    assert await queue.fetch_result(echo.job_id, timeout=10) == [["a"], {"key": "b"}]


async def test_sigterm_lets_the_running_job_finish_and_leaves_waiting_jobs(
    queue: Queue, supervise: SuperviseFn, js: JetStreamContext, namespace: str
) -> None:
    grace = 10.0
    proc = supervise("--concurrency", "1", "--shutdown-grace", str(grace))
    worker_id = (await proc.line(READY))["id"]
    slow = await queue.enqueue(jobs.sleep, 2)
    waiting = [await queue.enqueue(jobs.add, i, i) for i in range(3)]
    await worker_record(js, namespace, worker_id, lambda r: r["busy"] == 1)

    proc.send(signal.SIGTERM)
    stopped_at = time.monotonic()
    await proc.line(r"stopping: no new jobs; 1 running")
    assert await proc.exit_code(grace + 5) == 0, proc.output()
    assert time.monotonic() - stopped_at < grace, "the drain outlasted the grace period"

    assert await queue.fetch_result(slow.job_id, timeout=1) == 2, "the running job was lost"
    assert (await js.stream_info(stream_name(namespace))).state.messages == 3
    info = await js.consumer_info(stream_name(namespace), "default")
    # Not delivered yet, or held in the look-ahead and handed back (nak'd) at the stop:
    # the server counts that one as pending an ack until it is redelivered.
    assert info.num_pending + info.num_ack_pending == 3, proc.output()
    assert info.num_ack_pending <= Settings().lookahead, proc.output()  # -c 1: its places

    second = supervise()
    await second.line(READY)
    # All within 10 s, far below ack_wait (60 s): the held one was handed back at once.
    results = await queue.fetch_results([j.job_id for j in waiting], timeout=10)
    assert results == {j.job_id: 2 * i for i, j in enumerate(waiting)}


async def test_jobs_enqueued_while_draining_are_left_for_others(
    queue: Queue, supervise: SuperviseFn, js: JetStreamContext, namespace: str
) -> None:
    """A free slot keeps a pull request open; jobs that reach it during the drain must not
    sit unacknowledged until ``ack_wait`` (60s) runs out."""
    proc = supervise("--concurrency", "2", "--shutdown-grace", "10")
    worker_id = (await proc.line(READY))["id"]
    await queue.enqueue(jobs.sleep, 1)
    await worker_record(js, namespace, worker_id, lambda r: r["busy"] == 1)

    proc.send(signal.SIGTERM)
    await proc.line(r"stopping: no new jobs; 1 running")
    late = [await queue.enqueue(jobs.add, i, i) for i in range(3)]
    assert await proc.exit_code(15) == 0, proc.output()

    second = supervise()
    await second.line(READY)
    results = await queue.fetch_results([j.job_id for j in late], timeout=10)
    assert results == {j.job_id: 2 * i for i, j in enumerate(late)}


async def test_second_signal_hands_the_running_job_back(
    queue: Queue, supervise: SuperviseFn, js: JetStreamContext, namespace: str, tmp_path: Path
) -> None:
    proc = supervise("--shutdown-grace", "30")
    worker_id = (await proc.line(READY))["id"]
    job = await queue.enqueue(e2e_jobs.slow_first_run, str(tmp_path / "ran"), 30)
    await worker_record(js, namespace, worker_id, lambda r: r["busy"] == 1)

    proc.send(signal.SIGTERM)
    await proc.line(r"stopping: no new jobs; 1 running get 30s")
    proc.send(signal.SIGINT)
    started = time.monotonic()
    code = await proc.exit_code(10)
    assert code >= 0, f"killed by signal {-code}, not a clean exit\n{proc.output()}"
    assert time.monotonic() - started < 5, "the second signal did not stop it promptly"
    assert proc.matching(f"job {job.job_id} cut short by shutdown: handed back"), proc.output()

    assert (await js.stream_info(stream_name(namespace))).state.messages == 1, "job left the stream"

    # Handed back means runnable now: a job merely abandoned would wait out ack_wait (60s).
    second = supervise()
    await second.line(READY)
    assert await queue.fetch_result(job.job_id, timeout=10) == "second run"


@pytest.mark.parametrize(
    "command",
    [[NAQ_SUPERVISE], [NAQ, "worker", "envq"]],
    ids=["naq-supervise", "naq-worker"],
)
async def test_configured_by_environment_alone(
    spawn: Spawn,
    js: JetStreamContext,
    nats_url: str,
    namespace: str,
    settings: Settings,
    command: list[str],
) -> None:
    proc = spawn(
        *command,
        NAQ_NATS_URL=nats_url,
        NAQ_NAMESPACE=namespace,
        NAQ_CONCURRENCY="3",
        NAQ_EXECUTOR="thread",
        NAQ_DEFAULT_QUEUE="envq",
        NAQ_HEARTBEAT_INTERVAL="0.2",
        NAQ_SHUTDOWN_GRACE="1",
        NAQ_LOG_LEVEL="DEBUG",
    )
    worker_id = (await proc.line(READY))["id"]
    record = await worker_record(js, namespace, worker_id)
    assert (record["executor"], record["slots"], record["queues"]) == ("thread", 3, ["envq"])
    assert proc.matching(r" DEBUG "), "NAQ_LOG_LEVEL=DEBUG was not applied"

    async with Queue("envq", settings=settings) as envq:
        job = await envq.enqueue(jobs.add, 20, 22)
        assert await envq.fetch_result(job.job_id, timeout=10) == 42

    proc.send(signal.SIGTERM)
    await proc.line(r"stopping: no new jobs; 0 running get 1s")
    assert await proc.exit_code(10) == 0, proc.output()


async def test_log_level_from_environment_is_case_insensitive(
    spawn: Spawn, nats_url: str, namespace: str
) -> None:
    """``Settings.from_env`` upper-cases ``NAQ_LOG_LEVEL``; the CLI must agree with it."""
    proc = spawn(
        NAQ_SUPERVISE, NAQ_NATS_URL=nats_url, NAQ_NAMESPACE=namespace, NAQ_LOG_LEVEL="debug"
    )
    await proc.line(READY)
    assert proc.matching(r" DEBUG "), proc.output()
    proc.send(signal.SIGTERM)
    assert await proc.exit_code(10) == 0, proc.output()


@pytest.mark.parametrize("how", ["flags", "env"])
async def test_purge_removes_waiting_jobs(
    spawn: Spawn,
    js: JetStreamContext,
    nats_url: str,
    namespace: str,
    settings: Settings,
    how: str,
) -> None:
    async with Queue("purgeme", settings=settings) as purgeme, Queue(settings=settings) as other:
        for i in range(3):
            await purgeme.enqueue(jobs.add, i, i)
        kept = await other.enqueue(jobs.noop)
    if how == "flags":
        proc = spawn(NAQ, "purge", "purgeme", "--nats-url", nats_url, "--namespace", namespace)
    else:
        proc = spawn(NAQ, "purge", "purgeme", NAQ_NATS_URL=nats_url, NAQ_NAMESPACE=namespace)
    assert await proc.exit_code(15) == 0, proc.output()
    assert proc.lines["stdout"] == ["purgeme: 3 jobs removed"], proc.output()
    info = await js.stream_info(stream_name(namespace), subjects_filter=">")
    assert list(info.state.subjects or {}) == [f"{namespace}.jobs.default.{kept.job_id}"], (
        "purged the wrong jobs"
    )


async def test_workers_lists_a_live_supervisor(
    spawn: Spawn, supervise: SuperviseFn, nats_url: str, namespace: str
) -> None:
    sup = supervise("--executor", "thread", "--concurrency", "2", "default", "other")
    worker_id = (await sup.line(READY))["id"]
    target = ["--nats-url", nats_url, "--namespace", namespace]

    listing = spawn(NAQ, "workers", *target)
    assert await listing.exit_code(15) == 0, listing.output()
    assert len(listing.lines["stdout"]) == 1, listing.output()
    line = listing.lines["stdout"][0]
    assert line.startswith(f"{worker_id}  thread 0/2 busy  queues=default,other"), line

    as_json = spawn(NAQ, "workers", "--json", *target)
    assert await as_json.exit_code(15) == 0, as_json.output()
    records = [json.loads(text) for text in as_json.lines["stdout"]]
    assert [(r["id"], r["pid"], r["slots"]) for r in records] == [(worker_id, sup.pid, 2)]

    sup.send(signal.SIGTERM)
    assert await sup.exit_code(10) == 0, sup.output()
    gone = spawn(NAQ, "workers", *target)
    assert await gone.exit_code(15) == 0, gone.output()
    assert gone.lines["stdout"] == ["no live workers"], gone.output()
