"""Declaring a namespace's streams, buckets and consumers: idempotent, on first use.

Every stream is created if missing and used as it is when present, so any process
(a producer, a supervisor, the CLI) may be the first to touch a namespace.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from naq.settings import Settings
from naq.transport.names import Layout, kv_stream, kv_subject

log = logging.getLogger(__name__)

FAILED_MAX_AGE = 14 * 24 * 3600.0
FAILED_MAX_MSGS = 100_000
"""Failed jobs kept per namespace (oldest dropped first). A count, not max_bytes:
JetStream reserves a stream's max_bytes from the server's storage up front, so a
byte cap per namespace would exhaust a server with many namespaces."""
KV_HISTORY = 1
ADVISORY_MAX_AGE = 7 * 24 * 3600.0
"""Advisories of exhausted jobs not yet moved to the failed stream are kept this long."""


async def declare(js: JetStreamContext, layout: Layout, settings: Settings) -> None:
    """Create the namespace's streams and buckets if missing; harmless when they exist."""
    await ensure_stream(
        js,
        StreamConfig(
            name=layout.stream,
            subjects=layout.stream_subjects,
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window,
            allow_msg_ttl=True,
            allow_msg_schedules=True,
            # Message schedules rule out DiscardPolicy.NEW, and a work-queue stream that
            # discards old messages when full would drop jobs: the job stream takes only
            # the message size limit, and producers enforce its backlog limits.
            max_msg_size=settings.max_message_size or None,
        ),
    )
    await ensure_stream(
        js,
        StreamConfig(
            name=layout.failed_stream,
            subjects=[layout.failed_subject(None)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=settings.replicas,
            max_age=FAILED_MAX_AGE,
            max_msgs=FAILED_MAX_MSGS,
            discard=DiscardPolicy.OLD,
        ),
    )
    for bucket in layout.buckets:
        await ensure_stream(js, _kv_config(bucket, settings))


def _kv_config(bucket: str, settings: Settings) -> StreamConfig:
    """A KV bucket as its backing stream, so keys can carry their own TTL (``Nats-TTL``).

    nats-py's ``create_key_value`` cannot set per-key TTLs on ``put``; naq publishes
    to ``$KV.{bucket}.{key}`` with a ``Nats-TTL`` header instead, which needs
    ``allow_msg_ttl`` on the stream.
    """
    return StreamConfig(
        name=kv_stream(bucket),
        subjects=[kv_subject(bucket, ">")],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        max_msgs_per_subject=KV_HISTORY,
        discard=DiscardPolicy.NEW,
        allow_rollup_hdrs=True,
        deny_delete=True,
        allow_direct=True,
        allow_msg_ttl=True,
        duplicate_window=min(settings.duplicate_window, 120.0),
        max_bytes=settings.max_bucket_bytes or None,
        max_msg_size=settings.max_message_size or None,
    )


def stream_limits(settings: Settings) -> dict[str, Any]:
    """The configured limits of a stream that holds work and has no message schedules
    (a NASQueue stream): what is unset is left to the server (no limit). Such a
    stream, when full, refuses new messages (``DiscardPolicy.NEW``): the producer
    gets an error, and nothing already accepted is ever dropped to make room."""
    return {
        "max_bytes": settings.max_stream_bytes or None,
        "max_msgs": settings.max_stream_msgs or None,
        "max_msg_size": settings.max_message_size or None,
        "discard": DiscardPolicy.NEW,
    }


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream if missing. An existing one is used as it is, except that
    subjects it lacks are added (a newer naq uses a subject an older one did not declare:
    the held jobs' ``{ns}.held.*``); nothing else of a stream's configuration changes."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        log.debug("creating stream %s", config.name)
        await js.add_stream(config)
        return
    have = list(info.config.subjects or [])
    missing = [subject for subject in config.subjects or [] if subject not in have]
    if missing:
        log.info("stream %s: adding the subjects %s", config.name, ", ".join(missing))
        await js.update_stream(dataclasses.replace(info.config, subjects=have + missing))


async def ensure_consumer(
    js: JetStreamContext, layout: Layout, queue: str, settings: Settings
) -> None:
    """The queue's durable pull consumer; an existing one is used as it is.

    JetStream rejects a second consumer whose filter overlaps on a work-queue stream,
    so every supervisor of a queue shares this one.
    """
    name = layout.consumer(queue)
    try:
        await js.consumer_info(layout.stream, name)
        return
    except NotFoundError:
        pass
    await js.add_consumer(
        layout.stream,
        ConsumerConfig(
            durable_name=name,
            filter_subject=layout.queue_subjects(queue),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait,
            max_ack_pending=settings.max_ack_pending,
            max_deliver=settings.max_deliver,
        ),
    )


async def declare_advisories(js: JetStreamContext, layout: Layout, settings: Settings) -> None:
    """The stream capturing the server's advisories of jobs that ran out of deliveries
    (declared by supervisors only: nobody else reads it)."""
    await ensure_stream(
        js,
        StreamConfig(
            name=layout.advisory_stream,
            subjects=[layout.advisory_subject],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=settings.replicas,
            max_age=ADVISORY_MAX_AGE,
        ),
    )
