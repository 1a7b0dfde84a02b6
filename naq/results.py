"""The results KV: storing a job's outcome, and reading or waiting for it.

Each result is a key ``{job_id}`` in ``{ns}_results`` carrying its own TTL
(``Nats-TTL``), so one bucket serves jobs that keep results for a minute and jobs
that keep them for a month. Waiting uses a KV watch: the reader is told the moment
the result lands, with no polling.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from naq.connection import Client
from naq.errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout, SerializationError
from naq.job import KEEP_FOREVER
from naq.kvwatch import stop_watch
from naq.layout import Layout
from naq.serializers import get_serializer
from naq.wire import ResultRecord, decode_result, encode_result


async def store_result(client: Client, layout: Layout, record: ResultRecord, ttl: int) -> None:
    """Write ``record`` with a per-key TTL (``ttl`` seconds, or ``KEEP_FOREVER``)."""
    headers = {"Nats-TTL": "never" if ttl == KEEP_FOREVER else f"{max(1, ttl)}s"}
    await client.publisher.publish(
        layout.kv_subject(layout.results_bucket, record.job_id), encode_result(record), headers
    )


def unpack(record: ResultRecord, allow_pickle: bool = True) -> Any:
    """The job's return value, or :class:`JobFailed` for a failed job."""
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


async def _bucket(client: Client, layout: Layout) -> KeyValue:
    return await client.js.key_value(layout.results_bucket)


async def read_record(client: Client, layout: Layout, job_id: str) -> ResultRecord | None:
    kv = await _bucket(client, layout)
    try:
        entry = await kv.get(job_id)
    except (KeyNotFoundError, NotFoundError):
        return None
    if not entry.value:
        return None
    return decode_result(entry.value)


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

    One id watches its own key; many watch the whole bucket (one consumer instead
    of thousands), which also replays results already stored.
    """
    wanted = set(job_ids)
    if not wanted:
        return
    seen: set[str] = set()
    kv = await _bucket(client, layout)
    watcher = await kv.watch(next(iter(wanted)) if len(wanted) == 1 else ">")
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < len(wanted):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(wanted - seen)
                raise ResultTimeout(
                    f"no result after {timeout}s for {len(missing)} of {len(wanted)} "
                    f"job(s), first {missing[0]}"
                )
            try:
                entry = await watcher.updates(timeout=remaining)  # type: ignore[no-untyped-call]
            except TimeoutError:
                continue
            if entry is None or not entry.value or entry.key not in wanted or entry.key in seen:
                continue
            record = decode_result(entry.value)
            if not record.final:  # retrying, interrupted, running: the outcome is yet to come
                continue
            seen.add(entry.key)
            yield record
    finally:
        await stop_watch(watcher)
