"""Thread-pool executor: sync functions in threads, up to ``concurrency`` at once.

Timeouts are cooperative: Python cannot stop a thread. A job past its timeout is
reported as ``timeout`` at once, but its thread keeps its slot until the function
returns, so ``free_slots`` never promises a thread that is still busy.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from naq.executors.base import Call, Executor, Outcome
from naq.executors.calls import cancelled, run_blocking, timed_out
from naq.settings import Settings


class ThreadExecutor(Executor):
    name = "thread"

    def __init__(self, concurrency: int, settings: Settings) -> None:
        super().__init__(concurrency, settings)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="naq-job")
        self._busy = 0
        self._waiters: dict[str, asyncio.Future[Outcome]] = {}
        self._idle = asyncio.Event()

    async def start(self) -> None:
        self._idle.set()

    @property
    def busy(self) -> int:
        """Threads still running a job, including ones already reported as timed out."""
        return self._busy

    def free_slots(self) -> int:
        return self.concurrency - self._busy

    def _release(self, _: object) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    async def run(self, call: Call) -> Outcome:
        self._busy += 1
        self._idle.clear()
        loop = asyncio.get_running_loop()
        job = asyncio.wrap_future(self._pool.submit(run_blocking, call), loop=loop)
        job.add_done_callback(self._release)  # the slot frees when the thread returns
        waiter: asyncio.Future[Outcome] = loop.create_future()
        self._waiters[call.job_id] = waiter
        job.add_done_callback(lambda f: settle_waiter(waiter, f))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), call.timeout)
        except TimeoutError:
            return timed_out(call)
        except asyncio.CancelledError:
            if waiter.cancelled():
                return cancelled(call)
            raise
        finally:
            self._waiters.pop(call.job_id, None)

    async def cancel(self, job_id: str) -> bool:
        """Cooperative: the job is reported cancelled now; its thread runs on to the end."""
        waiter = self._waiters.get(job_id)
        if waiter is None or waiter.done():
            return False
        waiter.cancel()
        return True

    async def shutdown(self, grace: float) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            for job_id in list(self._waiters):
                await self.cancel(job_id)
        self._pool.shutdown(wait=False, cancel_futures=True)


def settle_waiter(waiter: asyncio.Future[Outcome], job: asyncio.Future[Outcome]) -> None:
    if waiter.done():
        return
    if job.cancelled():
        waiter.cancel()
    elif (exc := job.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(job.result())
