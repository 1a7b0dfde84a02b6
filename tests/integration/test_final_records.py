"""A finished, failed or cancelled record is never overwritten (naq.state.store
store_unless_final), and the happy path pays no extra round trip for it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from naq import Queue
from naq.middleware import JobContext, Middleware
from naq.state import cancel as cancel_module, record as records
from naq.state.record import RunFacts
from naq.state.store import read_record, store_result
from naq.transport.names import Layout, kv_stream
from tests import jobs
from tests.conftest import StartSupervisor


class Started(Middleware):
    """Tells the test a job started: ``before_job`` runs as the job enters the running
    map, with nothing awaited in between."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def before_job(self, job: JobContext) -> None:
        self.event.set()


async def _acks(nc: Any, namespace: str) -> Any:
    """A core subscription hearing every ack the supervisors send for the job stream."""
    return await nc.subscribe(f"$JS.ACK.{Layout(namespace).stream}.>")


async def _next_ack(sub: Any) -> Any:
    async with asyncio.timeout(15):
        while True:
            msg = await sub.next_msg(timeout=15)
            if msg.data in (b"", b"+ACK"):  # nats-py acks with an empty body
                return msg


async def test_a_job_cancelled_while_it_runs_stays_cancelled_when_it_finishes(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    started = Started()
    sup = await start_supervisor(middleware=[started])
    acks = await _acks(nc, namespace)
    gate = tmp_path / "gate"
    job = await queue.enqueue(jobs.wait_for_file, str(gate), None, 30)
    await asyncio.wait_for(started.event.wait(), 10)
    assert job.job_id in sup.running_jobs()
    # The cancellation is recorded while the job runs, and its broadcast never reaches
    # this supervisor (it arrives too late): the record alone must keep it.
    client = await queue.connection()
    layout = Layout(namespace)
    cancelled = records.cancelled(job.job_id, RunFacts(queue="default"), "cancelled")
    await store_result(client, layout, cancelled, 60)
    gate.touch()
    await _next_ack(acks)  # the job message is acked: the job is over
    record = await read_record(client, layout, job.job_id)
    assert record is not None
    assert record.status == "cancelled"


async def test_a_cancel_racing_the_finish_keeps_finished(
    queue: Queue,
    start_supervisor: StartSupervisor,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = Started()
    await start_supervisor(middleware=[started])
    gate = tmp_path / "gate"
    job = await queue.enqueue(jobs.wait_for_file, str(gate), None, 30)
    real_status = cancel_module.job_status

    async def status_then_finish(*args: Any) -> Any:
        status = await real_status(*args)  # read while it runs
        gate.touch()
        await queue.fetch_result(job.job_id, timeout=15)  # it finishes meanwhile
        return status

    monkeypatch.setattr(cancel_module, "job_status", status_then_finish)
    await asyncio.wait_for(started.event.wait(), 10)
    assert await queue.cancel(job.job_id) is False
    record = await read_record(await queue.connection(), Layout(namespace), job.job_id)
    assert record is not None
    assert record.status == "finished"


async def test_the_happy_path_writes_once_expecting_no_record_and_reads_nothing(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    layout = Layout(namespace)
    await start_supervisor()
    reads = await nc.subscribe(f"$JS.API.DIRECT.GET.{kv_stream(layout.results_bucket)}.>")
    reads_plain = await nc.subscribe(f"$JS.API.DIRECT.GET.{kv_stream(layout.results_bucket)}")
    acks = await _acks(nc, namespace)
    written = await nc.subscribe(layout.kv_subject(layout.results_bucket, "*"))
    job = await queue.enqueue(jobs.add, 1, 2)
    write = await written.next_msg(timeout=15)
    assert write.subject.endswith(job.job_id)
    assert write.headers["Nats-Expected-Last-Subject-Sequence"] == "0"
    await _next_ack(acks)
    await nc.flush()
    assert reads.pending_msgs == 0, "the supervisor read the record on a first delivery"
    assert reads_plain.pending_msgs == 0, "the supervisor read the record on a first delivery"
