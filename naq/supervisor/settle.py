"""Outcome -> NATS: store the result, then ack; or nak with a delay; or dead-letter.

The one place where retry policy is decided. The order matters: a result is
stored (and acknowledged by JetStream) before the job's message is acked, so a
crash in between re-runs the job rather than losing its result.
"""

from __future__ import annotations

import json
import logging
import time

from nats.aio.msg import Msg

from naq.connection import Client
from naq.executors.base import Outcome
from naq.job import JobOptions
from naq.layout import Layout
from naq.results import store_result
from naq.wire import JobMeta, ResultRecord

log = logging.getLogger(__name__)


TRACEBACK_KEEP = 8000
"""Characters of a traceback kept in the failed stream: its end, where the error is."""


def failed_headers(
    error: str, traceback: str | None, attempt: int, worker_id: str
) -> dict[str, str]:
    """What the failed stream records beside the job: headers carry no newline, so the
    traceback travels JSON-encoded."""
    headers = {
        "Naq-Reason": error[:1000].replace("\r", " ").replace("\n", " "),
        "Naq-Attempts": str(attempt),
        "Naq-Worker": worker_id,
        "Naq-Failed-At": f"{time.time():.3f}",
    }
    if traceback:
        headers["Naq-Traceback"] = json.dumps(traceback[-TRACEBACK_KEEP:])
    return headers


class Settler:
    def __init__(self, client: Client, layout: Layout, default_ttl: int, worker_id: str) -> None:
        self._client = client
        self._layout = layout
        self._default_ttl = default_ttl
        self._worker_id = worker_id

    def _ttl(self, options: JobOptions) -> int:
        return self._default_ttl if options.result_ttl is None else options.result_ttl

    async def settle(
        self, msg: Msg, queue: str, meta: JobMeta, outcome: Outcome, attempt: int
    ) -> str:
        """Act on ``outcome``; returns what was done: finished, failed, retry or requeued."""
        if outcome.status == "ok":
            ttl = self._ttl(meta.options)
            if ttl != 0:
                record = ResultRecord(
                    meta.job_id,
                    "finished",
                    meta.serializer,
                    time.time(),
                    payload=outcome.result or b"",
                )
                await store_result(self._client, self._layout, record, ttl)
            await msg.ack()
            return "finished"
        if outcome.status == "cancelled":
            await msg.nak()  # handed back at once, for this or another supervisor
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
            await msg.nak(delay=delay or None)
            return "retry"
        await self.fail(
            msg, queue, meta, outcome.error or outcome.status, outcome.traceback, attempt
        )
        return "failed"

    async def fail(
        self,
        msg: Msg,
        queue: str,
        meta: JobMeta | None,
        error: str,
        traceback: str | None,
        attempt: int,
    ) -> None:
        """Record a failure for good: the failed stream keeps the whole job, then ack.

        ``meta`` is None for a message that is not a readable job at all; it is
        dead-lettered as it came, with the reason.
        """
        headers = failed_headers(error, traceback, attempt, self._worker_id)
        if meta is not None:
            headers["Naq-Job-Id"] = meta.job_id
            record = ResultRecord(
                meta.job_id, "failed", meta.serializer, time.time(), error, traceback
            )
            ttl = self._ttl(meta.options)
            await store_result(self._client, self._layout, record, ttl or self._default_ttl)
        await self._client.publisher.publish(self._layout.failed_subject(queue), msg.data, headers)
        log.warning("job %s failed for good: %s", meta.job_id if meta else "(unreadable)", error)
        await msg.ack()
