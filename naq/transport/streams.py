"""Reading what a stream holds once (the failed registry, KV buckets read whole), and
purging part of a stream.

A scan makes its own ephemeral consumer (in memory, acking nothing, named
``naq-scan-*`` so it is recognisable in ``nats consumer ls``), learns from the
server's reply how many messages it will see, pulls exactly those with ``no_wait``,
and deletes the consumer. The server ends each batch, not a client timer, so a slow
server makes a scan slower, never shorter; entries removed meanwhile (a purge, an
expired key) end it early with the server's "no messages".

Why not a KV watch for a bucket read whole, measured here (nats-py 2.16,
nats-server 2.15.1):

- its "replay is over" marker can come first: nats-py decides it from the
  consumer's ``num_pending`` and the messages received so far, and a message the
  server has already sent may still be on its way. Under CPU load, 3 of 1,000
  scans of a bucket holding one key came back empty, so a running job looked queued.
- stopping it only unsubscribes, so every scan left a consumer on the server for
  five minutes (1,000 scans, 1,000 consumers). See also ``naq.transport.kv.stop_watch``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import api

from naq.errors import NaqError
from naq.transport.connect import Client
from naq.transport.names import (
    SCAN_CONSUMER_PREFIX,
    pull_subject,
    purge_api_subject,
    stream_info_api_subject,
)

log = logging.getLogger(__name__)

API_TIMEOUT = 5.0
NOT_FOUND = 404
SCAN_IDLE = 30.0
"""Seconds after which the server drops a scan's consumer if its reader vanished."""


async def scan(
    client: Client,
    stream: str,
    subject: str,
    *,
    last_per_subject: bool = False,
    batch: int = 256,
    limit: int | None = None,
    timeout: float = 10.0,
    start_seq: int | None = None,
) -> AsyncGenerator[Msg]:
    """Each message on ``subject`` (or only the last of each subject), oldest first;
    from sequence ``start_seq`` on when given (a page of a large stream).

    ``timeout`` bounds the wait for each message: a server that stops answering
    raises ``nats.errors.TimeoutError`` instead of ending the scan quietly. Close
    the generator (``contextlib.aclosing``) when stopping early, so the consumer
    goes at once.
    """
    name = f"{SCAN_CONSUMER_PREFIX}{os.urandom(8).hex()}"
    info = await client.js.add_consumer(
        stream,
        api.ConsumerConfig(
            name=name,
            filter_subject=subject,
            deliver_policy=(
                api.DeliverPolicy.LAST_PER_SUBJECT
                if last_per_subject
                else api.DeliverPolicy.BY_START_SEQUENCE
                if start_seq is not None
                else api.DeliverPolicy.ALL
            ),
            opt_start_seq=start_seq,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=SCAN_IDLE,
        ),
    )
    inbox = client.nc.new_inbox()
    sub = await client.nc.subscribe(inbox)
    try:
        remaining = info.num_pending or 0
        if limit is not None:
            remaining = min(remaining, limit)
        while remaining:
            asked = min(remaining, batch)
            request = json.dumps({"batch": asked, "no_wait": True}).encode()
            await client.nc.publish(pull_subject(stream, name), request, inbox)
            for _ in range(asked):
                msg = await sub.next_msg(timeout)
                if (msg.headers or {}).get(api.Header.STATUS):  # fewer left than counted
                    return
                left = msg.metadata.num_pending
                remaining = left if limit is None else min(left, remaining - 1)
                yield msg
                if not remaining:
                    break
    finally:
        await sub.unsubscribe()
        try:
            await client.js.delete_consumer(stream, name)
        except Exception as exc:  # gone already, or the connection is: it idles out
            log.debug("scan consumer %s on %s not deleted: %s", name, stream, exc)


async def purge_subject(client: Client, stream: str, subject: str) -> int:
    """Remove every message of ``subject`` (wildcards allowed); returns how many.

    nats-py's ``purge_stream`` drops the server's count of purged messages.
    """
    reply = await client.nc.request(
        purge_api_subject(stream), json.dumps({"filter": subject}).encode(), timeout=5
    )
    data = json.loads(reply.data)
    if "error" in data:
        raise NaqError(f"purging {subject} failed: {data['error'].get('description')}")
    return int(data.get("purged", 0))


async def subject_counts(client: Client, stream: str, subjects: str) -> dict[str, int]:
    """Messages per subject matching ``subjects`` in ``stream``; empty if the stream is gone.

    Asks the stream info API itself: past 100,000 subjects the server answers in pages
    (sorted, by ``offset``), and nats-py's ``stream_info`` returns only the first.
    """
    counts: dict[str, int] = {}
    while True:
        request = {"subjects_filter": subjects, "offset": len(counts)}
        reply = await client.nc.request(
            stream_info_api_subject(stream), json.dumps(request).encode(), timeout=API_TIMEOUT
        )
        data = json.loads(reply.data)
        if error := data.get("error"):
            if error.get("code") == NOT_FOUND:
                return {}
            raise NaqError(f"reading {stream} failed: {error.get('description')}")
        page: dict[str, int] = (data.get("state") or {}).get("subjects") or {}
        counts.update(page)
        if not page or len(counts) >= int(data.get("total") or 0):
            return counts


async def subjects_of(client: Client, stream: str, subjects: str) -> list[str]:
    """The subjects matching ``subjects`` that hold a message in ``stream``."""
    return list(await subject_counts(client, stream, subjects))


@dataclass(frozen=True, slots=True)
class Page[T]:
    """One page of a stream read newest first: ``items`` with their sequences, and the
    sequence to read before for the next (older) page, None when nothing is older."""

    items: list[tuple[int, T]]
    older: int | None
    scanned: int
    """Sequences looked at for this page (bounded: see :func:`page_back`)."""


async def page_back[T](
    client: Client,
    stream: str,
    subject: str,
    keep: Callable[[Msg], T | None],
    *,
    before: int | None = None,
    limit: int = 50,
    window: int = 1000,
    max_scan: int = 10_000,
) -> Page[T]:
    """The newest ``limit`` messages on ``subject`` below sequence ``before`` for which
    ``keep`` returns an item, newest first.

    A page never reads a whole stream: it scans windows of ``window`` sequences
    backwards from ``before`` (each a :func:`scan` from the window's first sequence),
    and stops after ``max_scan`` sequences even if the page is not full, handing back
    where to go on. So a page of a stream of 100,000 failed jobs costs about what a
    page of 100 does, whatever ``keep`` filters out.
    """
    info = await client.js.stream_info(stream)
    first, last = max(info.state.first_seq, 1), info.state.last_seq
    end = last + 1 if before is None else min(before, last + 1)
    items: list[tuple[int, T]] = []
    scanned = 0
    while end > first and scanned < max_scan and len(items) < limit:
        start = max(first, end - min(window, max_scan - scanned))
        found: list[Msg] = []
        async with contextlib.aclosing(
            scan(client, stream, subject, start_seq=start, limit=end - start)
        ) as messages:
            async for msg in messages:
                if msg.metadata.sequence.stream >= end:
                    break
                found.append(msg)
        for msg in reversed(found):
            item = keep(msg)
            if item is not None:
                items.append((msg.metadata.sequence.stream, item))
                if len(items) == limit:
                    return Page(items, msg.metadata.sequence.stream, scanned + end - start)
        scanned += end - start
        end = start
    return Page(items, end if end > first else None, scanned)
