"""Jobs that wait for other jobs: ``depends_on=``, released without any polling.

A dependent job is not published to its queue at once. It is *held* in the
``{ns}_deps`` KV (key ``held.{id}``: the whole message and the ids it still waits
for), and each dependency gets a *waiter* entry (``waiters.{dep}``: the ids waiting
on it). Every change is a compare-and-set on the key's revision, so two supervisors
finishing two dependencies at the same moment cannot both miss or both lose an
update.

- When a dependency finishes, the supervisor that finished it removes it from each
  waiting job; the update that empties a job's list publishes the job to its queue
  (``Nats-Msg-Id`` = its id, so a release that happens twice still runs it once).
  The subject is built here from the held record's queue and the job id, both
  validated, never read from the record: whoever can write the deps bucket must not
  be able to make a supervisor publish, with its own permissions, anywhere else (a
  JetStream API subject that deletes a stream, say).
- When a dependency fails for good or is cancelled, each waiting job is cancelled
  with the reason, and so are the jobs waiting on those, down the chain.
- The producer only publishes the job on ``{ns}.held.{id}`` in the job stream, with
  the ids it waits for in a header: it never writes the deps bucket, so its NATS
  permissions need not include it. A supervisor takes it in (a consumer shared by all
  of them, ``supervisor/intake.py``): it writes the held record, registers the
  waiters, and then looks at each dependency's record, so a dependency that finished
  before (or while) the job was enqueued counts; whichever side sees the finish
  releases, and a double release is deduplicated.

Supervisors learn which jobs have waiters from a KV watch on ``waiters.>``, so a job
that nobody waits for costs nothing here. A waiter registered just as its
dependency finished is caught by the supervisor's memory of recently settled jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from naq.errors import ConfigurationError, JobNotFound
from naq.job import validate_job_id
from naq.signing import JOB
from naq.state import record as records
from naq.state.held import (
    bucket,
    depends_on_header,
    pack_held,
    read_depends_on,
    unpack_held,
)
from naq.state.record import ResultStatus, RunFacts
from naq.state.status import job_status
from naq.state.store import read_record, store_unless_final
from naq.supervised import backoff, keep_running
from naq.transport.connect import Client
from naq.transport.kv import cas, current_values, delete, get_entry, get_value, stop_watch, write
from naq.transport.names import DEPENDS_ON_HEADER, Layout, kv_stream
from naq.transport.publish import Outgoing
from naq.transport.streams import subjects_of
from naq.wire import BadMessage, decode_job

log = logging.getLogger(__name__)

CANCELLED_TTL = 7 * 24 * 3600


def dependency_ids(depends_on: Any) -> tuple[str, ...]:
    """``Job``, job id, or a list of either -> ids."""
    if depends_on is None:
        return ()
    items = depends_on if isinstance(depends_on, list | tuple | set | frozenset) else [depends_on]
    ids = []
    for item in items:
        job_id = getattr(item, "job_id", item)
        if not isinstance(job_id, str) or not job_id:
            raise ConfigurationError(f"depends_on takes jobs or job ids, got {item!r}")
        ids.append(validate_job_id(job_id))
    return tuple(dict.fromkeys(ids))


async def hold(
    client: Client,
    layout: Layout,
    job_id: str,
    message: Outgoing,
    depends_on: tuple[str, ...],
) -> None:
    """Producer side: check the dependencies exist, then publish the job on its held
    subject with the ids it waits for; a supervisor takes it in (:func:`take_in`).

    The producer writes nothing but that message: the deps bucket belongs to the
    supervisors, so a producer's NATS permissions need not include it.
    """
    for dep in depends_on:
        record = await read_record(client, layout, dep)
        if record is None or not record.final:
            try:
                await job_status(client, layout, dep)
            except JobNotFound:
                raise ConfigurationError(
                    f"job {job_id} depends on {dep}, which is unknown here (not queued, "
                    "running or finished with its result kept)"
                ) from None
    headers = {
        **(message.headers or {}),
        # Not the job id: the release publishes the job with that id as its message id,
        # and the stream would take it for a duplicate of this one.
        "Nats-Msg-Id": f"{job_id}:held",
        DEPENDS_ON_HEADER: depends_on_header(depends_on),
    }
    await client.publisher.publish(layout.held_subject(job_id), message.payload, headers)


async def take_in(
    client: Client, layout: Layout, subject: str, body: bytes, headers: Mapping[str, str]
) -> None:
    """Supervisor side: move a held job from the job stream into the deps bucket, and
    register it as a waiter of each dependency.

    Raises :class:`BadMessage` for a message that is not a held job naq can take in:
    with a signing key, an unsigned or badly signed one, before anything is decoded.
    A job cancelled meanwhile, or taken in already, is left as it is.
    """
    job_id = layout.job_of_held(subject)
    if job_id is None or not _valid_id(job_id):
        raise BadMessage(f"{subject!r} is not a held job's subject")
    if client.signer is not None and not client.signer.headers_valid(JOB, body, headers):
        raise BadMessage("unsigned or badly signed held job (refused before decoding)")
    meta, _ = decode_job(body)  # the metadata line only
    if meta.job_id != job_id:
        raise BadMessage(f"held job {job_id} carries the job {meta.job_id}")
    try:
        depends_on = dependency_ids(read_depends_on(headers))
    except ConfigurationError as exc:
        raise BadMessage(f"held job {job_id}: {exc}") from None
    if not depends_on:
        raise BadMessage(f"held job {job_id} names no dependency")
    earlier = await read_record(client, layout, job_id)
    if earlier is not None and earlier.final:
        return  # cancelled before it was taken in
    # The server's own headers (Nats-*) are dropped by release_headers when it goes out.
    kept = {name: value for name, value in headers.items() if name != DEPENDS_ON_HEADER}
    message = Outgoing(layout.job_subject(meta.queue, job_id), body, kept)
    held = pack_held(list(depends_on), message, meta.queue, meta.enqueue_time)
    kv = await bucket(client, layout)
    # Taken in already, perhaps only half-way (a supervisor that died before its waiters
    # were written leaves the message to come back): the steps below are finished, each
    # of which may be done twice.
    with contextlib.suppress(KeyWrongLastSequenceError):
        await write(kv, layout.held_key(job_id), held)
    ttl = client.settings.marker_ttl
    for dep in depends_on:
        await cas(kv, layout.waiters_key(dep), lambda v: (_add(v, job_id), None), ttl)
    for dep in depends_on:  # a dependency may have ended before its waiter was registered
        record = await read_record(client, layout, dep)
        if record is not None and record.final:
            await dependency_ended(client, layout, dep, record.status, record.error)


async def held_dependents(client: Client, layout: Layout, dep: str) -> list[str]:
    """Jobs still on their held subject (not taken in yet) that wait for ``dep``: one
    read per such job, so for cancellation only, where few or none are waiting."""
    found = []
    for subject in await subjects_of(client, layout.stream, layout.held_subjects):
        try:
            msg = await client.js.get_last_msg(layout.stream, subject)
        except NotFoundError:  # taken in meanwhile: the deps bucket has it now
            continue
        if (
            dep in read_depends_on(msg.headers)
            and (job_id := layout.job_of_held(subject)) is not None
        ):
            found.append(job_id)
    return found


async def waiters_of(client: Client, layout: Layout, dep: str) -> list[str]:
    """Every job known to wait for ``dep``: those taken in (its waiter entry) and those
    still on their held subject. For showing a job's dependents."""
    value = await get_value(await bucket(client, layout), layout.waiters_key(dep))
    try:
        listed = json.loads(value) if value else []
    except ValueError:  # not a list naq wrote: show what the held messages say
        listed = []
    found = [str(job_id) for job_id in listed] if isinstance(listed, list) else []
    return list(dict.fromkeys(found + await held_dependents(client, layout, dep)))


