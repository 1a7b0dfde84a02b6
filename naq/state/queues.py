"""What the server knows about a namespace's queues: which exist, and how many jobs
wait, run, failed or are delayed on each.

Read-side only: nothing here writes, creates a consumer, or polls. Every number comes
from the server when asked, from what naq keeps anyway:

- a queue is a durable pull consumer on the job stream, named after the queue and
  filtered on its subjects (``naq.transport.declare.ensure_consumer``): the consumer's
  counts are the queue's waiting, running and redelivered jobs;
- the failed stream has one subject per queue, so its per-subject counts are the
  failed jobs of each queue;
- a delayed job's subject names no queue (``{ns}.sched.{job_id}``): only its
  ``Nats-Schedule-Target`` header does, so counting them per queue reads each one
  (see :func:`scheduled_counts` for the cost).

The public calls, with connection handling and ``*_sync`` twins, are
``naq.producer.info``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from nats.js.api import ConsumerInfo, StreamInfo
from nats.js.errors import NotFoundError

from naq.errors import ConfigurationError, QueueNotFound
from naq.settings import validate_name
from naq.state.held import bucket as held_bucket, unpack_held
from naq.transport.connect import Client
from naq.transport.kv import get_value
from naq.transport.names import (
    SCHEDULE_HEADER,
    SCHEDULE_TARGET_HEADER,
    Layout,
    nasq_namespace_of,
)
from naq.transport.streams import subject_counts
from naq.wire import BadMessage, decode_job

READ_CONCURRENCY = 64
"""Delayed jobs read at once: enough to hide round trips, few enough not to flood."""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue's counts, read from the server at one moment (each a separate read,
    so under load they need not add up exactly)."""

    name: str
    waiting: int
    """Jobs ready to run that no supervisor holds yet."""
    running: int
    """Jobs delivered and not yet settled: running now, or waiting out a retry delay
    (a ``nak`` with a delay keeps the job pending on the server until it comes back)."""
    redelivered: int
    """Of the pending jobs, those delivered more than once (retried, handed back by a
    stopping supervisor, or whose worker died)."""
    failed: int
    """Jobs that failed for good and are kept in the failed stream (see ``naq failed``)."""
    scheduled: int
    """Delayed jobs (``enqueue_at``/``enqueue_in``) that will move to this queue when due."""
    consumers: int
    """Pull requests open on the queue: each supervisor with free slots keeps one, so
    this is how many supervisors are asking for this queue's jobs right now."""


async def list_queues(client: Client, layout: Layout) -> list[str]:
    """The namespace's queues, sorted: those a supervisor has served (each has its
    durable consumer from then on). Jobs enqueued to a queue nobody has served yet
    wait in the stream without one; :func:`queue_info` still finds them by name."""
    return sorted(await _queue_consumers(client, layout))


async def queue_info(client: Client, layout: Layout, name: str) -> QueueInfo:
    """One queue's counts; ``QueueNotFound`` when the namespace knows nothing of it.

    Costs a consumer listing, one stream info on each stream, and the reads of
    :func:`scheduled_counts`.
    """
    [info] = await queues_info(client, layout, [name])
    return info


