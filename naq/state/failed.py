"""The failed-job registry: what failed for good, why, and putting it back to run.

These take a connected client; the public functions (``naq.list_failed`` and the
rest, with their ``*_sync`` twins) are ``naq.producer.failed``.

The failed stream (``NAQ_FAILED_{ns}``, subjects ``{ns}.failed.{queue}``) keeps each
failed job's whole message, with the reason, attempts, worker, time and traceback in
headers (``naq.supervisor.settle``). So nothing here decodes a payload or unpickles:
listing reads the metadata line only, and a requeue republishes the bytes as they
were enqueued, job id included, so the job's result lands under the id its producer
already holds.

Why a requeue clears the job's result first: the results KV still holds the failure,
and ``fetch_job_result`` would keep answering with it, also to a caller waiting for
the new run. The marker is written before the job is published, so a fast rerun's
result can never be the one removed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js.errors import APIError, NotFoundError

from naq.errors import ConfigurationError, JobNotFound
from naq.job import validate_job_id
from naq.settings import validate_name
from naq.signing import SIGNATURE_HEADER
from naq.transport.connect import Client
from naq.transport.kv import delete_marker
from naq.transport.names import Layout
from naq.transport.publish import NoStream, Outgoing
from naq.transport.streams import Page, page_back, purge_subject, scan
from naq.wire import BadMessage, decode_job

REQUEUE_CHUNK = 1024
"""Jobs requeued per round, so an error midway leaves at most this many half done."""
RESULT_MARKER_TTL = "60s"
"""The delete marker hides the old failure once written (one value per key); after
that it only takes room, so it expires rather than outliving every requeued job."""
_SHOWN = 5
"""Entries named in an error message before it says "and N more"."""


@dataclass(frozen=True, slots=True)
class FailedJob:
    """One entry of the failed stream.

    ``job_id`` and ``function`` are None for a message that was never a readable job;
    such an entry is known by ``seq`` only and cannot be requeued.
    """

    job_id: str | None
    function: str | None
    queue: str
    reason: str
    traceback: str | None
    attempts: int
    worker: str
    failed_at: float
    seq: int
    body: bytes
    signature: str | None = field(default=None, repr=False)
    """The producer's signature of ``body``, kept so a requeue publishes it as signed."""

    @property
    def ref(self) -> str:
        """How the CLI names the entry: its job id, or ``#seq`` when it has none."""
        return self.job_id if self.job_id is not None else f"#{self.seq}"


def _entry(msg: Msg) -> FailedJob:
    return _fields(
        msg.headers or {},
        msg.data,
        msg.subject,
        msg.metadata.sequence.stream,
        msg.metadata.timestamp.timestamp(),
    )


def _fields(
    headers: dict[str, str], data: bytes, subject: str, seq: int, stored_at: float | None
) -> FailedJob:
    meta = None
    with contextlib.suppress(BadMessage):
        meta, _ = decode_job(data)
    traceback = None
    if raw_tb := headers.get("Naq-Traceback"):
        try:
            traceback = str(json.loads(raw_tb))
        except ValueError:  # written by something else: better shown raw than lost
            traceback = raw_tb
    try:
        failed_at = float(headers["Naq-Failed-At"])
    except (KeyError, ValueError):  # entries from before the header existed
        failed_at = stored_at or 0.0
    try:
        attempts = int(headers.get("Naq-Attempts", "0"))
    except ValueError:
        attempts = 0
    return FailedJob(
        job_id=_job_id(headers.get("Naq-Job-Id") or (meta.job_id if meta is not None else None)),
        function=meta.function if meta is not None else None,
        queue=subject.rsplit(".", 1)[-1],
        reason=headers.get("Naq-Reason", ""),
        traceback=traceback,
        attempts=attempts,
        worker=headers.get("Naq-Worker", ""),
        failed_at=failed_at,
        seq=seq,
        body=data,
        signature=headers.get(SIGNATURE_HEADER),
    )


def _job_id(found: str | None) -> str | None:
    """The entry's job id if it is a valid one: a requeue builds a subject from it, and
    the failed stream may hold what anyone who can publish there wrote."""
    try:
        return None if found is None else validate_job_id(found)
    except ConfigurationError:
        return None


