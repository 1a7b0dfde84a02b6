"""KV helpers: one compare-and-set loop, reads that treat a delete marker as absent,
delete markers to publish, a bucket read whole, and ending a watch without leaving
its consumer behind.

Why these are here and not in each writer: the dependency records, the schedules
and the leader lease all change keys that others change at the same moment. One
loop (read, change, write expecting the revision read; on a lost race, read again)
and one reading of nats-py's errors for a stale revision keep them alike. Every read
and write here is tried again through NATS trouble (``naq.transport.retry``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from nats.js.api import Header, RawStreamMsg
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from naq.errors import NaqError
from naq.transport import compat
from naq.transport.connect import Client
from naq.transport.names import kv_stream, kv_subject
from naq.transport.publish import Outgoing
from naq.transport.retry import retry, ride_through
from naq.transport.streams import scan

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 50
WRONG_LAST_SEQUENCE = (10071, 10164)
"""JetStream's error codes for a write whose expected last sequence is stale."""
KV_OPERATION = "KV-Operation"
KV_DELETE = "DEL"
KV_PURGE = "PURGE"
"""The header that marks a KV entry as a delete or purge marker, and its values."""
EXPECTED_LAST_SUBJECT_SEQUENCE = Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value
KV_BATCH = 1_000
"""Values asked for per pull when reading a bucket: small records, so many at once."""


class TooMuchContention(NaqError):
    """A compare-and-set lost its race ``CAS_ATTEMPTS`` times in a row."""


def is_stale_revision(exc: APIError) -> bool:
    """True when the server refused a write because the key changed meanwhile."""
    return exc.err_code in WRONG_LAST_SEQUENCE