async def queues_info(
    client: Client, layout: Layout, names: Sequence[str] | None = None
) -> list[QueueInfo]:
    """The counts of ``names`` (every queue of :func:`list_queues` with None), in order.

    For many queues at once: the consumers, the failed counts and the delayed jobs are
    read once for all of them, where a :func:`queue_info` per queue would read every
    delayed job again for each. An unknown name raises ``QueueNotFound``; a bad one
    ``ConfigurationError``, before anything is read.
    """
    wanted = None if names is None else [validate_name("queue", name) for name in names]
    consumers = await _queue_consumers(client, layout)
    failed = await failed_counts(client, layout)
    scheduled = await scheduled_counts(client, layout)
    infos = []
    for name in sorted(consumers) if wanted is None else wanted:
        consumer = consumers.get(name)
        if consumer is not None:
            infos.append(
                QueueInfo(
                    name,
                    waiting=consumer.num_pending or 0,
                    running=consumer.num_ack_pending or 0,
                    redelivered=consumer.num_redelivered or 0,
                    failed=failed[name],
                    scheduled=scheduled[name],
                    consumers=consumer.num_waiting or 0,
                )
            )
            continue
        # Never served: no consumer counts for it, but its jobs wait in the stream.
        waiting = sum(
            (await subject_counts(client, layout.stream, layout.queue_subjects(name))).values()
        )
        if not (waiting or failed[name] or scheduled[name]):
            raise QueueNotFound(f"no queue {name!r} in namespace {layout.namespace}")
        infos.append(QueueInfo(name, waiting, 0, 0, failed[name], scheduled[name], 0))
    return infos


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job waiting in the job stream (ready, or delayed until ``due``), read from its
    metadata line only: nothing is unpickled."""

    seq: int
    job_id: str | None
    """None for a message that is not a readable job."""
    function: str | None
    queue: str | None
    enqueued_at: float | None
    due: str | None
    """A delayed job's schedule (the server's ``Nats-Schedule``, ``@at <time>``)."""
    body: bytes


async def page_stored_jobs(
    client: Client,
    layout: Layout,
    queue: str | None = None,
    *,
    delayed: bool = False,
    function: str | None = None,
    after: int = 0,
    limit: int = 50,
    max_scan: int = 2000,
) -> tuple[list[StoredJob], int | None]:
    """Jobs waiting in the job stream, oldest first, from stream sequence ``after + 1``:
    ready ones of ``queue`` (every queue with None), or the delayed ones (``delayed``,
    whose queue is read from their target). Returns them and the ``after`` of the
    next page (None: no more).

    One message read per job (the stream's "next message on this subject" read): the
    job stream is a work queue, which refuses the ack-less consumer a scan uses. At
    most ``max_scan`` messages are read for a page, whatever ``function`` filters out.
    """
    if delayed:
        subject = layout.sched_subjects
    elif queue is None:
        subject = layout.every_queue_subjects
    else:
        subject = layout.queue_subjects(validate_name("queue", queue))
    found: list[StoredJob] = []
    seq = after
    for _ in range(max_scan):
        try:
            msg = await client.js.get_msg(layout.stream, seq + 1, subject=subject, next=True)
        except NotFoundError:
            return found, None
        seq = msg.seq or seq + 1
        job = _stored(layout, seq, msg.data or b"", msg.headers or {})
        if delayed and queue is not None and job.queue != queue:
            continue
        if function is not None and job.function != function:
            continue
        found.append(job)
        if len(found) == limit:
            break
    return found, seq


def _stored(layout: Layout, seq: int, body: bytes, headers: dict[str, str]) -> StoredJob:
    try:
        meta, _ = decode_job(body)
    except BadMessage:
        return StoredJob(seq, None, None, None, None, headers.get(SCHEDULE_HEADER), body)
    target = headers.get(SCHEDULE_TARGET_HEADER)
    return StoredJob(
        seq,
        meta.job_id,
        meta.function,
        layout.queue_of(target) if target else meta.queue,
        meta.enqueue_time,
        headers.get(SCHEDULE_HEADER),
        body,
    )


async def stored_job(client: Client, layout: Layout, job_id: str) -> StoredJob | None:
    """The job's message while it is in the job stream (ready, delayed, or on its held
    subject) or held in the deps bucket for its dependencies; None once it left."""
    subjects = await subject_counts(client, layout.stream, layout.any_queue_subject(job_id))
    candidates = [*subjects, layout.sched_subject(job_id), layout.held_subject(job_id)]
    for subject in candidates:
        try:
            msg = await client.js.get_last_msg(layout.stream, subject)
        except NotFoundError:
            continue
        return _stored(layout, msg.seq or 0, msg.data or b"", msg.headers or {})
    value = await get_value(await held_bucket(client, layout), layout.held_key(job_id))
    if value:
        head, body = unpack_held(value)
        return _stored(layout, 0, body, {str(k): str(v) for k, v in head["headers"].items()})
    return None


@dataclass(frozen=True, slots=True)
class DurableQueueInfo:
    """A durable NASQueue namespace's store: messages and bytes kept, and its readers."""

    namespace: str
    messages: int
    bytes: int
    consumers: int


