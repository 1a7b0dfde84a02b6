"""Process executor: naq's own pool of long-lived child processes, one job each at a time.

Not ``ProcessPoolExecutor``: there one dead child breaks every pending future and a
running call cannot be stopped. Here each slot owns one child:

    supervisor loop                          child (forkserver or spawn)
    ---------------                          ---------------------------
    run(Call) -> slot --frame: Call-------->  decode payload, run, encode result
              <--------frame: Outcome, rss--  (bytes both ways, never pickle)
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
import random
import signal
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, cast

import psutil

from naq.errors import BrokenExecutor
from naq.executors import child
from naq.executors.base import Call, Executor, NoFreeSlot, Outcome, SlotInfo
from naq.executors.calls import cancelled, timed_out
from naq.executors.frames import HEADER, pack_call, unpack, unpack_outcome
from naq.settings import Settings
from naq.supervised import finish

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
MEMORY_CHECK_INTERVAL = 1.0
STORM_FAILURES = 5
"""Start-up failures in a row (no child got ready in between) that break the pool."""


class ChildDied(Exception):
    pass


class Frames(asyncio.Protocol):
    """The supervisor's end of one child's socket: each frame that arrives resolves the
    future of the one call waiting for it, in the callback that read it.

    A protocol rather than a stream reader and a task per job: a job's reply costs one
    callback and one future, and a child that dies (EOF) or is killed fails the
    waiting future at once."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._early: deque[bytes] = deque()
        self.closed = False

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
        """The child is gone or being killed: the call waiting on it ends now."""
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ChildDied())

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail()


@dataclass(eq=False)
class Child:
    process: BaseProcess
    frames: Frames
    pid: int
    max_jobs: int
    rss: int = 0
    jobs_done: int = 0
    job_id: str | None = None
    retire: bool = False
    kill_reason: str | None = None

    def kill(self, reason: str) -> None:
        """Stop the child now; the job it holds ends with ``reason``."""
        if self.kill_reason is None:
            self.kill_reason = reason
        with contextlib.suppress(ProcessLookupError, AttributeError):
            self.process.kill()
        self.frames.fail()

    def send(self, frame: bytes) -> None:
        assert self.frames.transport is not None
        self.frames.transport.write(frame)

    def close(self) -> None:
        if self.frames.transport is not None:
            self.frames.transport.close()


@dataclass(eq=False)
class Slot:
    index: int
    child: Child | None = None
    busy: bool = False
    starting: asyncio.Task[Child] | None = None


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


