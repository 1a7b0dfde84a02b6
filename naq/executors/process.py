"""Process executor: naq's own pool of long-lived child processes, one job each at a time.

Not ``ProcessPoolExecutor``: there one dead child breaks every pending future and a
running call cannot be stopped. Here each slot owns one child:

    supervisor loop                          child (forkserver or spawn)
    ---------------                          ---------------------------
    run(Call) -> slot --frame: Call, n----->  decode payload, run, encode result
              <--------frame: Outcome, rss--  (bytes both ways, never pickle)
    run(Call) -> slot --frame: Call, n+1--->  queued in the socket (the look-ahead):
                                              started as soon as n's outcome is sent,
    take back n+1 ----- turns (shared) -----  unless taken back first (drain, late)
    EOF / exit code  -> "crashed", reason names the signal or exit code
    timeout          -> SIGKILL, "timeout";  cancel -> SIGKILL, "cancelled"
    RSS over limit   -> during a job: SIGKILL, "memory limit exceeded";
                        after a job: the child is replaced before its next job
    N jobs done      -> replaced (N has jitter so children do not all restart at once)

A slot whose child is gone gets a new one at once, in the background. Children that
die before they are ready again and again (an import error in a preloaded module)
make the executor broken: the supervisor stops with a clear message instead of
spawning for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import operator
import random
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any, cast

import psutil

from naq.errors import BrokenExecutor
from naq.executors import child
from naq.executors.base import Call, Executor, NoFreeSlot, NotStarted, Outcome, SlotInfo
from naq.executors.calls import cancelled, timed_out
from naq.executors.frames import HEADER, pack_call, unpack, unpack_outcome
from naq.settings import Settings
from naq.supervised import finish

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
MEMORY_CHECK_INTERVAL = 1.0
STORM_FAILURES = 5
"""Start-up failures in a row (no child got ready in between) that break the pool."""
TURNS_LOCK_TIMEOUT = 1.0
"""Seconds to wait for a child's turns lock; a child holds it for a few instructions,
so only a child killed while holding it makes this run out."""


class ChildDied(Exception):
    pass


class Withdrawn(Exception):
    """A call queued in a child was taken back before it started (see ``Child.withdraw``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Reply = tuple[dict[str, Any], bytes]
"""An outcome frame from a child, split into its head and body."""


class Frames(asyncio.Protocol):
    """The supervisor's end of one child's socket.

    Until the child is ready, frames are read with :meth:`next_frame`; after that each
    frame goes to ``deliver``, in the callback that read it, and a child that dies
    (EOF) or is killed calls ``lost`` at once. A protocol rather than a stream reader
    and a task per job: a job's reply costs one callback and one future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._early: deque[bytes] = deque()
        self.closed = False
        self.deliver: Callable[[bytes], None] | None = None
        self.lost: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (the CLI's loop) are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= HEADER.size:
            size = HEADER.unpack_from(buffer, start)[0]
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            self._arrived(bytes(buffer[start + HEADER.size : end]))
            start = end
        if start:
            del buffer[:start]

    def _arrived(self, frame: bytes) -> None:
        if self.deliver is not None:
            self.deliver(frame)
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        else:
            self._early.append(frame)

    def next_frame(self) -> asyncio.Future[bytes]:
        """The next frame from the child; fails with :class:`ChildDied` once it is gone."""
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._early:
            waiter.set_result(self._early.popleft())
        elif self.closed:
            waiter.set_exception(ChildDied())
        else:
            self._waiter = waiter
        return waiter

    def fail(self) -> None:
        """The child is gone or being killed: every call waiting on it ends now."""
        if self.closed:
            return
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ChildDied())
        if self.lost is not None:
            self.lost()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail()


@dataclass(eq=False)
class Entry:
    """A call sent to a child and not answered yet."""

    call: Call
    seq: int
    reply: asyncio.Future[Reply]
    """The outcome frame; fails with ChildDied, or Withdrawn once taken back."""
    first: asyncio.Future[None]
    """Done once every call sent before it has ended (the child runs it next), or once
    it ended without a reply (taken back, or the child died)."""
    due: float = 0.0
    """Loop time by which a queued call must have its turn, or be taken back."""

    def end(self, error: Exception) -> None:
        """The call ends without an outcome: ``error`` is its reply."""
        if not self.reply.done():  # its task may have been cancelled meanwhile
            self.reply.set_exception(error)
        if not self.first.done():
            self.first.set_result(None)


@dataclass(eq=False)
class Child:
    process: BaseProcess
    frames: Frames
    pid: int
    max_jobs: int
    turns: Any
    """Shared with the child (``child._withdrawn``): the last call it started, and the
    calls taken back."""
    rss: int = 0
    jobs_done: int = 0
    retire: bool = False
    kill_reason: str | None = None
    pending: dict[int, Entry] = field(default_factory=dict)
    """Calls sent and not answered, in the order sent: the first runs (or is about to),
    the others wait in the child's socket."""
    seq: int = 0
    reaped: asyncio.Task[None] | None = None
    late: asyncio.TimerHandle | None = None
    """Wakes when the oldest call queued here has waited ``lookahead_wait``."""
    unsent: list[bytes] = field(default_factory=list)
    """Call frames submitted in this turn of the loop, written together at its end."""

    @property
    def job_id(self) -> str | None:
        """The job the child runs now (or is about to start)."""
        head = next(iter(self.pending.values()), None)
        return None if head is None else head.call.job_id

    def submit(self, call: Call) -> Entry:
        """Send ``call``; it runs after every call sent before it."""
        self.seq += 1
        loop = asyncio.get_running_loop()
        entry = Entry(call, self.seq, loop.create_future(), loop.create_future())
        if not self.pending:
            entry.first.set_result(None)
        self.pending[entry.seq] = entry
        if not self.unsent:
            loop.call_soon(self._send)
        self.unsent.append(pack_call(call, entry.seq))
        return entry

    def _send(self) -> None:
        """Write the calls submitted in this turn of the loop with one ``write``: one
        wake-up of the child for them, not one each (a write to a waiting child costs
        a context switch, on two cores the supervisor's largest cost per job)."""
        frames, self.unsent = self.unsent, []
        if self.frames.transport is not None and not self.frames.closed:
            self.frames.transport.write(b"".join(frames))

    def arrived(self, frame: bytes) -> None:
        head, body = unpack(frame)
        entry = self.pending.pop(int(head.get("seq", 0)), None)
        if entry is not None and not entry.reply.done():
            entry.reply.set_result((head, body))
        self._next()

    def _next(self) -> None:
        """The call now first in line learns it is next."""
        for entry in self.pending.values():
            if not entry.first.done():
                entry.first.set_result(None)
            return

    def started(self, entry: Entry) -> bool:
        return bool(self.turns[0] >= entry.seq)

    def withdraw(self, entry: Entry, reason: str) -> bool:
        """Take back a call the child has not started (its ``run`` ends in
        :class:`Withdrawn`); False once the child has started it or it ended."""
        if self.pending.get(entry.seq) is not entry:
            return False
        lock = self.turns.get_lock()
        if not lock.acquire(timeout=TURNS_LOCK_TIMEOUT):  # only a child killed holding it
            self.kill("its worker process stopped answering")
            return False
        try:
            if self.turns[0] >= entry.seq:
                return False
            self.turns[1 + entry.seq % (len(self.turns) - 1)] = entry.seq
        finally:
            lock.release()
        del self.pending[entry.seq]
        entry.end(Withdrawn(reason))
        self._next()
        return True

    def died(self) -> None:
        """Every call sent and not answered ends with ChildDied."""
        pending, self.pending = self.pending, {}
        for entry in pending.values():
            entry.end(ChildDied())

    def kill(self, reason: str) -> None:
        """Stop the child now; the job it runs ends with ``reason``, the calls queued
        behind it are sent again to the next child."""
        if self.kill_reason is None:
            self.kill_reason = reason
        with contextlib.suppress(ProcessLookupError, AttributeError):
            self.process.kill()
        self.frames.fail()

    def close(self) -> None:
        if self.frames.transport is not None:
            self.frames.transport.close()


@dataclass(eq=False)
class Slot:
    index: int
    child: Child | None = None
    busy: int = 0
    """Calls given to this slot and not returned: one running, the rest queued."""
    starting: asyncio.Task[Child] | None = None


def _abandon(process: BaseProcess, sock: socket.socket) -> None:
    """A child whose start was cut short (a shutdown cancelled it): killed and its
    socket closed. A child ignores SIGTERM (the supervisor's drain decides), so one
    left running kept its socket's end open and multiprocessing's exit handler, which
    joins every child, waited for it for ever."""
    sock.close()
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError, OSError):
            process.kill()