def _add(value: bytes | None, job_id: str) -> bytes:
    ids = json.loads(value) if value else []
    if job_id not in ids:
        ids.append(job_id)
    return json.dumps(ids).encode()


async def dependency_ended(
    client: Client, layout: Layout, dep: str, status: ResultStatus, error: str | None
) -> None:
    """``dep`` ended with a final ``status``: release or cancel every job waiting on it."""
    kv = await bucket(client, layout)
    waiters, revision = await get_entry(kv, layout.waiters_key(dep))
    if not waiters:
        return
    for job_id in json.loads(waiters):
        if not _valid_id(job_id):
            log.warning("waiters of %s name %r, which is no job id: skipped", dep, job_id)
            continue
        await _one_ended(client, layout, kv, job_id, dep, status, error)
    # A waiter added meanwhile keeps the key: its producer checks the record itself.
    with contextlib.suppress(KeyWrongLastSequenceError):
        await delete(kv, layout.waiters_key(dep), revision, client.settings.marker_ttl)


async def _one_ended(
    client: Client,
    layout: Layout,
    kv: KeyValue,
    job_id: str,
    dep: str,
    status: ResultStatus,
    error: str | None,
) -> None:
    """``dep``, which ``job_id`` waits for, ended with ``status``: release or cancel it."""
    if status == "finished":
        await _satisfied(client, layout, kv, job_id, dep)
    else:
        await cancel_held(client, layout, job_id, f"dependency {dep} {status}: {error}")


