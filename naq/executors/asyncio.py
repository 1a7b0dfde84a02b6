"""Asyncio executor: coroutine jobs run as tasks on the supervisor's own loop.

The cheapest way to run I/O-bound async jobs: no thread, no copy. Plain functions
are handed to an inner :class:`ThreadExecutor` so they never block the loop.
A coroutine that blocks (CPU work, ``time.sleep``) stalls the loop and with it the
leases and heartbeats of every job: use the thread or process executor for those.
"""

from __future__ import annotations

import asyncio

from naq.executors.base import Call, Executor, NoFreeSlot, Outcome
from naq.executors.calls import (
    Rejected,
    attached,
    cancelled,
    load,
    raised,
    rejected,
    succeeded,
    timed_out,
)
from naq.executors.thread import ThreadExecutor
from naq.settings import Settings


class AsyncioExecutor(Executor):
    name = "asyncio"

    def __init__(self, concurrency: int, settings: Settings) -> None:
        super().__init__(concurrency, settings)
        self._threads = ThreadExecutor(concurrency, settings)
        self._threads.slot_freed = lambda: self.slot_freed()  # the supervisor's, once set
        self._tasks: dict[asyncio.Task[object], str] = {}
        """Each running coroutine job's task and its job id: by task, since one job may
        run twice at once (delivered twice)."""
        self._cancelled: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        await self._threads.start()

    def free_slots(self) -> int:
        return self.concurrency - len(self._tasks) - self._threads.busy

    async def run(self, call: Call) -> Outcome:
        if self.free_slots() <= 0:
            raise NoFreeSlot(self.name, self.concurrency, call.job_id)
        if not call.is_async:
            return await self._threads.run(call)
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = call.job_id
        try:
            try:
                func, args, kwargs = load(call)
            except Rejected as exc:
                return rejected(call, exc)
            deadline: asyncio.Timeout | None = None
            try:
                if call.timeout is None and not call.trace_context:
                    value = await func(*args, **kwargs)  # most jobs: no timer, no context
                else:
                    with attached(call.trace_context):
                        async with asyncio.timeout(call.timeout) as deadline:
                            value = await func(*args, **kwargs)
            except TimeoutError as exc:
                if deadline is not None and deadline.expired():
                    return timed_out(call)
                return raised(call, exc)
            except asyncio.CancelledError:
                if task in self._cancelled:
                    task.uncancel()
                    return cancelled(call)
                raise
            except (Exception, SystemExit) as exc:  # sys.exit() fails the job, not the worker
                return raised(call, exc)
            return succeeded(call, value)
        finally:
            del self._tasks[task]
            self._cancelled.discard(task)

    async def cancel(self, job_id: str) -> bool:
        tasks = [task for task, running in self._tasks.items() if running == job_id]
        for task in tasks:
            self._cancelled.add(task)
            task.cancel()
        in_threads = await self._threads.cancel(job_id)
        return bool(tasks) or in_threads

    async def shutdown(self, grace: float) -> None:
        deadline = asyncio.get_running_loop().time() + grace
        if self._tasks:
            # Each run's outcome (or error) is read by the run() awaiting it: only wait.
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                self._cancelled.add(task)
                task.cancel()
        await self._threads.shutdown(max(0.0, deadline - asyncio.get_running_loop().time()))