LATE_START_FAILED = "process executor: a child's start, cut short by a stop, failed"


async def _abandon_once_started(
    starting: asyncio.Future[None], process: BaseProcess, sock: socket.socket
) -> None:
    """A start cut short by a cancel goes on in its thread: wait for it, then abandon
    the child it made. A start that failed meanwhile is logged, not raised: the
    cancel is what the caller gets. Cancelled again while waiting, the child is
    abandoned when its start ends."""
    try:
        await asyncio.wait({starting})  # neither raises its failure nor cancels it
    except asyncio.CancelledError:
        starting.add_done_callback(lambda done: _abandon_started(done, process, sock))
        raise
    _abandon_started(starting, process, sock)


def _abandon_started(done: asyncio.Future[None], process: BaseProcess, sock: socket.socket) -> None:
    """Abandon the child of a finished start; its failure, if it failed, is logged."""
    if not done.cancelled() and done.exception() is not None:
        log.warning(LATE_START_FAILED, exc_info=done.exception())
    _abandon(process, sock)


def describe_exit(process: BaseProcess) -> str:
    """What killed a child, as rq and gunicorn put it: the signal, or the exit code."""
    code = process.exitcode
    if code is None:
        return "worker process vanished"
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (perhaps out of memory)" if -code == signal.SIGKILL else ""
        return f"worker process killed by signal {name} ({-code}){hint}"
    return f"worker process exited with code {code}"


