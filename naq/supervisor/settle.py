"""Outcome -> NATS: store the result, then ack; or nak with a delay; or dead-letter.

The one place where retry policy is decided. The order matters: a result is
stored (and acknowledged by JetStream) before the job's message is acked, so a
crash in between re-runs the job rather than losing its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from nats.aio.msg import Msg

from naq.errors import PayloadTooLarge, ServerFull
from naq.executors.base import Outcome
from naq.job import capped_ttl
from naq.signing import SIGNATURE_HEADER
from naq.state import record as records
from naq.state.record import ResultRecord, ResultStatus, RunFacts
from naq.state.store import store_unless_final
from naq.supervised import backoff
from naq.transport import commands
from naq.transport.connect import Client
from naq.transport.names import Layout
from naq.transport.publish import message_size
from naq.wire import JobMeta

log = logging.getLogger(__name__)

Note = Callable[[str, RunFacts, str | None], ResultRecord]
"""A constructor of a non-final record: ``records.retrying``, ``interrupted`` or ``running``."""


TRACEBACK_KEEP = 8000
"""Characters of a traceback kept in the failed stream: its end, where the error is."""
FULL_BACKOFF_CAP = 5.0
"""Seconds at most between two tries of a write the server refused for lack of
storage: space that returns is used within this."""
RECORD_ERROR_KEEP = 1000
"""Characters of the error a failed record keeps when the whole error and traceback
would be over the server's limit."""


def failed_headers(
    error: str,
    traceback: str | None,
    attempt: int,
    worker_id: str,
    original: Mapping[str, str] | None,
) -> dict[str, str]:
    """What the failed stream records beside the job: headers carry no newline, so the
    traceback travels JSON-encoded. The job's own signature is kept, so a requeued job
    is published as its producer signed it (naq never signs what it only moves)."""
    headers = {
        "Naq-Reason": error[:1000].replace("\r", " ").replace("\n", " "),
        "Naq-Attempts": str(attempt),
        "Naq-Worker": worker_id,
        "Naq-Failed-At": f"{time.time():.3f}",
    }
    if traceback:
        headers["Naq-Traceback"] = json.dumps(traceback[-TRACEBACK_KEEP:])
    if signature := (original or {}).get(SIGNATURE_HEADER):
        headers[SIGNATURE_HEADER] = signature
    return headers


TRIMMABLE = ("Naq-Traceback", "Naq-Reason", "Naq-Worker", "Naq-Failed-At")
"""The failed-stream headers given up, in this order, for a copy to fit ``max_payload``:
the job itself, its id, attempts and signature are always kept whole."""


def fit_failed_headers(
    headers: dict[str, str], payload: bytes, limit: int
) -> dict[str, str] | None:
    """``headers`` cut so that the failed-stream copy of ``payload`` fits ``limit``
    (the server's ``max_payload``; a message over it would make the server drop the
    connection): the traceback is cut from its start (its end holds the error), then
    the reason from its end, then the worker and time are dropped. None when even the
    job with the headers it cannot do without is over the limit."""
    fitted = dict(headers)
    for name in TRIMMABLE:
        over = message_size(payload, fitted) - limit
        if over <= 0:
            return fitted
        value = fitted.pop(name, None)
        if value is None:
            continue
        if name == "Naq-Traceback":
            text: str = json.loads(value)
            low, high = 0, len(text)  # the longest end of it that fits: a bisection
            while low < high:
                mid = (low + high + 1) // 2
                fits = {name: json.dumps(text[-mid:])}
                if message_size(payload, fitted | fits) <= limit:
                    low = mid
                else:
                    high = mid - 1
            if low:
                fitted[name] = json.dumps(text[-low:])
        elif name == "Naq-Reason":
            keep = len(value.encode()) - over - 3
            if keep > 0:
                fitted[name] = value.encode()[:keep].decode(errors="ignore") + "..."
    return fitted if message_size(payload, fitted) <= limit else None


@dataclass(slots=True)
class Delivery:
    """One delivery of a job to this supervisor, and what earlier ones left behind."""

    msg: Msg
    queue: str
    meta: JobMeta
    attempt: int
    """Runs that count against ``max_retries``: deliveries less interruptions."""
    started_at: float = 0.0
    crashes: int = 0
    interruptions: int = 0
    cancel_requested: bool = False
    record_seq: int = 0
    """The job's record's last sequence as this delivery knows it (0: none; read on a
    redelivery, then each record it writes): its writes expect it, so a final record
    written meanwhile (a cancellation) is never overwritten."""


