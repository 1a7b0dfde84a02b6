"""Where a job is: ``fetch_job_status`` -> queued, scheduled, running, finished, failed, cancelled.

Status tracking adds no write to a job's normal path. It is read, when asked, from
what naq keeps anyway:

1. the results KV: finished, failed, cancelled (final), or a note left by a retry
   or an interruption (the job waits to run again: queued);
2. the workers KV: each heartbeat lists the jobs running under it (so a job shows as
   running at most one heartbeat interval after it started);
3. the job stream: one subject per job, so a waiting job is one lookup away; its
   ``sched`` subject holds a delayed job;
4. the dependency records: a job held until its dependencies finish is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from naq.errors import JobNotFound
from naq.state.held import bucket as deps_bucket, read_depends_on, unpack_held
from naq.state.store import read_record
from naq.state.workers import list_workers
from naq.transport.connect import Client
from naq.transport.kv import get_value
from naq.transport.names import Layout
from naq.transport.retry import retry
from naq.wire import BadMessage, decode_job

Status = Literal["queued", "scheduled", "running", "finished", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    status: Status
    attempt: int = 0
    """Runs so far that count against max_retries (0: not run yet)."""
    queue: str | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    error: str | None = None
    waiting_for: tuple[str, ...] = field(default=())
    """Dependencies not finished yet, for a job held by ``depends_on``."""


async def job_status(client: Client, layout: Layout, job_id: str) -> JobStatus:
    record = await read_record(client, layout, job_id)
    if record is not None and record.final:
        return JobStatus(
            job_id,
            record.status,  # type: ignore[arg-type]  # final statuses are Status values
            record.attempt,
            record.queue or None,
            record.enqueued_at or None,
            record.started_at or None,
            record.finished_at,
            record.worker or None,
            record.error,
        )
    for worker in await list_workers(client, layout):
        for running in worker.get("running", ()):
            if running["job_id"] == job_id:
                return JobStatus(
                    job_id,
                    "running",
                    running["attempt"],
                    running["queue"],
                    running["enqueued_at"],
                    running["started_at"],
                    worker=worker["id"],
                )
    if record is not None:  # a retry or an interruption: waiting for its next run
        return JobStatus(
            job_id,
            "queued",
            record.attempt,
            record.queue or None,
            record.enqueued_at or None,
            record.started_at or None,
            worker=record.worker or None,
            error=record.error,
        )
    # Read in the order writers move a job: held -> stream -> record. A release
    # publishes before it drops the held entry, and a supervisor stores the record
    # before it acks, so a job moving on while we look is still found somewhere.
    held = await held_status(client, layout, job_id)
    if held is not None:
        return held
    waiting = await _waiting(client, layout, job_id)
    if waiting is not None:
        return waiting
    again = await read_record(client, layout, job_id)
    if again is not None:
        return await job_status(client, layout, job_id)
    raise JobNotFound(f"no job {job_id} in namespace {layout.namespace}")


async def held_status(client: Client, layout: Layout, job_id: str) -> JobStatus | None:
    """The status of a job held for its dependencies; None if it is not held."""
    held = await get_value(await deps_bucket(client, layout), layout.held_key(job_id))
    if not held:
        return None
    head, _ = unpack_held(held)
    return JobStatus(
        job_id,
        "queued",
        queue=head["queue"],
        enqueued_at=head["t"],
        waiting_for=tuple(head["waiting"]),
    )


async def _waiting(client: Client, layout: Layout, job_id: str) -> JobStatus | None:
    """A job still in the stream: on its queue's subject, on its schedule, or on its
    held subject (enqueued with dependencies, not yet taken in by a supervisor)."""
    info = await retry(
        lambda: client.js.stream_info(
            layout.stream, subjects_filter=layout.any_queue_subject(job_id)
        ),
        what="reading the job stream",
        nc=client.nc,
    )
    subjects = list(info.state.subjects or {})
    status: Status = "queued"
    if not subjects:
        where: tuple[tuple[str, Status], ...] = (
            (layout.sched_subject(job_id), "scheduled"),
            (layout.held_subject(job_id), "queued"),
        )
        for subject, found in where:
            try:
                await _last_msg(client, layout, subject)
            except NotFoundError:
                continue
            subjects, status = [subject], found
            break
        else:
            return None
    try:
        msg = await _last_msg(client, layout, subjects[0])
    except NotFoundError:  # acked between the two reads: it has moved on
        return None
    waiting = tuple(read_depends_on(msg.headers))
    try:
        meta, _ = decode_job(msg.data or b"")
    except BadMessage:
        return JobStatus(job_id, status, waiting_for=waiting)
    return JobStatus(
        job_id, status, queue=meta.queue, enqueued_at=meta.enqueue_time, waiting_for=waiting
    )


async def _last_msg(client: Client, layout: Layout, subject: str) -> RawStreamMsg:
    return await retry(
        lambda: client.js.get_last_msg(layout.stream, subject),
        what=f"reading {subject}",
        nc=client.nc,
    )
