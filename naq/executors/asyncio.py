"""Asyncio executor: coroutine jobs run as tasks on the supervisor's own loop.

The cheapest way to run I/O-bound async jobs: no thread, no copy. Plain functions
are handed to an inner :class:`ThreadExecutor` so they never block the loop.
A coroutine that blocks (CPU work, ``time.sleep``) stalls the loop and with it the
leases and heartbeats of every job: use the thread or process executor for those.
"""

from __future__ import annotations

import asyncio

from naq.executors.base import Call, Executor, NoFreeSlot, Outcome
from naq.executors.calls import Rejected, cancelled, load, raised, rejected, succeeded, timed_out
from naq.executors.thread import ThreadExecutor
from naq.settings import Settings


class AsyncioExecutor(Executor):
    name = "asyncio"

    def __init__(self, concurrency: int, settings: Settings) -> None:
        super().__init__(concurrency, settings)
        self._threads = ThreadExecutor(concurrency, settings)
        self._tasks: dict[str, asyncio.Task[object]] = {}
        self._cancelled: set[str] = set()

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
        self._tasks[call.job_id] = task
        try:
            try:
                func, args, kwargs = load(call)
            except Rejected as exc:
                return rejected(call, exc)
            try:
                async with asyncio.timeout(call.timeout) as deadline:
                    value = await func(*args, **kwargs)
            except TimeoutError as exc:
                if deadline.expired():
                    return timed_out(call)
                return raised(call, exc)
            except asyncio.CancelledError:
                if call.job_id in self._cancelled:
                    task.uncancel()
                    return cancelled(call)
                raise
            except (Exception, SystemExit) as exc:  # sys.exit() fails the job, not the worker
                return raised(call, exc)
            return succeeded(call, value)
        finally:
            self._tasks.pop(call.job_id, None)
            self._cancelled.discard(call.job_id)

    async def cancel(self, job_id: str) -> bool:
        task = self._tasks.get(job_id)
        if task is None:
            return await self._threads.cancel(job_id)
        self._cancelled.add(job_id)
        task.cancel()
        return True

    async def shutdown(self, grace: float) -> None:
        deadline = asyncio.get_running_loop().time() + grace
        if self._tasks:
            done = asyncio.gather(*self._tasks.values(), return_exceptions=True)
            try:
                await asyncio.wait_for(asyncio.shield(done), grace)
            except TimeoutError:
                for job_id in list(self._tasks):
                    await self.cancel(job_id)
        await self._threads.shutdown(max(0.0, deadline - asyncio.get_running_loop().time()))