class Settler:
    def __init__(
        self,
        client: Client,
        layout: Layout,
        default_ttl: int,
        worker_id: str,
        on_final: Callable[[str, ResultStatus, str | None], None] = lambda *ended: None,
        max_ttl: int = 0,
        on_storage: Callable[[bool], None] = lambda full: None,
    ) -> None:
        self._client = client
        self._layout = layout
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl
        """``max_result_ttl``: no record outlives it, whatever its job asked (0: no cap)."""
        self._worker_id = worker_id
        self._on_final = on_final
        """Told of every job settled for good: dependencies release their waiters."""
        self._on_storage = on_storage
        """Told when the server's storage turns full (True) and when a write succeeds
        again (False): the supervisor stops pulling meanwhile."""
        self.full = asyncio.Event()
        """Set while the server refuses writes for lack of storage."""
        self.holding: dict[int, Msg] = {}
        """Messages of jobs whose outcome waits for storage: their leases are kept."""
        self._give_up = asyncio.Event()

    def facts(self, job: Delivery) -> RunFacts:
        return RunFacts(
            queue=job.queue,
            enqueued_at=job.meta.enqueue_time,
            attempt=job.attempt,
            started_at=job.started_at,
            worker=self._worker_id,
            crashes=job.crashes,
            interruptions=job.interruptions,
            serializer=job.meta.serializer,
            function=job.meta.function,
        )

    async def note(self, job: Delivery, note: Note, error: str | None) -> bool:
        """A non-final record (retrying, interrupted, running): the job's state for the
        next run and for ``fetch_job_status``, kept as long as a result would be.
        False when the job's record turned final meanwhile: the job is over, its
        message was acked, and the caller must not hand it back."""
        ttl = capped_ttl(job.meta.options.record_ttl_or(self._default_ttl), self._max_ttl)
        try:
            return await self._write(job, note(job.meta.job_id, self.facts(job), error), ttl)
        except PayloadTooLarge:  # an error message of megabytes: the note keeps its start
            short = (error or "")[:RECORD_ERROR_KEEP]
            return await self._write(job, note(job.meta.job_id, self.facts(job), short), ttl)

    def give_up(self) -> None:
        """The supervisor stops: outcomes still waiting for storage are handed back."""
        self._give_up.set()

    async def _durably[T](self, msg: Msg, write: Callable[[], Awaitable[T]]) -> T | None:
        """``write()``, tried again while the server's storage is full: the job's
        outcome is held (its lease kept) rather than its job run again, the supervisor
        pulls nothing meanwhile, and nothing counts against the job. Tries back off up
        to ``FULL_BACKOFF_CAP``. When the supervisor stops meanwhile the job is handed
        back (nak) and None returned: the outcome is lost and the job runs again."""
        try:  # the usual case, kept to one call: the server has room
            result = await write()
        except ServerFull as exc:
            return await self._when_full(msg, write, exc)
        if self.full.is_set():
            self._room_again()
        return result

    async def _when_full[T](
        self, msg: Msg, write: Callable[[], Awaitable[T]], first: ServerFull
    ) -> T | None:
        """``_durably`` after its first write met a full store: hold and try again."""
        failures, exc = 0, first
        try:
            while True:
                failures += 1
                if not self.full.is_set():
                    log.warning("%s: holding outcomes and pulling no jobs until it has room", exc)
                    self.full.set()
                    self._on_storage(True)
                if self._give_up.is_set():
                    await commands.nak(msg)
                    return None
                self.holding[id(msg)] = msg
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._give_up.wait(), backoff(failures, cap=FULL_BACKOFF_CAP)
                    )
                try:
                    result = await write()
                except ServerFull as again:
                    exc = again
                    continue
                if self.full.is_set():
                    self._room_again()
                return result
        finally:
            self.holding.pop(id(msg), None)

    def _room_again(self) -> None:
        log.warning("the server's storage takes writes again: pulling resumes")
        self.full.clear()
        self._on_storage(False)

    async def _write(self, job: Delivery, record: ResultRecord, ttl: int) -> bool:
        """Write the job's record unless a final one is there (a cancellation heard
        too late, say): that one is kept, the job's message acked, and False returned.
        False too when the write waited for storage until the supervisor stopped: the
        job was handed back. Either way the caller leaves the message alone."""
        written = await self._durably(
            job.msg,
            lambda: store_unless_final(self._client, self._layout, record, ttl, job.record_seq),
        )
        if written is None:
            return False
        job.record_seq, kept = written
        if kept is None:
            return True
        log.info(
            "job %s is %s already: its %s is not recorded",
            record.job_id,
            kept.status,
            record.status,
        )
        await commands.ack(job.msg)
        return False

    async def settle(self, job: Delivery, outcome: Outcome) -> str:
        """Act on ``outcome``; returns what was done: finished, failed, retry, requeued,
        cancelled, or kept (the job's record was final already: nothing recorded)."""
        msg, meta, attempt = job.msg, job.meta, job.attempt
        if job.cancel_requested:
            await commands.ack(msg)  # cancel_job wrote the record and cancelled the dependents
            return "cancelled"
        if outcome.status == "ok":
            ttl = meta.options.result_ttl_or(self._default_ttl)
            if ttl != 0:
                ttl = capped_ttl(ttl, self._max_ttl)
                record = records.finished(meta.job_id, self.facts(job), outcome.result or b"")
                try:
                    written = await self._write(job, record, ttl)
                except PayloadTooLarge as exc:  # not sent: the job's own failure, for good
                    size = len(outcome.result or b"")
                    log.warning("job %s: %s", meta.job_id, exc)
                    error = f"result too large: {size} bytes"
                    return "failed" if await self.fail(msg, job.queue, job, error, None) else "kept"
                if not written:
                    return "kept"
            await commands.ack(msg)
            self._on_final(meta.job_id, "finished", None)
            return "finished"
        if outcome.status == "cancelled":  # cut short by a shutdown: not the job's fault
            job.interruptions += 1
            if not await self.note(job, records.interrupted, outcome.error):
                return "kept"
            await commands.nak(msg)  # handed back at once, for this or another supervisor
            return "requeued"
        retries_left = attempt <= meta.options.max_retries
        if outcome.status == "retry" and not retries_left:
            outcome = Outcome(
                outcome.job_id,
                "error",
                error=f"{outcome.error}, but its {meta.options.max_retries} retries are used up",
            )
        if retries_left and (
            outcome.status == "retry"
            or (
                outcome.status in ("error", "timeout", "crashed")
                and meta.options.should_retry(outcome.error_types)
            )
        ):
            delay = outcome.retry_in
            if delay is None:
                delay = meta.options.retry_delay_for(attempt)
            log.info(
                "job %s attempt %d: %s; retry in %.1fs", meta.job_id, attempt, outcome.error, delay
            )
            if not await self.note(job, records.retrying, outcome.error):
                return "kept"
            await commands.nak(msg, delay=delay or None)
            return "retry"
        if not await self.fail(
            job.msg, job.queue, job, outcome.error or outcome.status, outcome.traceback
        ):
            return "kept"
        return "failed"

    async def fail(
        self,
        msg: Msg,
        queue: str,
        job: Delivery | None,
        error: str,
        traceback: str | None,
    ) -> bool:
        """Record a failure for good: the failed stream keeps the whole job, then ack.

        ``job`` is None for a message that is not a readable job at all; it is
        dead-lettered as it came, with the reason. False when the job's record was
        final already (cancelled meanwhile): that outcome stays, and the job is acked
        without a failed-stream copy.
        """
        attempt = job.attempt if job else 1
        headers = failed_headers(error, traceback, attempt, self._worker_id, msg.headers)
        if job is not None:
            headers["Naq-Job-Id"] = job.meta.job_id
            ttl = capped_ttl(job.meta.options.record_ttl_or(self._default_ttl), self._max_ttl)
            record = records.failed(job.meta.job_id, self.facts(job), error, traceback)
            try:
                written = await self._write(job, record, ttl)
            except PayloadTooLarge:  # a huge message or traceback: the record keeps less
                short = error[:RECORD_ERROR_KEEP]
                record = records.failed(job.meta.job_id, self.facts(job), short, None)
                written = await self._write(job, record, ttl)
            if not written:
                return False
            self._on_final(job.meta.job_id, "failed", error)
        name = job.meta.job_id if job else "(unreadable)"
        fitted = fit_failed_headers(headers, msg.data, self._client.nc.max_payload)
        if fitted is None:
            log.error(
                "job %s: its %d bytes leave no room under max_payload for the failed "
                "stream's headers: no failed-stream copy (its record says failed)",
                name,
                len(msg.data),
            )
        else:
            subject = self._layout.failed_subject(queue)
            published = await self._durably(
                msg, lambda: self._client.publisher.publish(subject, msg.data, fitted)
            )
            if published is None:  # handed back; the failed record stays and is found
                return False
        log.warning("job %s failed for good: %s", name, error)
        await commands.ack(msg)
        return True