_busy = operator.attrgetter("busy")


class _Resend(Exception):
    """The call never started on its child (the child died or retired first)."""


class ProcessExecutor(Executor):
    name = "process"
    queues_ahead = True

    def __init__(self, concurrency: int, settings: Settings) -> None:
        super().__init__(concurrency, settings)
        # Never fork the supervisor itself: its event loop and threads would be copied.
        methods = multiprocessing.get_all_start_methods()
        method = "forkserver" if "forkserver" in methods else "spawn"
        self._ctx: Any = multiprocessing.get_context(method)
        if method == "forkserver":
            # Imported once in the forkserver, these pages are shared by every child
            # instead of copied into each (the CLI pulls in most of naq, nats included).
            preload = ["naq.executors.child", "naq.cli", *settings.preload_modules]
            self._ctx.set_forkserver_preload(preload)
        self._slots = [Slot(i) for i in range(concurrency)]
        self._ahead = settings.lookahead
        """Calls queued in each child behind the one it runs: the supervisor's look-ahead,
        kept where the next job starts without a round trip to the supervisor."""
        self._busy = 0
        """Calls given to all slots and not returned (the sum of their ``busy``)."""
        self._processes = threading.Lock()
        self._start_failures = 0
        self._retired: set[Child] = set()
        """Children replaced while running a job, not reaped yet: a stop must reach them
        too (they are no slot's child any more)."""
        self._broken: BrokenExecutor | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- children ----------------------------------------------------------------------
    def _job_limit(self) -> int:
        limit = self.settings.max_jobs_per_child
        return limit + random.randint(0, max(1, limit // 4)) if limit else 0

    async def _spawn(self, slot: Slot) -> Child:
        """A ready child, or BrokenExecutor after too many start-up failures in a row."""
        while True:
            if self._broken is not None:
                raise self._broken
            try:
                return await self._spawn_once(slot)
            except ChildDied as exc:
                self._start_failures += 1
                log.error("process executor: a child failed to start: %s", exc)
                if self._start_failures >= STORM_FAILURES:
                    self._broken = BrokenExecutor(
                        f"process executor: {self._start_failures} children in a row died "
                        f"at start-up; last: {exc}"
                    )
                    raise self._broken from None
                await asyncio.sleep(min(2.0, 0.1 * 2**self._start_failures))

    async def _spawn_once(self, slot: Slot) -> Child:
        parent_sock, child_sock = socket.socketpair()
        turns = self._ctx.Array("q", 2 + self._ahead + 1)
        max_jobs = self._job_limit()
        process = self._ctx.Process(
            target=child.main,
            args=(
                child_sock,
                self.settings.preload_modules,
                bool(self.settings.max_memory_per_child),
                turns,
                max_jobs,
                self.settings.max_memory_per_child,
            ),
            name="naq-child",
            daemon=True,
        )
        loop = asyncio.get_running_loop()
        starting = loop.run_in_executor(None, self._locked, process.start)  # blocks briefly
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            await _abandon_once_started(starting, process, parent_sock)
            raise
        finally:
            child_sock.close()
        try:
            _, frames = await loop.create_connection(Frames, sock=parent_sock)
        except BaseException:
            _abandon(process, parent_sock)
            raise
        new = Child(process, frames, process.pid or 0, max_jobs, turns)
        try:
            head, _ = unpack(await asyncio.wait_for(frames.next_frame(), START_TIMEOUT))
        except (ChildDied, TimeoutError):
            await self._reap(new)
            raise ChildDied(describe_exit(process)) from None
        except BaseException:  # cancelled (a shutdown) while it started: it must not stay
            new.close()
            _abandon(process, parent_sock)
            raise
        if "error" in head:
            await self._reap(new)
            raise ChildDied(str(head["error"]))
        new.rss = int(head.get("rss", 0))
        frames.deliver = new.arrived
        frames.lost = lambda: self._lost(slot, new)
        self._start_failures = 0
        return new

    def _lost(self, slot: Slot, old: Child) -> None:
        """A child died or was killed: every call it held ends now (the one it ran with
        the reason, the others to be sent again), and the slot's next child starts."""
        old.died()
        if slot.child is old:
            self._replace(slot)
        elif old.reaped is None:
            old.reaped = asyncio.get_running_loop().create_task(self._reap(old))

    async def _reap(self, old: Child) -> None:
        """Close the child's socket (it exits on EOF) and wait for it, killing if need be."""
        self._retired.discard(old)
        old.close()
        await asyncio.get_running_loop().run_in_executor(None, self._locked, self._join, old)

    @staticmethod
    def _join(old: Child) -> None:
        old.process.join(2.0)
        if old.process.exitcode is None:
            old.process.kill()
            old.process.join(2.0)

    def _locked(self, work: Callable[..., None], *args: Any) -> None:
        """Starting a child and reaping one, one at a time: ``Process.start`` polls every
        child it knows (``multiprocessing``'s cleanup), and two threads reading one
        forkserver child's exit status at once make one of them read 255 instead."""
        with self._processes:
            work(*args)

    def _replace(self, slot: Slot) -> None:
        """Start the slot's next child now, in the background, so it is ready in time.
        The old one is reaped once the job it runs (if any) has ended; calls queued
        behind it move to the next child."""
        old, slot.child = slot.child, None
        if old is not None:
            old.retire = True
            self._retired.add(old)
            for entry in list(old.pending.values()):  # all but one it has started
                old.withdraw(entry, "moved")
            if not old.pending and old.reaped is None:
                old.reaped = asyncio.get_running_loop().create_task(self._reap(old))
        if not self._closing and slot.starting is None:
            slot.starting = asyncio.get_running_loop().create_task(self._spawn(slot))

    async def _child_of(self, slot: Slot) -> Child:
        if slot.child is None:
            if slot.starting is None:
                slot.starting = asyncio.get_running_loop().create_task(self._spawn(slot))
            starting = slot.starting
            try:
                child = await asyncio.shield(starting)
            finally:  # several calls may wait for one child: the first done clears it
                if slot.starting is starting and starting.done():
                    slot.starting = None
            if slot.child is None:
                slot.child = child
            return child
        return slot.child

    # -- contract ----------------------------------------------------------------------
    async def start(self) -> None:
        for slot in self._slots:
            slot.starting = asyncio.get_running_loop().create_task(self._spawn(slot))
        try:
            await asyncio.gather(*(self._child_of(slot) for slot in self._slots))
        except BrokenExecutor:
            await self.shutdown(0.0)
            raise
        self._watch = asyncio.get_running_loop().create_task(self._watch_memory())

    def _places(self) -> int:
        """Calls a slot takes: the one it runs, and those queued while the look-ahead
        is open (jobs end within ``lookahead_wait``)."""
        return 1 + (self._ahead if self.ahead_open else 0)

    def free_slots(self) -> int:
        if self.ahead_open:  # no slot holds more than the places it has now: one sum
            return (1 + self._ahead) * len(self._slots) - self._busy
        return sum(max(0, 1 - slot.busy) for slot in self._slots)  # some may hold more

    async def run(self, call: Call) -> Outcome:
        places = self._places()
        slot = min(self._slots, key=_busy)
        if slot.busy >= places:
            raise NoFreeSlot(self.name, self.concurrency, call.job_id)
        slot.busy += 1
        self._busy += 1
        self._idle.clear()
        try:
            while True:
                if self._closing and slot.child is None:
                    raise NotStarted(call.job_id, "back")
                try:
                    worker = await self._child_of(slot)
                except asyncio.CancelledError:
                    # shutdown() cancelled the child being started for this slot: the job
                    # never began, so it is handed back like any job cut short by a shutdown.
                    task = asyncio.current_task()
                    if self._closing and task is not None and not task.cancelling():
                        return cancelled(call)
                    raise
                try:
                    return await self._run_on(slot, worker, call)
                except _Resend:
                    continue
        finally:
            slot.busy -= 1
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    def _queued(self, worker: Child, entry: Entry) -> None:
        """``entry`` waits behind another call: it may wait ``lookahead_wait`` seconds for
        its turn. One timer per child, not one per call, watches every call queued there."""
        loop = asyncio.get_running_loop()
        entry.due = loop.time() + self.settings.lookahead_wait
        if worker.late is None:
            worker.late = loop.call_at(entry.due, self._sweep, worker)

    def _sweep(self, worker: Child) -> None:
        """Take back every call queued on ``worker`` whose wait is over (``late``: the job
        before it is long, and another worker may be free); wake again for the next."""
        worker.late = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for entry in list(worker.pending.values()):
            if entry.first.done():  # running, or next: its turn came
                continue
            if entry.due > now:  # sent later than those before it: the rest are not due
                worker.late = loop.call_at(entry.due, self._sweep, worker)
                return
            worker.withdraw(entry, "late")

    async def _run_on(self, slot: Slot, worker: Child, call: Call) -> Outcome:
        entry = worker.submit(call)
        if not entry.first.done():
            self._queued(worker, entry)
        reply: Reply | None = None
        try:
            if call.timeout is None:
                reply = await entry.reply
            else:  # the timeout counts from its start, once the calls before it ended
                await entry.first
                reply = await asyncio.wait_for(entry.reply, call.timeout)
        except TimeoutError:
            worker.kill("timeout")
        except ChildDied:
            if not worker.started(entry):
                raise _Resend from None
        except Withdrawn as exc:
            if exc.reason == "moved":
                raise _Resend from None
            if exc.reason == "cancelled":
                return cancelled(call)
            raise NotStarted(call.job_id, "late" if exc.reason == "late" else "back") from None
        except asyncio.CancelledError:
            if not worker.withdraw(entry, "cancelled"):
                worker.kill("cancelled")
            raise
        if reply is not None:
            outcome, rss = unpack_outcome(*reply)
            if rss:  # sent only when a memory limit needs it; else the watch reads it
                worker.rss = rss
            worker.jobs_done += 1
            if worker.retire:
                if not worker.pending and worker.reaped is None:
                    worker.reaped = asyncio.get_running_loop().create_task(self._reap(worker))
            else:
                self._after_job(slot, worker)
            return outcome
        reason = worker.kill_reason
        if reason is None:  # it died by itself: read its exit status once it is reaped
            if worker.reaped is not None:
                await asyncio.shield(worker.reaped)
            reason = describe_exit(worker.process)
        if reason == "timeout":
            return timed_out(call)
        if reason == "cancelled":
            return cancelled(call)
        return Outcome(call.job_id, "crashed", error=reason)

    def _after_job(self, slot: Slot, worker: Child) -> None:
        limit = self.settings.max_memory_per_child
        if limit and worker.rss > limit:
            log.info("child %d uses %d bytes, over %d: replacing it", worker.pid, worker.rss, limit)
            self._replace(slot)
        elif worker.max_jobs and worker.jobs_done >= worker.max_jobs:
            log.info("child %d ran %d jobs: replacing it", worker.pid, worker.jobs_done)
            self._replace(slot)

    async def _watch_memory(self) -> None:
        """RSS of every child about once a second; a busy child over the limit is killed."""
        limit = self.settings.max_memory_per_child
        while True:
            await asyncio.sleep(MEMORY_CHECK_INTERVAL)
            for slot in self._slots:
                worker = slot.child
                if worker is None:
                    continue
                with contextlib.suppress(psutil.Error):
                    worker.rss = psutil.Process(worker.pid).memory_info().rss
                if limit and worker.job_id is not None and worker.rss > limit:
                    worker.kill(
                        f"memory limit exceeded: {worker.rss / 2**20:.0f} MiB, "
                        f"over {limit / 2**20:.0f} MiB"
                    )

    def _children(self) -> list[Child]:
        return [slot.child for slot in self._slots if slot.child is not None]

    async def cancel(self, job_id: str) -> bool:
        found = False
        for worker in self._children():  # every run of the job: it may be delivered twice
            for entry in list(worker.pending.values()):
                if entry.call.job_id == job_id:
                    found = True
                    if not worker.withdraw(entry, "cancelled"):
                        worker.kill("cancelled")
        return found

    def hand_back_queued(self) -> None:
        for worker in self._children():
            for entry in list(worker.pending.values())[1:]:
                worker.withdraw(entry, "back")

    async def shutdown(self, grace: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        self._closing = True
        living = [*self._children(), *self._retired]
        killed = [worker for worker in living if worker.pending]
        for worker in killed:
            worker.kill("cancelled")
        if self._watch is not None:
            self._watch.cancel()
        starting = [s.starting for s in self._slots if s.starting is not None]
        await finish(starting, cancel=True)
        # A replacement started for a slot no job has asked for since is ready but not
        # the slot's child yet: it is stopped too, or it would outlive the supervisor.
        living += [
            task.result()
            for task in starting
            if not task.cancelled() and task.exception() is None and task.result() not in living
        ]
        reaping = [asyncio.ensure_future(self._reap(c)) for c in living if c.reaped is None]
        reaping += [w.reaped for w in living if w.reaped is not None]
        await finish(reaping)

    def queued(self) -> list[str]:
        """Job ids sent to a child and waiting there behind the job it runs."""
        return [
            entry.call.job_id
            for worker in self._children()
            for entry in list(worker.pending.values())[1:]
        ]

    def slots(self) -> Sequence[SlotInfo]:
        return [
            SlotInfo(s.index, s.child.pid, s.child.rss, s.child.job_id, s.child.jobs_done)
            for s in self._slots
            if s.child is not None
        ]
