"""The results KV: storing a job's outcome, and reading or waiting for it.

Each result is a key ``{job_id}`` in ``{ns}_results`` carrying its own TTL
(``Nats-TTL``), so one bucket serves jobs that keep results for a minute and jobs
that keep them for a month. A waiting reader is told the moment the result lands,
and holds no consumer on the server while it waits (``iter_records``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from naq.errors import (
    JobCancelled,
    JobFailed,
    JobNotFound,
    PublishError,
    ResultTimeout,
    SerializationError,
    SignatureError,
)
from naq.job import KEEP_FOREVER
from naq.serializers import get_serializer
from naq.signing import RESULT, SIGNATURE_HEADER
from naq.state.record import ResultRecord, decode_result, encode_result
from naq.transport.connect import Client
from naq.transport.kv import WRONG_LAST_SEQUENCE, get_message, get_message_seq
from naq.transport.names import Layout, kv_stream
from naq.transport.retry import Rejected
from naq.transport.streams import Page, page_back
from naq.wire import BadMessage

log = logging.getLogger(__name__)

EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
"""The header that makes a write conditional on the key's last sequence (0: none)."""
GUARDED_ATTEMPTS = 50


async def store_result(
    client: Client, layout: Layout, record: ResultRecord, ttl: int, expect: int | None = None
) -> int:
    """Write ``record`` with a per-key TTL (``ttl`` seconds, or ``KEEP_FOREVER``), signed
    when the client has a signing key; returns its sequence. ``expect``: the key's last
    sequence the write requires (0: no record), else the server refuses it
    (:class:`Rejected`, err_code 10071). Unguarded writes are for records nothing can have
    made final before them; :func:`store_unless_final` is for the rest."""
    body = encode_result(record)
    headers = {"Nats-TTL": "never" if ttl == KEEP_FOREVER else f"{max(1, ttl)}s"}
    if expect is not None:
        headers[EXPECTED_LAST] = str(expect)
    if client.signer is not None:
        headers[SIGNATURE_HEADER] = client.signer.sign(RESULT, body)
    ack = await client.publisher.publish(
        layout.kv_subject(layout.results_bucket, record.job_id), body, headers
    )
    return ack.seq


async def store_unless_final(
    client: Client, layout: Layout, record: ResultRecord, ttl: int, expect: int
) -> tuple[int, ResultRecord | None]:
    """Write ``record`` unless the job's record is final already: a finished, failed or
    cancelled record is never overwritten.

    ``expect`` is the key's last sequence as its writer knows it (the record read when
    the delivery started, 0 on a first delivery, or the sequence of its own last
    note), so the happy path is one write, no extra round trip. When somebody wrote
    meanwhile (10071), the record is read again: a final one is kept and returned,
    ``(its sequence, it)``; a non-final one (a note, a forged record) is written over,
    expecting its sequence. Returns ``(sequence written, None)`` when written.
    """
    for _ in range(GUARDED_ATTEMPTS):
        try:
            return await store_result(client, layout, record, ttl, expect), None
        except Rejected as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCE:
                raise
        found, expect = await get_message_seq(client, layout.results_bucket, record.job_id)
        try:
            current = _decode(client, *found) if found else None
        except BadMessage:  # not a record naq can read: written over
            continue
        if current is not None and current.final and current.verified is not False:
            return expect, current
    raise PublishError(
        f"the record of job {record.job_id} kept changing: not written after "
        f"{GUARDED_ATTEMPTS} attempts"
    )


def _decode(client: Client, body: bytes, headers: Mapping[str, str] | None) -> ResultRecord:
    """The record in ``body``, marked with whether its signature holds when the client
    has a key (checked before anything of it is used; :func:`unpack` refuses it)."""
    record = decode_result(body)
    if client.signer is None:
        return record
    return dataclasses.replace(record, verified=client.signer.headers_valid(RESULT, body, headers))


RECHECK = 30.0
"""Seconds between reads of the results still missing while waiting for them, for a
record whose message was dropped without a reconnect (a subscriber too slow)."""
TICK = 1.0
"""Seconds between looks at the connection's reconnect count while waiting."""
READ_CONCURRENCY = 64
"""Keys read at once when waiting for many results."""
CONFIRM_FIRST = 0.001
CONFIRM_MAX = 0.05
CONFIRM_FOR = 1.0
"""A record heard on its key is read back from the store at once, then again after
``CONFIRM_FIRST`` seconds doubling up to ``CONFIRM_MAX``, for ``CONFIRM_FOR`` seconds at
most (a write the stream refused is heard but never stored: the regular reads go on)."""