async def recheck_held(client: Client, layout: Layout) -> int:
    """Release or cancel every held job one of whose dependencies already ended;
    returns how many dependencies were acted on.

    The backstop for a hold or a release cut off half-way (a supervisor killed between
    two of its writes, a release that failed until the supervisor stopped): whatever
    state was left, the held record says what the job still waits for, and each
    dependency's record says whether it ended. Every step may be done twice.
    """
    kv = await bucket(client, layout)
    acted = 0
    for value in await current_values(client, layout.deps_bucket, layout.all_held):
        try:
            head, body = unpack_held(value)
            job_id = decode_job(body)[0].job_id
            waiting = [dep for dep in head["waiting"] if _valid_id(dep)]
        except (BadMessage, ValueError, KeyError, TypeError) as exc:
            log.warning("a held record naq cannot read was skipped: %s", exc)
            continue
        if not waiting:  # every dependency removed, the release itself cut short
            await _satisfied(client, layout, kv, job_id, None)
            acted += 1
        for dep in waiting:
            record = await read_record(client, layout, dep)
            if record is not None and record.final:
                await _one_ended(client, layout, kv, job_id, dep, record.status, record.error)
                acted += 1
    if acted:
        log.info("re-check of held jobs: %d ended dependencies acted on", acted)
    return acted


async def _satisfied(
    client: Client, layout: Layout, kv: KeyValue, job_id: str, dep: str | None
) -> None:
    """``dep`` no longer holds ``job_id`` back (None: nothing more to remove); the
    change that empties its list publishes it."""

    def change(value: bytes | None) -> tuple[bytes | None, tuple[dict[str, Any], bytes] | None]:
        if value is None:
            return None, None  # released or cancelled already
        head, body = unpack_held(value)
        head["waiting"] = [d for d in head["waiting"] if d != dep]
        return json.dumps(head).encode() + b"\n" + body, (head, body)

    ttl = client.settings.marker_ttl
    state, _ = await cas(kv, layout.held_key(job_id), change, ttl)
    if state is None:
        return
    head, body = state
    if head["waiting"]:
        return
    try:
        subject = layout.job_subject(head["queue"], job_id)  # never the stored "subject"
    except (ConfigurationError, KeyError, TypeError) as exc:
        log.error("held job %s names no valid queue, so it is not released: %s", job_id, exc)
        return
    await client.publisher.publish(subject, body, release_headers(head, job_id))
    log.info("job %s released: its dependencies finished", job_id)
    await cas(kv, layout.held_key(job_id), lambda v: (None, None), ttl)


def release_headers(head: dict[str, Any], job_id: str) -> dict[str, str]:
    """The headers a released job goes out with: the producer's own (a middleware's,
    a signature), without any the server acts on (``Nats-*``: a rollup would purge the
    stream, a schedule would fire elsewhere), and the job id as its message id."""
    stored = head.get("headers")
    kept = {
        str(name): str(value)
        for name, value in (stored.items() if isinstance(stored, dict) else ())
        if not str(name).lower().startswith("nats-")
    }
    return {**kept, "Nats-Msg-Id": job_id}


def _valid_id(job_id: Any) -> bool:
    try:
        validate_job_id(job_id)
    except ConfigurationError:
        return False
    return True


async def cancel_held(client: Client, layout: Layout, job_id: str, reason: str) -> bool:
    """Cancel a held job and, down the chain, the jobs waiting on it."""
    kv = await bucket(client, layout)
    state, _ = await cas(
        kv, layout.held_key(job_id), lambda v: (None, v), client.settings.marker_ttl
    )
    if state is None:
        return False
    head, _ = unpack_held(state)
    facts = RunFacts(queue=head["queue"], enqueued_at=head["t"])
    record = records.cancelled(job_id, facts, reason)
    _, kept = await store_unless_final(client, layout, record, CANCELLED_TTL, expect=0)
    if kept is not None:
        log.info("job %s is %s already: not cancelled", job_id, kept.status)
        return False
    log.info("job %s cancelled: %s", job_id, reason)
    await dependency_ended(client, layout, job_id, "cancelled", reason)
    return True