async def _riding[T](kv: KeyValue, doing: str, key: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()`` on ``kv``, tried again through NATS trouble for its connection's
    window (a KV leader election failed writes for about 7 s); nothing more on success
    (not even the description, built only on failure)."""
    try:
        return await attempt()
    except Exception as exc:
        return await ride_through(attempt, exc, what=f"{doing} {key}", nc=compat.kv_connection(kv))


async def get_entry(kv: KeyValue, key: str) -> tuple[bytes | None, int | None]:
    """The key's value and revision; ``(None, None)`` when absent or deleted."""
    try:
        entry = await _riding(kv, "reading", key, lambda: kv.get(key, validate_keys=False))
    except (KeyNotFoundError, NotFoundError):
        return None, None
    return entry.value or None, entry.revision


async def get_message(
    client: Client, bucket: str, key: str, *, window: float | None = None
) -> tuple[bytes, Mapping[str, str]] | None:
    """The key's value with the headers it was stored with (a signature, say); None
    when absent or deleted. nats-py's ``kv.get`` drops the headers, so this asks for the
    key's last message directly (the buckets allow direct gets: any replica answers).
    ``window``: how long to ride out NATS trouble, if not the connection's (0: once)."""
    found, _ = await get_message_seq(client, bucket, key, window=window)
    return found


async def get_message_seq(
    client: Client, bucket: str, key: str, *, window: float | None = None
) -> tuple[tuple[bytes, Mapping[str, str]] | None, int]:
    """:func:`get_message`, and the key's last sequence in its stream (0: the key has no
    message, never written or expired by its TTL; a delete marker has its own): what a
    write expecting nobody changed the key meanwhile names
    (``Nats-Expected-Last-Subject-Sequence``)."""
    stream, subject = kv_stream(bucket), kv_subject(bucket, key)

    def read() -> Awaitable[RawStreamMsg]:
        return client.js.get_msg(stream, subject=subject, direct=True)

    try:
        try:
            msg = await read()
        except Exception as exc:  # the retry loop (and its description) only on failure
            msg = await ride_through(
                read, exc, what=f"reading {subject}", nc=client.nc, window=window
            )
    except NotFoundError:  # final: ride_through raises it at once
        return None, 0
    headers = msg.headers or {}
    seq = msg.seq or 0
    if headers.get(KV_OPERATION) in (KV_DELETE, KV_PURGE) or not msg.data:
        return None, seq
    return (msg.data, headers), seq


async def get_value(kv: KeyValue, key: str) -> bytes:
    """The key's value; empty if none (never stored, expired, or removed)."""
    value, _ = await get_entry(kv, key)
    return value or b""


MARKER_TTL = 300.0
"""Seconds a delete or purge marker lives by default (``Settings.marker_ttl``): long
enough for every watcher to see it, after which it only takes room (a supervisor
restarting in a loop, or every released dependency, would pile them up)."""


def ttl_header(seconds: float) -> str:
    """A ``Nats-TTL`` value (a Go duration) for ``seconds``."""
    return f"{seconds:g}s"


async def delete(
    kv: KeyValue, key: str, revision: int | None, marker_ttl: float = MARKER_TTL
) -> None:
    """``kv.delete(last=)`` whose marker expires after ``marker_ttl`` seconds, and that
    fails like ``update`` does when it loses a race.

    nats-py's delete leaves its marker for ever (and ignores a TTL), and raises a plain
    ``BadRequestError`` for a stale expected revision where ``update`` raises
    ``KeyWrongLastSequenceError``. The marker is a purge (rollup of the key's
    subject): nothing is left to come back when it expires, whatever the history.
    """
    js, bucket = compat.kv_bucket(kv)
    headers = {KV_OPERATION: KV_PURGE, "Nats-Rollup": "sub", "Nats-TTL": ttl_header(marker_ttl)}
    if revision:
        headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(revision)
    try:
        await _riding(
            kv,
            "deleting",
            key,
            lambda: js.publish(kv_subject(bucket, key), b"", headers=headers),
        )
    except APIError as exc:
        if is_stale_revision(exc):
            raise KeyWrongLastSequenceError(description=str(exc)) from exc
        raise


def delete_marker(bucket: str, key: str, ttl: str) -> Outgoing:
    """A message that deletes ``key`` once published, as ``kv.delete`` would, but
    publishable in a pipelined batch, and expiring after ``ttl`` (``"60s"``): a marker
    hides the old value at once, and after that it only takes room."""
    return Outgoing(kv_subject(bucket, key), b"", {KV_OPERATION: KV_DELETE, "Nats-TTL": ttl})


async def purge_key(client: Client, bucket: str, key: str, ttl: float | None = None) -> None:
    """Remove ``key`` and its history, as ``kv.purge`` does, but with a marker that
    expires (after ``ttl`` seconds, by default ``Settings.marker_ttl``): nats-py's purge
    leaves one for ever, and the bucket's scans read them."""
    await client.publisher.publish(
        kv_subject(bucket, key),
        b"",
        {
            KV_OPERATION: KV_PURGE,
            "Nats-Rollup": "sub",
            "Nats-TTL": ttl_header(client.settings.marker_ttl if ttl is None else ttl),
        },
    )


async def cas[T](
    kv: KeyValue,
    key: str,
    change: Callable[[bytes | None], tuple[bytes | None, T]],
    marker_ttl: float = MARKER_TTL,
) -> tuple[T, int | None]:
    """Apply ``change(value or None) -> (new value or None to delete, result)`` atomically.

    A ``new`` equal to the value read writes nothing. Returns ``result`` and the
    revision written (None when nothing was written or the key was deleted, with a
    marker that expires after ``marker_ttl`` seconds).
    """
    for _ in range(CAS_ATTEMPTS):
        current, revision = await get_entry(kv, key)
        new, result = change(current)
        try:
            if new == current:
                return result, None
            if new is None:
                await delete(kv, key, revision, marker_ttl)
                return result, None
            return result, await write(kv, key, new, revision)
        except KeyWrongLastSequenceError:
            continue  # somebody else changed it first: read again
    raise TooMuchContention(f"could not update {key}: it kept changing ({CAS_ATTEMPTS} tries)")


async def write(kv: KeyValue, key: str, value: bytes, revision: int | None = None) -> int:
    """Create ``key`` (no revision) or update it expecting ``revision``; the revision
    written. A write whose ack was lost and that is sent again finds its own revision
    (a stale-revision refusal): the compare-and-set loop reads again and sees it done."""
    if revision is None:
        return await _riding(kv, "writing", key, lambda: kv.create(key, value, validate_keys=False))
    return await _riding(
        kv, "writing", key, lambda: kv.update(key, value, last=revision, validate_keys=False)
    )


async def current_values(client: Client, bucket: str, keys: str = ">") -> list[bytes]:
    """The current value of every key of a KV bucket (or those ``keys`` matches, a
    subject pattern); deleted keys left out (delete, purge and the server's expiry
    markers have no body). A read that meets NATS trouble is made again from the start."""

    async def read() -> list[bytes]:
        return [
            msg.data
            async for msg in scan(
                client,
                kv_stream(bucket),
                kv_subject(bucket, keys),
                last_per_subject=True,
                batch=KV_BATCH,
            )
            if msg.data
        ]

    return await retry(read, what=f"reading the bucket {bucket}", nc=client.nc)


async def stop_watch(watcher: KeyValue.KeyWatcher) -> None:
    """End a KV watch without leaving its consumer on the server.

    nats-py's ``KeyWatcher.stop()`` only unsubscribes. The watch's ordered consumer then
    stays on the server until its inactivity threshold (five minutes) runs out, and
    since nats-server 2.15 a stream takes 1,000 consumers at most: a supervisor or
    scheduler restarting in a loop, or a scheduler changing leaders, would pile them
    up. This deletes it as well; if the delete cannot be made (a lost connection), the
    threshold still removes it. (Waiting for results uses no watch at all:
    ``naq.state.store``.)
    """
    await watcher.stop()  # type: ignore[no-untyped-call]
    behind = compat.watch_consumer(watcher)
    if behind is None:
        return
    js, stream, consumer = behind
    try:
        await js.delete_consumer(stream, consumer)
    except Exception as exc:  # gone already, or the connection is: it idles out
        log.debug("watch consumer %s not deleted: %s", consumer, exc)