async def _scan(
    client: Client, layout: Layout, queue: str | None, limit: int | None = None
) -> AsyncGenerator[FailedJob]:
    """Every entry, oldest first (the stream keeps entries by limits, not acks).

    Close the iterator (``contextlib.aclosing``) when stopping early, so the scan's
    consumer goes at once.
    """
    async with contextlib.aclosing(
        scan(client, layout.failed_stream, layout.failed_subject(queue), limit=limit)
    ) as messages:
        async for msg in messages:
            yield _entry(msg)


def check_queue(queue: str | None) -> str | None:
    """A queue name, checked (``None``: every queue)."""
    return None if queue is None else validate_name("queue", queue)


def check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise ConfigurationError(f"limit must not be negative, got {limit!r}")
    return limit


def requeue_ids(job_ids: Iterable[str] | None, all: bool) -> list[str] | None:
    """The ids a requeue asks for, checked and without repeats; None with ``all``."""
    if all and job_ids is not None:
        raise ConfigurationError("requeue_failed takes job ids or all=True, not both")
    if not all and job_ids is None:
        raise ConfigurationError("requeue_failed needs the job ids to requeue, or all=True")
    if job_ids is None:
        return None
    # One id given as a string would otherwise be read as its characters.
    ids = [job_ids] if isinstance(job_ids, str) else job_ids
    return list(dict.fromkeys(validate_job_id(job_id) for job_id in ids))


async def list_failed(
    client: Client, layout: Layout, queue: str | None = None, limit: int | None = None
) -> list[FailedJob]:
    """Failed jobs, oldest first: all of them, or one queue's; at most ``limit``."""
    queue = check_queue(queue)
    if check_limit(limit) == 0:
        return []
    async with contextlib.aclosing(_scan(client, layout, queue, limit)) as entries:
        return [entry async for entry in entries]


async def page_failed(
    client: Client,
    layout: Layout,
    queue: str | None = None,
    function: str | None = None,
    before: int | None = None,
    limit: int = 50,
    job_id: str | None = None,
) -> Page[FailedJob]:
    """One page of failed jobs, newest first, below stream sequence ``before``: all of
    them or one queue's (a filter the server applies), of one function or all, of one
    job id or all (filters applied to the entries read, within the bounded scan of
    ``naq.transport.streams.page_back``). For the dashboard: a page reads about a
    page, not the registry."""
    queue = check_queue(queue)

    def keep(msg: Msg) -> FailedJob | None:
        entry = _entry(msg)
        if function is not None and entry.function != function:
            return None
        return entry if job_id is None or entry.job_id == job_id else None

    return await page_back(
        client,
        layout.failed_stream,
        layout.failed_subject(queue),
        keep,
        before=before,
        limit=limit,
    )


async def failed_at(client: Client, layout: Layout, seq: int) -> FailedJob:
    """The failed stream's entry at sequence ``seq`` (one read, whatever the stream
    holds); ``JobNotFound`` when it is gone (requeued, purged, aged out)."""
    try:
        msg = await client.js.get_msg(layout.failed_stream, seq)
    except NotFoundError:
        raise JobNotFound(f"no failed entry #{seq} in namespace {layout.namespace}") from None
    headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    stored_at = msg.time.timestamp() if msg.time else None
    return _fields(headers, msg.data or b"", msg.subject or "", seq, stored_at)


async def get_failed(client: Client, layout: Layout, job_id: str) -> FailedJob:
    """The failed stream's entry for ``job_id``; the newest if it failed more than once.

    Raises :class:`JobNotFound` when the job is not there: it never failed for good,
    was requeued or purged, or its entry aged out of the stream.
    """
    validate_job_id(job_id)
    found: FailedJob | None = None
    async with contextlib.aclosing(_scan(client, layout, None)) as entries:
        async for entry in entries:
            if entry.job_id == job_id:
                found = entry
    if found is None:
        raise JobNotFound(f"no failed job {job_id} in namespace {layout.namespace}")
    return found


def _named(entries: list[FailedJob]) -> str:
    shown = ", ".join(f"{e.ref} ({e.reason})" for e in entries[:_SHOWN])
    more = len(entries) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