def unpack(record: ResultRecord, allow_pickle: bool = True, signed: bool = False) -> Any:
    """The job's return value, or :class:`JobFailed` for a failed job.

    ``signed``: the reader has a signing key, so a record whose signature did not hold
    is refused with :class:`SignatureError` before its value is decoded.
    """
    if signed and not record.verified:
        raise SignatureError(
            f"the result of job {record.job_id} is unsigned or its signature matches no "
            "signing key: refused unread"
        )
    if record.status == "cancelled":
        raise JobCancelled(record.job_id, record.error or "cancelled", None)
    if record.status != "finished":
        raise JobFailed(record.job_id, record.error or record.status, record.traceback)
    if record.serializer == "pickle" and not allow_pickle:
        raise SerializationError(
            f"the result of job {record.job_id} is pickled and this process runs with "
            "NAQ_JOB_SERIALIZER=json, which never unpickles"
        )
    return get_serializer(record.serializer).loads_result(record.payload)


async def page_records(
    client: Client,
    layout: Layout,
    statuses: Iterable[str] = ("finished", "failed", "cancelled"),
    queue: str | None = None,
    before: int | None = None,
    limit: int = 50,
    function: str | None = None,
) -> Page[ResultRecord]:
    """One page of job records, newest first, below the results stream's sequence
    ``before``: those whose status is one of ``statuses``, of one queue or all, of one
    function or all.

    Read by stream sequence (``naq.transport.streams.page_back``), so a page costs
    about a page whatever the bucket holds. Delete markers (a requeue) and records
    that are not naq's are skipped. Nothing is unpickled: a record's value stays bytes.
    """
    wanted = set(statuses)

    def keep(msg: Msg) -> ResultRecord | None:
        if not msg.data:  # a delete or purge marker
            return None
        try:
            record = _decode(client, msg.data, msg.headers)
        except BadMessage:
            return None
        if record.status not in wanted or (queue is not None and record.queue != queue):
            return None
        return record if function is None or record.function == function else None

    return await page_back(
        client,
        kv_stream(layout.results_bucket),
        layout.kv_subject(layout.results_bucket, ">"),
        keep,
        before=before,
        limit=limit,
    )


async def read_record(client: Client, layout: Layout, job_id: str) -> ResultRecord | None:
    record, _ = await read_record_seq(client, layout, job_id)
    return record


async def read_record_seq(
    client: Client, layout: Layout, job_id: str
) -> tuple[ResultRecord | None, int]:
    """The job's record (None: none, or removed) and its key's last sequence (0: none),
    for a write that must not overwrite what it did not read (:func:`store_unless_final`)."""
    found, seq = await get_message_seq(client, layout.results_bucket, job_id)
    return (_decode(client, *found) if found else None), seq


async def wait_record(
    client: Client, layout: Layout, job_id: str, timeout: float | None
) -> ResultRecord:
    """The job's record; with ``timeout``, wait that long for it through a KV watch."""
    if not timeout:
        record = await read_record(client, layout, job_id)
        if record is None:
            raise JobNotFound(f"no result for job {job_id}: unknown, not finished yet, or expired")
        return record
    records = await wait_records(client, layout, [job_id], timeout)
    return records[job_id]


async def wait_records(
    client: Client, layout: Layout, job_ids: Iterable[str], timeout: float
) -> dict[str, ResultRecord]:
    """Wait for the records of all ``job_ids``."""
    return {rec.job_id: rec async for rec in iter_records(client, layout, job_ids, timeout)}


