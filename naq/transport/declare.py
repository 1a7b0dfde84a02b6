"""Declaring a namespace's streams, buckets and consumers: idempotent, on first use.

Every stream is created if missing, so any process (a producer, a supervisor, the
CLI) may be the first to touch a namespace; one that exists is brought to the
configuration where it drifted, or refused with a :class:`ConfigurationError` naming
the field (``ensure_stream``, ``ensure_consumer``): never used silently as it is.
Each declaration is tried again as a whole through NATS trouble
(``naq.transport.retry``): a producer declaring its namespace during a leader
election used to die on its first ``nats: timeout``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from naq.errors import ConfigurationError
from naq.settings import Settings
from naq.transport.names import Layout, kv_stream, kv_subject
from naq.transport.retry import retried

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


DRIFT_STREAM = (
    "num_replicas",
    "duplicate_window",
    "max_msg_size",
    "max_bytes",
    "max_msgs",
    "max_age",
    "max_msgs_per_subject",
    "discard",
)
"""The settings of a stream naq compares with its configuration on every declare."""
UNLIMITED = ("max_msg_size", "max_bytes", "max_msgs")
"""Limits naq leaves unset (None) when not configured; the server reports them as -1."""
DRIFT_CONSUMER = ("ack_wait", "max_deliver", "max_ack_pending")
"""The settings of a queue's consumer that come from :class:`Settings`."""


def _differs(server: Any, configured: Any) -> bool:
    if isinstance(configured, float) or isinstance(server, float):
        return abs(float(server or 0) - float(configured or 0)) > 1e-3
    return bool(server != configured)


def _drift(have: Any, want: Any, fields: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """``field: (server's value, configured value)`` for every field that differs; a
    field left unset (None, or 0: the server's default) in ``want`` is not compared,
    except the limits (unset: no limit)."""
    drift: dict[str, tuple[Any, Any]] = {}
    for name in fields:
        configured = getattr(want, name)
        if configured is None and name in UNLIMITED:
            configured = -1
        elif not configured:
            continue
        server = getattr(have, name)
        if server is None and name in UNLIMITED:
            server = -1
        if _differs(server, configured):
            drift[name] = (server, configured)
    return drift


def _refused(what: str, refused: dict[str, tuple[Any, Any, str]]) -> ConfigurationError:
    return ConfigurationError(
        f"{what}: the server refused to change "
        + "; ".join(
            f"{name} from {server!r} (the server's) to {configured!r} (configured): {why}"
            for name, (server, configured, why) in refused.items()
        )
        + ". Change the setting back, or recreate the stream or consumer by hand."
    )


@retried("declaring a stream")
async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream if missing. An existing one is brought to the configuration:
    subjects it lacks are added (a newer naq uses a subject an older one did not
    declare: the held jobs' ``{ns}.held.*``), and each of its limits and settings
    (``DRIFT_STREAM``) that differs is updated; a change the server refuses (replicas
    on a single server, say) raises :class:`ConfigurationError` naming the field, the
    server's value and the configured one. A namespace never runs on settings other
    than those its processes were given without saying so."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        log.debug("creating stream %s", config.name)
        await js.add_stream(config)
        return
    current = info.config
    have = list(current.subjects or [])
    missing = [subject for subject in config.subjects or [] if subject not in have]
    if missing:
        log.info("stream %s: adding the subjects %s", config.name, ", ".join(missing))
        current = dataclasses.replace(current, subjects=have + missing)
        await js.update_stream(current)
    refused: dict[str, tuple[Any, Any, str]] = {}
    for name, (server, configured) in _drift(current, config, DRIFT_STREAM).items():
        changed = dataclasses.replace(current, **{name: getattr(config, name)})
        try:
            await js.update_stream(changed)
        except APIError as exc:
            refused[name] = (server, configured, exc.description or str(exc))
            continue
        except nats.errors.Error as exc:  # a role without $JS.API.STREAM.UPDATE: no answer
            refused[name] = (server, configured, f"no answer ({exc!r}): not allowed to update?")
            continue
        log.warning(
            "stream %s: %s changed from %r to %r (the configured value)",
            config.name,
            name,
            server,
            configured,
        )
        current = changed
    if refused:
        raise _refused(f"stream {config.name}", refused)


@retried("declaring a consumer")
async def ensure_consumer(
    js: JetStreamContext, layout: Layout, queue: str, settings: Settings
) -> ConsumerInfo:
    """The queue's durable pull consumer, created or brought to ``settings``.

    JetStream rejects a second consumer whose filter overlaps on a work-queue stream,
    so every supervisor of a queue shares this one: the last one to start sets its
    ``ack_wait``, ``max_deliver`` and ``max_ack_pending`` (adding a durable again with
    a changed config updates it), and a change the server refuses raises
    :class:`ConfigurationError`. Returns the consumer's info as it now is: leases are
    renewed from the consumer's ``ack_wait``, not the local setting.
    """
    name = layout.consumer(queue)
    config = ConsumerConfig(
        durable_name=name,
        filter_subject=layout.queue_subjects(queue),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait,
        max_ack_pending=settings.max_ack_pending,
        max_deliver=settings.max_deliver,
    )
    try:
        info: ConsumerInfo = await js.consumer_info(layout.stream, name)
    except NotFoundError:
        created: ConsumerInfo = await js.add_consumer(layout.stream, config)
        return created
    drift = _drift(info.config, config, DRIFT_CONSUMER)
    if not drift:
        return info
    try:
        updated: ConsumerInfo = await js.add_consumer(layout.stream, config)
    except APIError as exc:
        why = exc.description or str(exc)
        raise _refused(f"consumer {name}", {k: (*v, why) for k, v in drift.items()}) from exc
    for field, (server, configured) in drift.items():
        log.warning(
            "consumer %s: %s changed from %r to %r (the configured value)",
            name,
            field,
            server,
            configured,
        )
    return updated


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
