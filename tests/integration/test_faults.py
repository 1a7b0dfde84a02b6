"""Bad input and faults: each gets a clear error, and nothing is lost."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from naq import JobFailed, PayloadTooLarge, Queue, Settings
from naq.serializers import function_ref
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor


async def _dead_letter(nc: Any, namespace: str, publish: bytes) -> Any:
    """Publish ``publish`` on the default queue's jobs subject; return its dead letter."""
    layout = Layout(namespace)
    sub = await nc.subscribe(f"{namespace}.failed.>")
    await nc.jetstream().publish(layout.job_subject("default", "j1"), publish)
    msg = await sub.next_msg(timeout=10)
    await sub.unsubscribe()
    return msg


def _meta(**fields: Any) -> bytes:
    head = {"naq": 1, "id": "j1", "fn": "tests.jobs:add", "q": "default", "ser": "json", "t": 1.0}
    head.update(fields)
    return json.dumps({k: v for k, v in head.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("body", "reason", "job_id"),
    [
        # not a job at all: dead-lettered as it came
        (b"\x00\xffgarbage", "not a naq message", None),
        (_meta(naq=7) + b"\n[[],{}]", "unsupported naq format version 7", None),
        (_meta(fn=None) + b"\n[[],{}]", "lacks 'fn'", None),
        (_meta(id="a.b") + b"\n[[],{}]", "invalid job_id", None),
        # a job that cannot run: dead-lettered, and its waiters get JobFailed
        (_meta(fn="tests.jobs:nope") + b"\n[[1,2],{}]", "has no function 'nope'", "j1"),
        (
            _meta(fn="no_such_module:f") + b"\n[[],{}]",
            "cannot import module 'no_such_module'",
            "j1",
        ),
        (
            _meta(ser="pickle", fn="no_such_module:fn") + b"\n(cno_such_module\nfn\n)}t.",
            "No module named 'no_such_module'",
            "j1",
        ),
        (_meta(ser="pickle") + b"\nnot a pickle", "cannot unpickle", "j1"),
    ],
)
async def test_bad_messages_are_dead_lettered_with_the_reason(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    body: bytes,
    reason: str,
    job_id: str | None,
) -> None:
    await start_supervisor()
    dead = await _dead_letter(nc, namespace, body)
    assert reason in dead.headers["Naq-Reason"]
    assert dead.data == body  # kept whole, so it can be inspected or requeued
    if job_id is not None:
        assert dead.headers["Naq-Job-Id"] == job_id
        with pytest.raises(JobFailed, match=reason.replace("(", r"\(")):
            await queue.fetch_result(job_id, timeout=10)
    job = await queue.enqueue(jobs.add, 1, 1)  # and the supervisor carries on
    assert await queue.fetch_result(job.job_id, timeout=10) == 2


async def test_unpicklable_result_fails_the_job(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    await start_supervisor()
    job = await queue.enqueue(jobs.unpicklable_result)
    with pytest.raises(JobFailed, match="cannot be pickled"):
        await queue.fetch_result(job.job_id, timeout=10)


async def test_json_mode_never_unpickles(
    settings: Settings, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    await start_supervisor(job_serializer="json")
    async with Queue(settings=settings.replace(job_serializer="json")) as jq:
        job = await jq.enqueue(jobs.add, 20, 22)
        assert await jq.fetch_result(job.job_id, timeout=10) == 42
        job = await jq.enqueue(jobs.not_json_result)
        with pytest.raises(JobFailed, match="not JSON serializable"):
            await jq.fetch_result(job.job_id, timeout=10)
    sub = await nc.subscribe(f"{namespace}.failed.>")
    async with Queue(settings=settings) as pq:  # a pickle producer
        job = await pq.enqueue(jobs.add, 1, 2)
    dead = await sub.next_msg(timeout=10)
    assert dead.headers["Naq-Job-Id"] == job.job_id
    assert "never unpickles" in dead.headers["Naq-Reason"]


async def test_oversize_payload_is_refused_before_publishing(
    queue: Queue, nc: Any, namespace: str
) -> None:
    with pytest.raises(PayloadTooLarge, match="max_payload"):
        await queue.enqueue(jobs.echo, b"x" * (2 * 1024 * 1024))
    info = await nc.jetstream().stream_info(Layout(namespace).stream)
    assert info.state.messages == 0


async def test_same_job_id_runs_once(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Any
) -> None:
    marks = str(tmp_path / "runs")
    first = await queue.enqueue(jobs.record_run, marks, job_id="order-42")
    second = await queue.enqueue(jobs.record_run, marks, job_id="order-42")
    assert first.job_id == second.job_id == "order-42"
    info = await nc.jetstream().stream_info(Layout(namespace).stream)
    assert info.state.messages == 1
    await start_supervisor()
    assert await queue.fetch_result("order-42", timeout=10) == 1


def test_function_ref_names_the_job() -> None:
    assert function_ref(jobs.add) == "tests.jobs:add"


async def test_unkept_result_is_never_serialized(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    """With result_ttl=0 nobody reads the value, so an unpicklable one cannot fail the job."""
    sup = await start_supervisor()
    await queue.enqueue(jobs.unpicklable_result, result_ttl=0)
    marker = await queue.enqueue(jobs.add, 1, 1)
    assert await queue.fetch_result(marker.job_id, timeout=10) == 2
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed + c.failed >= 2), 10)
    assert (sup.counters.processed, sup.counters.failed) == (2, 0)