class ProcessExecutor(Executor):
    name = "process"

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
        self._start_failures = 0
        self._broken: BrokenExecutor | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- children ----------------------------------------------------------------------
    def _job_limit(self) -> int:
        limit = self.settings.max_jobs_per_child
        return limit + random.randint(0, max(1, limit // 4)) if limit else 0

    async def _spawn(self) -> Child:
        """A ready child, or BrokenExecutor after too many start-up failures in a row."""
        while True:
            if self._broken is not None:
                raise self._broken
            try:
                return await self._spawn_once()
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

    async def _spawn_once(self) -> Child:
        parent_sock, child_sock = socket.socketpair()
        process = self._ctx.Process(
            target=child.main,
            args=(
                child_sock,
                self.settings.preload_modules,
                bool(self.settings.max_memory_per_child),
            ),
            name="naq-child",
            daemon=True,
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, process.start)  # forkserver start blocks briefly
        child_sock.close()
        _, frames = await loop.create_connection(Frames, sock=parent_sock)
        new = Child(process, frames, process.pid or 0, self._job_limit())
        try:
            head, _ = unpack(await asyncio.wait_for(frames.next_frame(), START_TIMEOUT))
        except (ChildDied, TimeoutError):
            await self._reap(new)
            raise ChildDied(describe_exit(process)) from None
        if "error" in head:
            await self._reap(new)
            raise ChildDied(str(head["error"]))
        new.rss = int(head.get("rss", 0))
        self._start_failures = 0
        return new

    async def _reap(self, old: Child) -> None:
        """Close the child's socket (it exits on EOF) and wait for it, killing if need be."""
        old.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, old.process.join, 2.0)
        if old.process.exitcode is None:
            old.process.kill()
            await loop.run_in_executor(None, old.process.join, 2.0)

    def _replace(self, slot: Slot) -> None:
        """Start the slot's next child now, in the background, so it is ready in time."""
        old, slot.child = slot.child, None
        if old is not None:
            asyncio.get_running_loop().create_task(self._reap(old))
        if not self._closing and slot.starting is None:
            slot.starting = asyncio.get_running_loop().create_task(self._spawn())

    async def _child_of(self, slot: Slot) -> Child:
        if slot.child is None:
            if slot.starting is None:
                slot.starting = asyncio.get_running_loop().create_task(self._spawn())
            try:
                slot.child = await asyncio.shield(slot.starting)
            finally:
                if slot.starting.done():
                    slot.starting = None
        return slot.child

    # -- contract ----------------------------------------------------------------------
    async def start(self) -> None:
        for slot in self._slots:
            slot.starting = asyncio.get_running_loop().create_task(self._spawn())
        try:
            await asyncio.gather(*(self._child_of(slot) for slot in self._slots))
        except BrokenExecutor:
            await self.shutdown(0.0)
            raise
        self._watch = asyncio.get_running_loop().create_task(self._watch_memory())

    def free_slots(self) -> int:
        return sum(not slot.busy for slot in self._slots)

    async def run(self, call: Call) -> Outcome:
        slot = next((s for s in self._slots if not s.busy), None)
        if slot is None:
            raise NoFreeSlot(self.name, self.concurrency, call.job_id)
        slot.busy = True
        self._idle.clear()
        try:
            try:
                worker = await self._child_of(slot)
            except asyncio.CancelledError:
                # shutdown() cancelled the child being started for this slot: the job never
                # began, so it is handed back like any job cut short by a shutdown.
                task = asyncio.current_task()
                if self._closing and task is not None and not task.cancelling():
                    return cancelled(call)
                raise
            return await self._run_on(slot, worker, call)
        finally:
            slot.busy = False
            if not any(s.busy for s in self._slots):
                self._idle.set()

    async def _run_on(self, slot: Slot, worker: Child, call: Call) -> Outcome:
        worker.job_id = call.job_id
        reply = worker.frames.next_frame()
        worker.send(pack_call(call))
        frame: bytes | None = None
        try:
            if call.timeout is None:
                frame = await reply
            else:
                frame = await asyncio.wait_for(reply, call.timeout)
        except TimeoutError:
            worker.kill("timeout")
        except ChildDied:
            pass
        except asyncio.CancelledError:
            worker.kill("cancelled")
            self._replace(slot)
            raise
        if frame is not None:
            outcome, rss = unpack_outcome(*unpack(frame))
            if rss:  # sent only when a memory limit needs it; else the watch reads it
                worker.rss = rss
            worker.job_id = None
            worker.jobs_done += 1
            self._after_job(slot, worker)
            return outcome
        reason = worker.kill_reason
        if reason is None:  # it died by itself: read its exit status before reaping it
            await asyncio.get_running_loop().run_in_executor(None, worker.process.join, 5.0)
            reason = describe_exit(worker.process)
        self._replace(slot)
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

    async def cancel(self, job_id: str) -> bool:
        found = False
        for slot in self._slots:  # every run of the job: it may be delivered twice at once
            if slot.child is not None and slot.child.job_id == job_id:
                slot.child.kill("cancelled")
                found = True
        return found

    async def shutdown(self, grace: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        self._closing = True
        for slot in self._slots:
            if slot.child is not None and slot.child.job_id is not None:
                slot.child.kill("cancelled")
        if self._watch is not None:
            self._watch.cancel()
        await finish([s.starting for s in self._slots if s.starting is not None], cancel=True)
        children = [s.child for s in self._slots if s.child is not None]
        await finish([asyncio.ensure_future(self._reap(c)) for c in children])

    def slots(self) -> Sequence[SlotInfo]:
        return [
            SlotInfo(s.index, s.child.pid, s.child.rss, s.child.job_id, s.child.jobs_done)
            for s in self._slots
            if s.child is not None
        ]