class DependencyWatch:
    """A supervisor's view of which jobs are waited on, kept by a KV watch.

    ``settled`` is called for every job this supervisor settles for good; it releases
    the job's waiters when it has any. A waiter the watch reports after its dependency
    settled here is handled from the memory of recently settled jobs.
    """

    RECENT = 10_000
    RECHECK_INTERVAL = 300.0
    """Seconds between re-checks of the held jobs (one scan of the held records)."""

    def __init__(self, client: Client, layout: Layout) -> None:
        self._client = client
        self._layout = layout
        self._waited: set[str] = set()
        self._recent: OrderedDict[str, tuple[ResultStatus, str | None]] = OrderedDict()
        """An OrderedDict: dropping the oldest of a plain dict scans past every slot
        deleted before it, a cost that grew with the jobs settled."""
        self._task: asyncio.Task[None] | None = None
        self._recheck: asyncio.Task[None] | None = None
        self._watcher: Any = None
        self._replayed_up_to = 0
        self._stopping = False
        self._stopped = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the watch (before the supervisor pulls), then follow it for the
        supervisor's life: a watch that fails is opened again (``keep_running``)."""
        await self._open()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(
            keep_running("naq-dependency-watch", self._run), name="naq-dependency-watch"
        )
        self._recheck = loop.create_task(
            keep_running("naq-held-recheck", self._recheck_held), name="naq-held-recheck"
        )

    async def _recheck_held(self) -> None:
        """At start and every ``RECHECK_INTERVAL``: release what a hold or a release
        cut off half-way left held (:func:`recheck_held`)."""
        while True:
            await recheck_held(self._client, self._layout)
            await asyncio.sleep(self.RECHECK_INTERVAL)

    async def _open(self) -> None:
        kv = await bucket(self._client, self._layout)
        # The watch first replays the waiters that exist already. Its "replay over"
        # marker can arrive before replayed entries (see naq.transport.streams), so the
        # replay is told apart by revision: at most the bucket's last sequence before it.
        info = await self._client.js.stream_info(kv_stream(self._layout.deps_bucket))
        self._replayed_up_to = info.state.last_seq
        self._watcher = await kv.watch(self._layout.all_waiters)

    async def _run(self) -> None:
        if self._watcher is None:
            await self._open()
        watcher = self._watcher
        try:
            await self._follow(watcher, self._replayed_up_to)
        finally:
            self._watcher = None
            if not self._stopping:
                await _stop_quietly(watcher)
        if not self._stopping:
            raise RuntimeError("the dependency watch ended by itself")

    async def _follow(self, watcher: Any, replayed_up_to: int) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            try:
                await self._seen(entry, replayed_up_to)
            except BadMessage as exc:  # one bad record must not blind the watch
                log.warning("dependency watch: %s: %s; skipped", entry.key, exc)

    async def _seen(self, entry: Any, replayed_up_to: int) -> None:
        initial = entry.revision is not None and entry.revision <= replayed_up_to
        dep = self._layout.dep_of_waiters_key(entry.key)
        if not _valid_id(dep):
            return  # not written by naq: no job of ours is named
        if not entry.value:
            self._waited.discard(dep)
            return
        self._waited.add(dep)
        ended = self._recent.get(dep)
        if ended is None and initial:  # settled while no supervisor was watching
            found = await read_record(self._client, self._layout, dep)
            if found is not None and found.final:
                ended = (found.status, found.error)
        if ended is not None:
            self._release(dep, *ended)

    def settled(self, job_id: str, status: ResultStatus, error: str | None) -> None:
        """Hot path: a set lookup and a dict insert per job, no record built."""
        self._recent[job_id] = (status, error)
        if len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)
        if job_id in self._waited:
            self._release(job_id, status, error)

    def _release(self, dep: str, status: ResultStatus, error: str | None) -> None:
        self._spawn(self._release_until_done(dep, status, error))

    async def _release_until_done(self, dep: str, status: ResultStatus, error: str | None) -> None:
        """``dependency_ended``, tried again with a capped, jittered backoff while it
        fails (the server busy, a leader election, the connection lost): a dependent
        is never left held because one release failed. Each step may be done twice.
        A release still failing when the supervisor stops is left to the re-check of
        held jobs (:func:`recheck_held`) of the next start, here or elsewhere."""
        failures = 0
        while True:
            try:
                await dependency_ended(self._client, self._layout, dep, status, error)
                return
            except Exception as exc:
                failures += 1
                if self._stopping:
                    log.warning(
                        "releasing the dependents of %s failed (%r); left to the re-check "
                        "of held jobs",
                        dep,
                        exc,
                    )
                    return
                delay = backoff(failures)
                log.warning(
                    "releasing the dependents of %s failed (%r); trying again in %.1fs",
                    dep,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):  # a stop cuts the wait short
                    await asyncio.wait_for(self._stopped.wait(), delay)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("releasing dependents failed: %r", exc)

    def abandon(self) -> None:
        """Stop at once, waiting for nothing (a stop past its deadline): releases under
        way end at their next failure, left to the re-check of held jobs."""
        self._stopping = True
        self._stopped.set()
        for task in (self._task, self._recheck):
            if task is not None:
                task.cancel()

    async def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        if self._pending:  # releases under way finish; each logs its own failure
            await asyncio.wait(self._pending)
        if self._watcher is not None:
            await _stop_quietly(self._watcher)
        tasks = [t for t in (self._task, self._recheck) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


async def _stop_quietly(watcher: Any) -> None:
    """Stop a watch that may be broken already: a failure to stop it is said, not raised
    (its consumer idles out on the server by itself)."""
    try:
        await stop_watch(watcher)
    except Exception as exc:
        log.warning("stopping the dependency watch: %s", exc)
