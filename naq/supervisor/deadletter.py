"""The ``max_deliver`` backstop: jobs the server stopped delivering go to the failed stream.

A job whose consumer reached ``max_deliver`` is never delivered again, and on a
work-queue stream it would stay there for ever (nats-server#5564). The server says so
only in a core-NATS advisory, which is lost if nobody listens; naq captures those
advisories in a small stream of their own, and every supervisor drains it through one
shared consumer: fetch the job by its stream sequence, record it as failed, move it
to the failed stream, delete it from the job stream.

Normally a job never gets there: the supervisor bounds each job by its own
``max_retries`` long before. This catches the rest (a bug, a job with more retries
than the consumer allows).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from naq.job import capped_ttl
from naq.settings import Settings
from naq.state import record as records
from naq.state.record import RunFacts
from naq.state.store import store_unless_final
from naq.supervisor.settle import failed_headers, fit_failed_headers
from naq.transport import commands
from naq.transport.connect import Client
from naq.transport.declare import declare_advisories
from naq.transport.names import DEAD_LETTER_CONSUMER, UNKNOWN_QUEUE, Layout
from naq.wire import BadMessage, decode_job

log = logging.getLogger(__name__)


async def drain(
    client: Client,
    layout: Layout,
    worker_id: str,
    settings: Settings,
    on_moved: Callable[[str], None] | None = None,
) -> None:
    """Run for the supervisor's life: move every exhausted job to the failed stream;
    ``on_moved`` is told the queue of each one moved."""
    await declare_advisories(client.js, layout, settings)
    sub = await client.js.pull_subscribe(
        layout.advisory_subject,
        durable=DEAD_LETTER_CONSUMER,
        stream=layout.advisory_stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
    )
    while True:
        try:
            advisories = await sub.fetch(1, timeout=30)
        except TimeoutError:
            continue
        for advisory in advisories:
            try:
                queue = await _move(client, layout, json.loads(advisory.data), worker_id, settings)
            except Exception as exc:  # leave it for the next supervisor or the next try
                log.warning("dead-lettering an exhausted job failed: %s", exc)
                continue
            await commands.ack(advisory)
            if queue is not None and on_moved is not None:
                on_moved(queue)


async def _move(
    client: Client,
    layout: Layout,
    advisory: dict[str, object],
    worker_id: str,
    settings: Settings,
) -> str | None:
    """Move the exhausted job; its queue, or None if it needed no move."""
    seq = int(str(advisory["stream_seq"]))
    deliveries = int(str(advisory.get("deliveries", 0)))
    try:
        msg = await client.js.get_msg(layout.stream, seq)
    except NotFoundError:
        return None  # acked or purged meanwhile
    queue = layout.queue_of(msg.subject or "") or UNKNOWN_QUEUE
    reason = f"the server stopped delivering it after {deliveries} deliveries (max_deliver)"
    headers = failed_headers(reason, None, deliveries, worker_id, msg.headers)
    data = msg.data or b""
    try:
        meta, _ = decode_job(data)
    except BadMessage:
        meta = None  # not a readable job: dead-lettered as it is, with no record
    if meta is not None:
        headers["Naq-Job-Id"] = meta.job_id
        facts = RunFacts(
            queue=queue,
            enqueued_at=meta.enqueue_time,
            attempt=deliveries,
            worker=worker_id,
            serializer=meta.serializer,
            function=meta.function,
        )
        record = records.failed(meta.job_id, facts, reason)
        ttl = capped_ttl(meta.options.record_ttl_or(settings.result_ttl), settings.max_result_ttl)
        _, kept = await store_unless_final(client, layout, record, ttl, expect=0)
        if kept is not None:  # it ended meanwhile (cancelled, say): that stays its outcome
            await client.js.delete_msg(layout.stream, seq)
            log.info("job %s exhausted max_deliver but is %s already", meta.job_id, kept.status)
            return None
    fitted = fit_failed_headers(headers, data, client.nc.max_payload)
    if fitted is not None:  # else the record says failed, and the job is too big to copy
        await client.publisher.publish(layout.failed_subject(queue), data, fitted)
    await client.js.delete_msg(layout.stream, seq)
    log.warning("job at sequence %d exhausted max_deliver: moved to the failed stream", seq)
    return queue
