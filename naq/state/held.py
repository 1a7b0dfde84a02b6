"""A job held for its dependencies: its record in the ``{ns}_deps`` KV, and how to read it.

The record (key ``held.{job_id}``) is one line of JSON (the dependencies still
awaited, the queue, the enqueue time, the headers to send) then the job message as
it will be published. It also carries the job's subject, which naq itself ignores
(the release builds the subject from the queue and the job id, since whatever is
stored may have been written by someone else): only supervisors from before that
change, still running in a rolling upgrade, publish on it. ``naq.state.dependencies`` writes and
releases it; ``naq.state.status`` reads it to answer "queued, waiting for ...". A
module of its own so that those two need not import each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nats.js.kv import KeyValue

from naq.transport.connect import Client
from naq.transport.names import DEPENDS_ON_HEADER, Layout
from naq.transport.publish import Outgoing


async def bucket(client: Client, layout: Layout) -> KeyValue:
    return await client.kv(layout.deps_bucket)


def pack_held(waiting: list[str], message: Outgoing, queue: str, enqueued_at: float) -> bytes:
    head = {
        "waiting": waiting,
        "subject": message.subject,
        "queue": queue,
        "t": enqueued_at,
        "headers": message.headers or {},  # middleware's headers go out with the release
    }
    return json.dumps(head).encode() + b"\n" + message.payload


def depends_on_header(depends_on: Sequence[str]) -> str:
    return json.dumps(list(depends_on))


def read_depends_on(headers: Mapping[str, Any] | None) -> list[str]:
    """The ids a held message waits for; empty when the header is missing or garbled.
    (``str``: nats-py's non-direct get parses headers with the email module, which may
    hand back a ``Header`` object rather than a str.)"""
    try:
        found = json.loads(str((headers or {}).get(DEPENDS_ON_HEADER, "[]")))
    except ValueError:
        return []
    return [str(dep) for dep in found] if isinstance(found, list) else []


def unpack_held(value: bytes) -> tuple[dict[str, Any], bytes]:
    line, _, body = value.partition(b"\n")
    head: dict[str, Any] = json.loads(line)
    return head, body
