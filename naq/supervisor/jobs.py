"""One delivery of one job, from the pulled message to its settled outcome.

The path, in order: decode the metadata only (unreadable: failed stream); during a
drain, hand it back; for a redelivery, read what earlier deliveries left (a final
record: ack, do not run; too many crashes: failed); cancelled meanwhile (its record
says so): ack; refused by this supervisor's serializer policy or, in json mode, its
allow-list: failed; with no slot free, wait in the look-ahead for one (its lease
kept; handed back by a drain or after ``lookahead_wait``); then run it on the
executor and settle the outcome (``naq.supervisor.settle``). Middleware hooks wrap
the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Literal

from nats.aio.msg import Msg

from naq.errors import BrokenExecutor, ConfigurationError
from naq.executors.allow import AllowList, Refused
from naq.executors.base import Call, Executor, NoFreeSlot, NotStarted, Outcome
from naq.heartbeat import Counters
from naq.job import validate_job_id
from naq.middleware import JobContext, Middlewares
from naq.settings import Settings
from naq.signing import JOB
from naq.state import record as records
from naq.state.record import ResultRecord
from naq.state.store import read_record, read_record_seq
from naq.supervisor.settle import Delivery, Settler
from naq.supervisor.signals import Stopping
from naq.transport import commands
from naq.transport.connect import Client
from naq.transport.names import Layout
from naq.wire import BadMessage, JobMeta, decode_job

log = logging.getLogger(__name__)

CANCELLED_REMEMBERED = 10_000
DEATHS_FORGIVEN = 2
"""Worker deaths a job survives whatever its ``max_retries``. A supervisor SIGKILLed,
OOM-killed or lost with its machine takes every job it was running with it, and those
bystanders must run again, not be dead-lettered as failures of their own; a job that
kills its worker every time is still given up after a few deaths."""
LOOKAHEAD_CAP = 64
"""Look-ahead places at most, whatever the concurrency and ``lookahead``: with more
slots than this the pulls are large enough already."""

HANDED_BACK = "handed back by a stopping supervisor"
LATE = "no slot freed in time: handed back for another worker"

Turn = Literal["run", "back", "late", "cancelled"]
"""What a job waiting for a slot is told: run now, be handed back (the drain began, or
it waited too long), or be acked (it was cancelled while it waited)."""


class Jobs:
    """The jobs of one supervisor: those starting, those running, and how they end."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        worker_id: str,
        stopping: Stopping,
        middleware: Middlewares,
        on_broken: Callable[[BrokenExecutor], None],
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.worker_id = worker_id
        self.counters = Counters()
        self.running: dict[str, Delivery] = {}
        """Jobs running now, by delivery (:func:`delivery_key`), not by job id: two
        deliveries of one job (a redelivery while the first still runs, a job published
        twice) each keep their own lease and entry."""
        self.starting = 0
        """Jobs handed over by a puller that do not run yet (including those waiting in
        the look-ahead): their slots or look-ahead places are taken."""
        self.lookahead = (
            0
            if executor.queues_ahead
            else min(executor.concurrency * settings.lookahead, LOOKAHEAD_CAP)
        )
        """Jobs held beyond the executor's slots, already leased, each started the
        moment a slot frees: the pull round trip is hidden behind running jobs. An
        executor that queues ahead itself (process: in its children) counts these
        places in its ``free_slots``, and the supervisor holds none of its own."""
        self.waiting: dict[str, Delivery] = {}
        """Look-ahead jobs waiting for a slot, by delivery: their leases are kept."""
        self._turns: deque[tuple[str, asyncio.Future[Turn]]] = deque()
        """Waiting jobs in arrival order, each told its turn through its future."""
        self._woken = 0
        """Waiting jobs told to run that have not reached ``executor.run`` yet: the
        free slots they are about to take."""
        self.slots_changed = asyncio.Event()
        self._stopping = stopping
        self._middleware = middleware
        self._on_broken = on_broken
        self._tasks: set[asyncio.Task[None]] = set()
        self._settled = asyncio.Event()
        self._cancelled: dict[str, None] = {}
        """Job ids whose cancellation was heard lately and confirmed by their records
        (oldest first, bounded)."""
        self._hinted: dict[str, None] = {}
        """Job ids a cancellation broadcast named that were not running here: their
        records are read if they arrive (oldest first, bounded)."""
        self._allow = (
            AllowList.configured(settings.allow_patterns, settings.preload_modules, os.getcwd())
            if settings.job_serializer == "json"
            else None
        )
        self._client: Client | None = None
        self._layout = Layout(settings.namespace)
        self._settler: Settler | None = None
        self._signer = settings.signer
        self._subject_prefixes: dict[str, str] = {}
        self.on_dead_letter: Callable[[str], None] = _ignore
        """Told the queue of each job dead-lettered without a run (metrics)."""

    @property
    def settler(self) -> Settler:
        assert self._settler is not None, "the supervisor is not connected"
        return self._settler

    def storage_full(self) -> bool:
        """The server refuses writes for lack of storage: no job is taken in."""
        return self._settler is not None and self._settler.full.is_set()

    def attach(self, client: Client, settler: Settler) -> None:
        self._client = client
        self._settler = settler
        self.executor.slot_freed = self._slot_freed

    # -- look-ahead --------------------------------------------------------------------
    def room(self) -> int:
        """Jobs this supervisor can take in beside those in hand: free slots and open
        look-ahead places, less the jobs starting or waiting."""
        ahead = self.lookahead if self.executor.ahead_open else 0
        return self.executor.free_slots() + ahead - self.starting

    def _close_lookahead(self) -> None:
        """Jobs run longer than ``lookahead_wait``: hold none beyond the slots until one
        ends sooner (a held job would only wait, while another worker may be free)."""
        self.executor.ahead_open = False

    def _slot_free(self) -> bool:
        """A slot can be taken now, by a job no waiting job comes before."""
        return self.executor.free_slots() - self._woken > 0 and not self._turns

    def _slot_freed(self) -> None:
        """A slot may have freed: wake the waiting jobs that now have one, oldest first,
        and let the pullers ask for the look-ahead places that reopen."""
        while self._turns and self.executor.free_slots() - self._woken > 0:
            _, turn = self._turns.popleft()
            if not turn.done():
                self._woken += 1
                turn.set_result("run")
        self.slots_changed.set()

    async def _wait_for_slot(self, key: str, job: Delivery) -> Turn:
        """Wait in the look-ahead until a slot frees (``run``: the caller must reach
        ``executor.run`` without awaiting), at most ``lookahead_wait`` seconds.

        The job's lease is kept meanwhile (it is in ``waiting``). A drain hands it back
        at once (``back``); a longer wait hands it back too (``late``: the slots hold
        long jobs, and another worker may be free) and closes the look-ahead until a
        job shorter than ``lookahead_wait`` ends; a cancellation confirmed meanwhile
        ends it (``cancelled``)."""
        if self._stopping.draining:
            return "back"
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[Turn] = loop.create_future()
        entry = (key, turn)
        self._turns.append(entry)
        self.waiting[key] = job
        late = loop.call_later(self.settings.lookahead_wait, self._late, turn)
        try:
            await turn
        except BaseException:  # cancelled while waiting: the slot it was given goes on
            woken = turn.done() and not turn.cancelled() and turn.result() == "run"
            self._leave(entry)
            if woken:
                self._slot_freed()
            raise
        finally:
            late.cancel()
        self._leave(entry)
        return turn.result()

    def _late(self, turn: asyncio.Future[Turn]) -> None:
        """A job waited ``lookahead_wait`` for a slot: it is handed back (one timer per
        waiting job, not a ``wait_for`` and a shield)."""
        if not turn.done():
            turn.set_result("late")
            self._close_lookahead()

    def _leave(self, entry: tuple[str, asyncio.Future[Turn]]) -> None:
        """A waiting job's wait is over: its slot, if it was woken for one, is taken
        from now on (the caller reaches ``executor.run`` without awaiting)."""
        key, turn = entry
        del self.waiting[key]
        if turn.done() and not turn.cancelled() and turn.result() == "run":
            self._woken -= 1
        else:
            turn.cancel()
            with contextlib.suppress(ValueError):  # a woken one was taken off already
                self._turns.remove(entry)

    def hand_back_waiting(self) -> None:
        """The drain began: every job waiting for a slot is handed back now."""
        for _, turn in self._turns:
            if not turn.done():
                turn.set_result("back")

    def _end_wait(self, job_id: str) -> bool:
        """A cancellation confirmed: the job's waiting deliveries end without running."""
        found = False
        for key, turn in self._turns:
            if not turn.done() and self.waiting[key].meta.job_id == job_id:
                turn.set_result("cancelled")
                found = True
        return found

    # -- dispatch ----------------------------------------------------------------------
    def dispatch(self, queue: str, msg: Msg) -> None:
        """Called by a puller for each message: its slot or look-ahead place is taken
        from now on.

        A message with no room for it (a request left open across a reconnect) is
        handed back rather than given to a full executor."""
        if self.room() <= 0:
            self.hand_back(queue, msg)
            return
        self.starting += 1
        self._track(self._handle(queue, msg))

    def hand_back(self, queue: str, msg: Msg) -> None:
        """A message beyond the free slots (a pull request left open on the server
        across a reconnect delivers more than was asked): handed back at once, without
        counting as a run, so it runs as soon as a slot frees, here or elsewhere,
        instead of waiting out ``ack_wait``."""
        self._track(self._give_back(queue, msg, "more jobs arrived than free slots"))

    def _track(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.slots_changed.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("settling a job failed: %r", exc, exc_info=exc)

    async def wait_all(self, timeout: float | None) -> None:
        """Wait for every job in hand to be settled, at most ``timeout`` seconds or
        until a hard stop."""
        if not self._tasks:
            return
        # asyncio.wait, not gather: each job's failure was logged by _job_done already.
        all_done = asyncio.ensure_future(asyncio.wait(set(self._tasks)))
        hard = asyncio.ensure_future(self._stopping.hard.wait())
        await asyncio.wait([all_done, hard], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        all_done.cancel()  # stops waiting; the jobs themselves run on
        hard.cancel()

    def unsettled(self) -> int:
        """Deliveries in hand not settled yet (starting, running or settling)."""
        return len(self._tasks)

    async def settle_remaining(self) -> None:
        """After the executor cut the rest short: wait for their outcomes to be settled."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))  # failures were logged by _job_done

    # -- one delivery ------------------------------------------------------------------
    async def _handle(self, queue: str, msg: Msg) -> None:
        settler = self._settler
        assert settler is not None, "the supervisor is not connected"
        started = False
        try:
            if self._stopping.draining:  # reached us during the drain: hand it back
                await self._give_back(queue, msg, HANDED_BACK)
                return
            try:
                meta, payload = self._admit(msg, queue)
            except BadMessage as exc:
                if await settler.fail(msg, queue, None, str(exc), None):
                    self.count_failure(queue)
                return
            job = Delivery(msg, queue, meta, _attempt(msg))
            if job.attempt > 1 and not await self._resume(settler, job):
                return
            if meta.job_id in self._hinted or meta.job_id in self._cancelled:
                cancelled = await self._was_cancelled(meta.job_id)  # read only when hinted
            else:
                cancelled = False
            if cancelled:
                await commands.ack(msg)  # cancelled while on its way here: it never runs
                return
            refusal = self._refuse(meta)
            if refusal:
                if await settler.fail(msg, queue, job, refusal, None):
                    self.count_failure(queue)
                return
            call = Call(
                meta.job_id,
                meta.function,
                meta.serializer,
                payload,
                meta.options.timeout,
                meta.is_async,
                job.attempt,
                keep_result=meta.options.result_ttl != 0,
                allow=self._allow,
            )
            key = delivery_key(msg)
            if not self._slot_free():
                turn = await self._wait_for_slot(key, job)
                if turn == "cancelled":
                    await commands.ack(msg)  # cancel_job wrote its record: it never runs
                    return
                if turn != "run":
                    await self._interrupted(
                        job,
                        HANDED_BACK if turn == "back" else LATE,
                    )
                    return
            # Nothing awaits from here to executor.run, which takes its slot at once.
            job.started_at = time.time()
            context = self._context(job) if self._middleware else None
            if context is not None:
                self._middleware.emit("before_job", context)
                if context.trace_context:  # a tracing hook: the job runs under its span
                    call = dataclasses.replace(
                        call, trace_context=tuple(context.trace_context.items())
                    )
            self.running[key] = job
            self.starting -= 1
            started = True
            try:
                outcome = await self.executor.run(call)
                if time.time() - job.started_at < self.settings.lookahead_wait:
                    self.executor.ahead_open = True
            except BrokenExecutor as exc:
                await commands.nak(msg)  # not the job's fault: hand it back untouched
                self._on_broken(exc)
                return
            except NoFreeSlot as exc:  # an executor whose free_slots overstated its room
                log.warning("%s: handed back", exc)
                await self._interrupted(job, str(exc))
                return
            except NotStarted as exc:  # queued in the executor, taken back before it ran
                if exc.reason == "late":
                    self._close_lookahead()
                await self._interrupted(job, LATE if exc.reason == "late" else HANDED_BACK)
                return
            finally:
                del self.running[key]
                self._slot_freed()
            if context is not None:
                self._middleware.emit_after("after_outcome", context, outcome)
            action = await self._settle(settler, job, outcome)
            if context is not None:
                self._middleware.emit_after("after_settle", context, outcome, action)
        finally:
            if not started:
                self.starting -= 1

    async def _give_back(self, queue: str, msg: Msg, reason: str) -> None:
        """Nak a message that is not run here now; an unreadable one is nak'd as it
        came (its next delivery dead-letters it)."""
        try:
            meta, _ = self._admit(msg, queue)
        except BadMessage:
            await commands.nak(msg)
            return
        await self._interrupted(Delivery(msg, queue, meta, _attempt(msg)), reason)

    async def _interrupted(self, job: Delivery, reason: str) -> None:
        """Hand ``job`` back without counting it as a run: its record says it was
        interrupted (the next delivery subtracts it), then nak, so it comes back at
        once. A final record is left as it is (that delivery only acks)."""
        record, _ = await self._history(job)
        if record is None or not record.final:
            job.interruptions += 1
            if not await self.settler.note(job, records.interrupted, reason):
                return  # the record turned final meanwhile: the message was acked
        await commands.nak(job.msg)

    def _admit(self, msg: Msg, queue: str) -> tuple[JobMeta, bytes]:
        """The job's metadata and still-encoded payload, once the message has shown it
        may be read: with a signing key, its signature must hold before a byte of it is
        decoded; and the id and queue it names must be the subject it came on, so a job
        (signed or not) cannot be replayed into another queue under another name.
        Raises :class:`BadMessage` with the reason otherwise (the job is dead-lettered).
        """
        if self._signer is not None and not self._signer.headers_valid(JOB, msg.data, msg.headers):
            raise BadMessage(
                "unsigned or badly signed job: this supervisor has a signing key and "
                "runs only jobs signed with it (refused before decoding)"
            )
        meta, payload = decode_job(msg.data)
        # decode_job validated the queue and the id: a cached prefix and one
        # concatenation per job, not two more regex checks.
        prefix = self._subject_prefixes.get(queue)
        if prefix is None:
            prefix = self._subject_prefixes[queue] = self._layout.job_subject_prefix(queue)
        if meta.queue != queue or msg.subject != prefix + meta.job_id:
            raise BadMessage(
                f"job {meta.job_id} (queue {meta.queue!r}) arrived on {msg.subject!r}, "
                "which is not its own subject"
            )
        return meta, payload

    def _context(self, job: Delivery) -> JobContext:
        return JobContext(
            job_id=job.meta.job_id,
            function=job.meta.function,
            queue=job.queue,
            attempt=job.attempt,
            enqueued_at=job.meta.enqueue_time,
            options=job.meta.options,
            headers=dict(job.msg.headers or {}),
            worker_id=self.worker_id,
            started_at=job.started_at,
            delivered=_attempt(job.msg),
        )

    async def _resume(self, settler: Settler, job: Delivery) -> bool:
        """A redelivered job: read what its earlier deliveries left; False if it must not run.

        Finished (its ack was lost) or cancelled: ack and stop. Otherwise count the
        earlier deliveries that ended without a word (the worker died: a job that kills
        its supervisor every time) and dead-letter the job once they exceed its
        retries (and at least ``DEATHS_FORGIVEN``), so a poison job is never
        redelivered for ever while the bystanders of a dead worker run again.
        """
        record, previous_ended = await self._history(job)
        if record is not None and record.final:
            await commands.ack(job.msg)
            return False
        if job.crashes > max(job.meta.options.max_retries, DEATHS_FORGIVEN):
            job.attempt -= 1  # this delivery does not run: count the runs there were
            if await settler.fail(
                job.msg,
                job.queue,
                job,
                f"its worker died while running it {job.crashes} time(s); it is not run again",
                None,
            ):
                self.count_failure(job.queue)
            return False
        if not previous_ended:  # leave a trace, so the next delivery can count this one
            return await settler.note(job, records.running, "the worker running it before died")
        return True

    async def _history(self, job: Delivery) -> tuple[ResultRecord | None, bool]:
        """Fill in the job's crashes, interruptions and countable attempt from its record;
        also returns the record and whether the previous delivery ended with a word."""
        # The delivery count off the message, not ``job.attempt``, which this sets: read
        # again when a redelivery is handed back, the countable attempt was taken for
        # the delivery and a crash that never was counted (a job handed back a few
        # times was dead-lettered as one that kept killing its worker).
        delivery = _attempt(job.msg)
        if delivery == 1:
            return None, True
        assert self._client is not None, "the supervisor is not connected"
        record, job.record_seq = await read_record_seq(self._client, self._layout, job.meta.job_id)
        if record is not None and record.verified is False:  # forged, or from before the key
            log.warning(
                "job %s: its stored record is not signed with the key: ignored", job.meta.job_id
            )
            record = None
        previous_ended = record is not None and record.ended_delivery() == delivery - 1
        job.crashes = (record.crashes if record else 0) + (0 if previous_ended else 1)
        job.interruptions = record.interruptions if record else 0
        job.attempt = delivery - job.interruptions
        return record, previous_ended

    def _refuse(self, meta: JobMeta) -> str | None:
        if self.settings.job_serializer == "json" and meta.serializer != "json":
            return (
                f"job {meta.job_id} is serialized with {meta.serializer!r}; this supervisor "
                "runs with NAQ_JOB_SERIALIZER=json and never unpickles"
            )
        if self._allow is not None:
            try:
                self._allow.check(meta.function)  # imports nothing
            except Refused as exc:
                return f"job {meta.job_id} refused: {exc}"
        return None

    async def _settle(self, settler: Settler, job: Delivery, outcome: Outcome) -> str:
        if self._stopping.hard.is_set() and outcome.status == "cancelled":
            log.info("job %s cut short by shutdown: handed back", job.meta.job_id)
        job.cancel_requested = job.meta.job_id in self._cancelled
        done = await settler.settle(job, outcome)
        # "kept": another delivery's final record was there first; this run still ran
        # through, and counts as processed when it succeeded.
        if done == "finished" or (done == "kept" and outcome.status == "ok"):
            self.counters.processed += 1
        elif done == "failed":
            self.counters.failed += 1
        elif done == "retry":
            self.counters.retried += 1
        self._settled.set()
        return done

    def count_failure(self, queue: str) -> None:
        """A job failed for good without a run (unreadable, refused, or it killed its
        worker too often): it is in the failed stream."""
        self.counters.failed += 1
        self.on_dead_letter(queue)
        self._settled.set()

    async def wait_until(self, predicate: Callable[[Counters], bool]) -> None:
        """Wait until ``predicate(counters)`` holds; woken by each settled job, no polling."""
        while not predicate(self.counters):
            self._settled.clear()
            await self._settled.wait()

    # -- cancellation ------------------------------------------------------------------
    async def on_cancel(self, msg: Msg) -> None:
        """``cancel_job``'s broadcast: a hint to look, never an order.

        Anyone who may publish on the control subject can send it, so the job's stored
        record decides: ``cancel_job`` writes ``cancelled`` there before it broadcasts,
        and only then is a job running here stopped, or one arriving later skipped. A
        job that is not running here is noted, and its record read if it arrives.
        """
        try:
            job_id = validate_job_id(msg.data.decode())
        except (UnicodeDecodeError, ConfigurationError):
            return  # not a job id: nothing of ours is named
        held = [*self.running.values(), *self.waiting.values()]
        if not any(job.meta.job_id == job_id for job in held):
            _remember(self._hinted, job_id)
            return
        try:
            confirmed = await self._confirm_cancelled(job_id)
        except Exception as exc:  # a lost connection, say: the job runs on
            log.warning("cancellation of job %s not confirmed: %r", job_id, exc)
            return
        if confirmed and self._end_wait(job_id):
            log.info("job %s cancelled while waiting for a slot", job_id)
        if confirmed and await self.executor.cancel(job_id):
            log.info("job %s cancelled while running", job_id)

    async def _was_cancelled(self, job_id: str) -> bool:
        """Whether ``job_id`` was cancelled, as a broadcast said and its record confirms.

        A broadcast heard while the record is read is read for again; nothing awaits
        between the last check and the job's start, so none is missed in between.
        """
        while job_id not in self._cancelled and job_id in self._hinted:
            del self._hinted[job_id]
            await self._confirm_cancelled(job_id)
        return job_id in self._cancelled

    async def _confirm_cancelled(self, job_id: str) -> bool:
        """True (and remembered) if the job's stored record says ``cancelled``."""
        assert self._client is not None, "the supervisor is not connected"
        record = await read_record(self._client, self._layout, job_id)
        if record is None or record.status != "cancelled" or record.verified is False:
            return False  # verified False: a record a signing key does not vouch for
        _remember(self._cancelled, job_id)
        return True


def delivery_key(msg: Msg) -> str:
    """What tells one delivery from another: its ack subject, which names the stream
    sequence and the delivery count (unique per delivery, where the job id is not)."""
    return msg.reply or f"unacknowledgeable-{id(msg)}"


def _ignore(_: str) -> None:
    return None


def _remember(ids: dict[str, None], job_id: str) -> None:
    """Add ``job_id`` to a bounded, oldest-first memory of ids."""
    ids[job_id] = None
    if len(ids) > CANCELLED_REMEMBERED:
        del ids[next(iter(ids))]


def _attempt(msg: Msg) -> int:
    """The delivery count, read straight off the ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (v1) or
    ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>...`` (v2); nats-py's
    ``msg.metadata`` parses the same with regexes, at several times the cost.
    """
    tokens = (msg.reply or "").split(".")
    try:
        return int(tokens[4] if len(tokens) == 9 else tokens[6])
    except (IndexError, ValueError):
        return 1