async def requeue_failed(
    client: Client,
    layout: Layout,
    job_ids: Iterable[str] | None = None,
    *,
    all: bool = False,
    queue: str | None = None,
    function: str | None = None,
) -> list[str]:
    """Put failed jobs back on their queues to run again; returns the job ids, in order.

    Each job keeps its id, so its new result replaces the old failure under that id.
    A job that failed more than once is run once, and all its entries go. With
    ``all=True``, every entry is requeued, and any that is not a readable job (it
    could never run) makes the call refuse before it changes anything: remove those
    with :func:`purge_failed`, or requeue the others by id. Raises
    :class:`JobNotFound` naming the ids that are not in the failed stream, also
    before changing anything. ``queue`` and ``function`` narrow ``all=True`` to the
    entries of that queue and function ("requeue all matching").
    """
    wanted = requeue_ids(job_ids, all)
    if (queue is not None or function is not None) and not all:
        raise ConfigurationError("requeue_failed filters by queue or function only with all=True")
    queue = check_queue(queue)
    if wanted is not None and not wanted:
        return []
    newest: dict[str, FailedJob] = {}
    seqs: dict[str, list[int]] = {}
    unreadable: list[FailedJob] = []
    wanted_set = set(wanted or ())
    async with contextlib.aclosing(_scan(client, layout, queue)) as entries:
        async for entry in entries:
            if function is not None and entry.function != function:
                continue
            if entry.job_id is None:
                if all:
                    unreadable.append(entry)
            elif all or entry.job_id in wanted_set:
                newest[entry.job_id] = entry  # entries come oldest first
                seqs.setdefault(entry.job_id, []).append(entry.seq)
    if unreadable:
        raise ConfigurationError(
            f"{len(unreadable)} failed entr{'y is' if len(unreadable) == 1 else 'ies are'} "
            f"not a readable job and cannot be requeued: {_named(unreadable)}; purge them, "
            "or requeue the other jobs by id"
        )
    if wanted is not None:
        missing = [job_id for job_id in wanted if job_id not in newest]
        if missing:
            raise JobNotFound(
                f"not in the failed jobs of namespace {layout.namespace}: {', '.join(missing)}"
            )
    order = wanted if wanted is not None else list(newest)
    for start in range(0, len(order), REQUEUE_CHUNK):
        chunk = [(job_id, newest[job_id]) for job_id in order[start : start + REQUEUE_CHUNK]]
        await _requeue(client, layout, chunk, seqs)
    return order


async def _requeue(
    client: Client,
    layout: Layout,
    chunk: list[tuple[str, FailedJob]],
    seqs: dict[str, list[int]],
) -> None:
    """Clear the old results, then publish the jobs, then drop their entries.

    In that order, an interruption at any point leaves every job still listed as
    failed (requeue it again) or requeued, never gone; and the publish's message id
    names the entry, so requeueing the same entry twice within the duplicate window
    runs the job once. The bare job id would not do: the job stream remembers it
    from the original enqueue for the whole duplicate window and would drop the
    republish.
    """
    markers = [
        delete_marker(layout.results_bucket, job_id, RESULT_MARKER_TTL) for job_id, _ in chunk
    ]
    jobs = [
        Outgoing(
            layout.job_subject(job.queue, job_id),
            job.body,
            {"Nats-Msg-Id": f"{job_id}.requeue.{job.seq}"}
            | ({SIGNATURE_HEADER: job.signature} if job.signature else {}),
        )
        for job_id, job in chunk
    ]
    await client.publisher.publish_many(markers)
    try:
        await client.publisher.publish_many(jobs)
    except NoStream:  # the job stream was deleted behind this connection: declare again
        client.forget_declared()
        await client.layout(layout.namespace)
        await client.publisher.publish_many(jobs)
    for job_id, _ in chunk:
        for seq in seqs[job_id]:
            await _drop(client, layout.failed_stream, seq)


async def _drop(client: Client, stream: str, seq: int) -> None:
    """Delete one entry; one already gone (another requeue, a purge, its age) is fine.

    The server reports a missing sequence with several codes (400 "not found", 500
    "no message found", "stream store EOF"), so absence is checked, not the code.
    """
    try:
        await client.js.delete_msg(stream, seq)
    except APIError:
        try:
            await client.js.get_msg(stream, seq)
        except NotFoundError:
            return
        raise


async def purge_failed(client: Client, layout: Layout, queue: str | None = None) -> int:
    """Remove every failed entry, or one queue's; returns how many were removed.

    The jobs' failed results stay in the results KV until they expire: the jobs did
    fail, and their producers may still ask.
    """
    queue = check_queue(queue)
    return await purge_subject(client, layout.failed_stream, layout.failed_subject(queue))