async def iter_records(
    client: Client, layout: Layout, job_ids: Iterable[str], timeout: float
) -> AsyncIterator[ResultRecord]:
    """Yield the records of ``job_ids`` as they land, within ``timeout`` seconds in all.

    Waiting holds no consumer on the server. Storing a record publishes it on its
    key's subject, and a core subscription there hears it as the stream does: one id
    subscribes to its own key, many to the whole bucket. What is heard is only the cue
    to read the key: the message reaches subscribers while the stream stores it, not
    after, and a write the stream refuses (its sequence guard: the record turned final
    meanwhile) is heard all the same. So a record is returned only once read back from
    the store: what a caller gets is what is kept, and a status read after it agrees.
    Records stored before the subscription are found by reading the keys after
    subscribing. The keys still missing are read again: a second later (a record
    routed to the stream just before the subscription may still be on its way into
    the store at the first read), after each reconnect
    (core delivery is at most once; nats-py sends the subscription again before the
    read), every ``RECHECK`` seconds (messages a slow subscriber dropped), and at the
    deadline, so a timeout is never declared over a record that is there.
    """
    wanted = set(job_ids)
    if not wanted:
        return
    found: set[str] = set()
    landed: deque[ResultRecord] = deque()
    arrived = asyncio.Event()
    heard: dict[str, float] = {}
    """Keys whose final record was heard and not read back yet: when first heard."""

    def offer(
        job_id: str, body: bytes, headers: Mapping[str, str] | None, stored: bool = True
    ) -> None:
        if job_id not in wanted or job_id in found or not body:
            return
        try:
            record = _decode(client, body, headers)
        except BadMessage:
            return
        if not record.final:  # retrying, interrupted: the outcome is yet to come
            return
        if stored:
            heard.pop(job_id, None)
            found.add(job_id)
            landed.append(record)
        else:
            heard.setdefault(job_id, time.monotonic())
        arrived.set()

    key_at = len(layout.kv_subject(layout.results_bucket, ""))

    async def hear(msg: Msg) -> None:
        offer(msg.subject[key_at:], msg.data, msg.headers, stored=False)

    async def confirm() -> None:
        """Read back what was heard; keys not stored yet stay, for a while."""
        try:
            for job_id, body, headers in await _read_bodies(client, layout, set(heard)):
                offer(job_id, body, headers)
        except (nats.errors.Error, TimeoutError) as exc:  # reconnecting: read again soon
            log.debug("reading back %d heard result(s): %r", len(heard), exc)
        cutoff = time.monotonic() - CONFIRM_FOR
        for job_id in [job_id for job_id, at in heard.items() if at < cutoff]:
            del heard[job_id]

    one = next(iter(wanted)) if len(wanted) == 1 else ">"
    # The reads below go out after the SUB on the same connection, and the server
    # takes a connection's commands in order: whatever a read misses, the
    # subscription hears. No barrier round trip is needed.
    sub = await client.nc.subscribe(layout.kv_subject(layout.results_bucket, one), cb=hear)
    try:
        deadline = time.monotonic() + timeout
        read_at, reads = 0.0, 0
        reconnects = client.nc.stats["reconnects"]
        confirm_at, confirm_wait = 0.0, CONFIRM_FIRST
        for _ in range(len(wanted)):
            while not landed:
                now = time.monotonic()
                if heard and now >= confirm_at:
                    await confirm()
                    if heard:  # heard before the store took it: read again soon
                        confirm_at = time.monotonic() + confirm_wait
                        confirm_wait = min(2 * confirm_wait, CONFIRM_MAX)
                    else:
                        confirm_at, confirm_wait = 0.0, CONFIRM_FIRST
                    continue
                late = now >= deadline
                if late or now >= read_at or client.nc.stats["reconnects"] != reconnects:
                    reconnects = client.nc.stats["reconnects"]
                    try:
                        for job_id, body, headers in await _read_bodies(
                            client, layout, wanted - found
                        ):
                            offer(job_id, body, headers)
                    except (nats.errors.Error, TimeoutError) as exc:
                        # Reconnecting, or JetStream still starting after a restart: the
                        # subscription still listens, and the read comes again soon.
                        failure: Exception | None = exc
                        read_at = time.monotonic() + TICK
                    else:
                        failure = None
                        reads += 1
                        read_at = time.monotonic() + (TICK if reads == 1 else RECHECK)
                    if late and not landed:
                        missing = sorted(wanted - found)
                        raise ResultTimeout(
                            f"no result after {timeout}s for {len(missing)} of "
                            f"{len(wanted)} job(s), first {missing[0]}"
                            + (f" (the last read failed: {failure!r})" if failure else "")
                        )
                    continue
                arrived.clear()
                wake = min(deadline, read_at, now + TICK, confirm_at if heard else deadline)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), wake - now)
            yield landed.popleft()
    finally:
        with contextlib.suppress(nats.errors.Error):  # a closed connection dropped it already
            await sub.unsubscribe()


async def _read_bodies(
    client: Client, layout: Layout, job_ids: set[str]
) -> list[tuple[str, bytes, Mapping[str, str] | None]]:
    """The stored records of ``job_ids`` (with their headers), ``READ_CONCURRENCY`` at a
    time; those not stored are left out."""
    ids = sorted(job_ids)
    found: list[tuple[str, bytes, Mapping[str, str] | None]] = []
    for start in range(0, len(ids), READ_CONCURRENCY):
        chunk = ids[start : start + READ_CONCURRENCY]
        reads = await asyncio.gather(  # tried once: the wait reads again on its own clock
            *(get_message(client, layout.results_bucket, job_id, window=0) for job_id in chunk)
        )
        found += [(job_id, *read) for job_id, read in zip(chunk, reads, strict=True) if read]
    return found
