"""Every stream, subject, consumer and bucket name, and their idempotent declaration.

All names derive from the namespace, so two namespaces on one server never share
anything. Nothing else in naq spells a subject or a bucket name.

| thing        | name                       |
| ------------ | -------------------------- |
| job stream   | ``NAQ_JOBS_{ns}``          |
| ready jobs   | ``{ns}.jobs.{queue}.{job_id}`` |
| delayed jobs | ``{ns}.sched.{job_id}``    |
| failed jobs  | ``NAQ_FAILED_{ns}``, ``{ns}.failed.{queue}`` |

Stream names keep the namespace's case and use distinct prefixes, so no two
namespaces can map to one stream ("foo" and "FOO", or "x" and "x_FAILED").
| results      | KV ``{ns}_results``        |
| workers      | KV ``{ns}_workers``        |
| schedules    | KV ``{ns}_schedules``      |
| leader lease | KV ``{ns}_leader``         |
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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

from naq.errors import NaqError
from naq.settings import Settings, validate_name

log = logging.getLogger(__name__)

FAILED_MAX_AGE = 14 * 24 * 3600.0
FAILED_MAX_MSGS = 100_000
"""Failed jobs kept per namespace (oldest dropped first). A count, not max_bytes:
JetStream reserves a stream's max_bytes from the server's storage up front, so a
byte cap per namespace would exhaust a server with many namespaces."""
KV_HISTORY = 1


@dataclass(frozen=True, slots=True)
class Layout:
    """The names of one namespace's resources."""

    namespace: str

    def __post_init__(self) -> None:
        validate_name("namespace", self.namespace)

    @property
    def stream(self) -> str:
        return f"NAQ_JOBS_{self.namespace}"

    @property
    def failed_stream(self) -> str:
        return f"NAQ_FAILED_{self.namespace}"

    @property
    def advisory_stream(self) -> str:
        return f"NAQ_ADVISORIES_{self.namespace}"

    @property
    def results_bucket(self) -> str:
        return f"{self.namespace}_results"

    @property
    def workers_bucket(self) -> str:
        return f"{self.namespace}_workers"

    @property
    def deps_bucket(self) -> str:
        return f"{self.namespace}_deps"

    @property
    def schedules_bucket(self) -> str:
        return f"{self.namespace}_schedules"

    @property
    def leader_bucket(self) -> str:
        return f"{self.namespace}_leader"

    def job_subject(self, queue: str, job_id: str) -> str:
        """One subject per job: "is this job still queued?" is then one lookup by subject."""
        return f"{self.namespace}.jobs.{validate_name('queue', queue)}.{job_id}"

    def queue_subjects(self, queue: str) -> str:
        """Every job of ``queue``: the consumer's filter, and what a purge removes."""
        return f"{self.namespace}.jobs.{validate_name('queue', queue)}.*"

    def queue_of(self, job_subject: str) -> str | None:
        """The queue in a job subject (``{ns}.jobs.{queue}.{job_id}``), if it is one."""
        head, _, rest = job_subject.partition(f"{self.namespace}.jobs.")
        return rest.split(".", 1)[0] if not head and rest else None

    def any_queue_subject(self, job_id: str) -> str:
        return f"{self.namespace}.jobs.*.{job_id}"

    def failed_subject(self, queue: str | None) -> str:
        """One queue's failed jobs; every queue's with ``None`` (the stream's subjects)."""
        return f"{self.namespace}.failed.{'*' if queue is None else validate_name('queue', queue)}"

    def consumer(self, queue: str) -> str:
        """Durable pull consumer shared by every supervisor of ``queue``."""
        return validate_name("queue", queue)

    @property
    def cancel_subject(self) -> str:
        """Core NATS (not stored): every supervisor hears which job to stop."""
        return f"{self.namespace}.control.cancel"

    def sched_subject(self, job_id: str) -> str:
        return f"{self.namespace}.sched.{job_id}"

    def kv_subject(self, bucket: str, key: str) -> str:
        return f"$KV.{bucket}.{key}"

    def pull_subject(self, queue: str) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer(queue)}"


async def declare(js: JetStreamContext, layout: Layout, settings: Settings) -> None:
    """Create the namespace's streams and buckets if missing; harmless when they exist."""
    await ensure_stream(
        js,
        StreamConfig(
            name=layout.stream,
            subjects=[f"{layout.namespace}.jobs.*.*", f"{layout.namespace}.sched.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=settings.replicas,
            duplicate_window=settings.duplicate_window,
            allow_msg_ttl=True,
            allow_msg_schedules=True,
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
    for bucket in (
        layout.results_bucket,
        layout.workers_bucket,
        layout.deps_bucket,
        layout.schedules_bucket,
        layout.leader_bucket,
    ):
        await ensure_stream(js, _kv_config(bucket, settings))


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket (nats-py's naming, so its KV API finds it)."""
    return f"KV_{bucket}"


def _kv_config(bucket: str, settings: Settings) -> StreamConfig:
    """A KV bucket as its backing stream, so keys can carry their own TTL (``Nats-TTL``).

    nats-py's ``create_key_value`` cannot set per-key TTLs on ``put``; naq publishes
    to ``$KV.{bucket}.{key}`` with a ``Nats-TTL`` header instead, which needs
    ``allow_msg_ttl`` on the stream.
    """
    return StreamConfig(
        name=kv_stream(bucket),
        subjects=[f"$KV.{bucket}.>"],
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
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        log.debug("creating stream %s", config.name)
        await js.add_stream(config)


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


async def purge_subject(client: Any, stream: str, subject: str) -> int:
    """Remove every message of ``subject`` (wildcards allowed); returns how many.

    nats-py's ``purge_stream`` drops the server's count of purged messages.
    """
    reply = await client.nc.request(
        f"$JS.API.STREAM.PURGE.{stream}", json.dumps({"filter": subject}).encode(), timeout=5
    )
    data = json.loads(reply.data)
    if "error" in data:
        raise NaqError(f"purging {subject} failed: {data['error'].get('description')}")
    return int(data.get("purged", 0))