async def durable_queues(client: Client) -> list[DurableQueueInfo]:
    """Every durable NASQueue namespace on the server with its size: the server's list
    of streams, read in pages (one request per 256 streams), nothing per stream."""
    found = []
    async for info in _streams(client):
        namespace = nasq_namespace_of(info.config.name or "")
        if namespace is not None:
            state = info.state
            found.append(
                DurableQueueInfo(namespace, state.messages, state.bytes, state.consumer_count)
            )
    return sorted(found, key=lambda q: q.namespace)


async def _streams(client: Client) -> AsyncIterator[StreamInfo]:
    """Every stream's info (the server lists them in pages)."""
    seen = 0
    while page := await client.js.streams_info(offset=seen):
        seen += len(page)
        for info in page:
            yield info


async def failed_counts(client: Client, layout: Layout) -> Counter[str]:
    """Failed jobs per queue: the failed stream's per-subject counts (one request per
    100,000 queues), nothing read per job."""
    failed = Counter[str]()
    for subject, count in (
        await subject_counts(client, layout.failed_stream, layout.failed_subject(None))
    ).items():
        if (queue := layout.failed_queue_of(subject)) is not None:
            failed[queue] += count
    return failed


async def delivered_counts(client: Client, layout: Layout) -> dict[str, int]:
    """Per queue, the jobs its consumer delivered so far (redeliveries included): a
    counter the server keeps, whose change over time is the queue's rate (the
    dashboard's chart). One consumer listing, like :func:`list_queues`."""
    return {
        name: info.delivered.consumer_seq if info.delivered else 0
        for name, info in (await _queue_consumers(client, layout)).items()
    }


async def scheduled_counts(client: Client, layout: Layout) -> Counter[str]:
    """Delayed jobs per target queue.

    The cost: one stream info listing the delayed jobs' subjects (about 50 bytes
    each), then one message read per delayed job, ``READ_CONCURRENCY`` at a time,
    payload included, since only the ``Nats-Schedule-Target`` header names the queue
    and the server cannot filter on a header. So 10,000 delayed jobs are 10,000
    round trips. The job stream is a work queue, which refuses the ack-less consumer
    ``naq.transport.streams.scan`` reads with, and an acking one would conflict with
    any other reader doing the same at once; single reads need no consumer at all.
    A delayed job that fires or is cancelled between the listing and its read is
    not counted.
    """
    subjects = await subject_counts(client, layout.stream, layout.sched_subjects)
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def target_queue(subject: str) -> str | None:
        async with gate:
            try:
                msg = await client.js.get_last_msg(layout.stream, subject)
            except NotFoundError:  # fired or cancelled since it was listed
                return None
        return layout.queue_of((msg.headers or {}).get(SCHEDULE_TARGET_HEADER, ""))

    targets = await asyncio.gather(*(target_queue(subject) for subject in subjects))
    return Counter(queue for queue in targets if queue is not None)


def _queue_of_consumer(layout: Layout, info: ConsumerInfo) -> str | None:
    """The queue a consumer serves, if it is a queue's: durable, pulled, named after the
    queue and filtered on its subjects (anything else someone added to the stream is
    not a queue)."""
    config = info.config
    if config.durable_name != info.name or config.deliver_subject:
        return None
    try:
        subjects = layout.queue_subjects(info.name)
    except ConfigurationError:  # a name no queue can have
        return None
    return info.name if config.filter_subject == subjects else None


async def _queue_consumers(client: Client, layout: Layout) -> dict[str, ConsumerInfo]:
    """Every queue's consumer info, by queue name (the server lists them in pages)."""
    found: dict[str, ConsumerInfo] = {}
    seen = 0
    while True:
        try:
            page = await client.js.consumers_info(layout.stream, offset=seen)
        except NotFoundError:  # the stream is gone (deleted behind naq's back)
            return found
        if not page:
            return found
        seen += len(page)
        for info in page:
            if (queue := _queue_of_consumer(layout, info)) is not None:
                found[queue] = info
