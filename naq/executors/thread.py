"""Thread-pool executor: sync functions in threads, up to ``concurrency`` at once.

Timeouts are cooperative: Python cannot stop a thread. A job past its timeout is
reported as ``timeout`` at once, but its thread keeps its slot until the function
returns, so ``free_slots`` never promises a thread that is still busy. The threads
are :class:`naq.executors.handoff.Threads`: outcomes come back to the loop in
batches, a wake-up per batch rather than per job.
"""

from __future__ import annotations

import asyncio

from naq.executors.base import Call, Executor, NoFreeSlot, Outcome
from naq.executors.calls import run_blocking
from naq.executors.cooperative import CooperativeJobs
from naq.executors.handoff import Threads
from naq.settings import Settings


class ThreadExecutor(Executor):
    name = "thread"

    def __init__(self, concurrency: int, settings: Settings) -> None:
        super().__init__(concurrency, settings)
        self._pool = Threads(concurrency, "naq-job")
        self._busy = 0
        self._jobs = CooperativeJobs()
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
        self.slot_freed()

    async def run(self, call: Call) -> Outcome:
        if self._busy >= self.concurrency:  # the pool would queue it: a hidden extra slot
            raise NoFreeSlot(self.name, self.concurrency, call.job_id)
        self._busy += 1
        self._idle.clear()
        job = self._pool.submit(run_blocking, call)
        job.add_done_callback(self._release)  # the slot frees when the thread returns
        return await self._jobs.wait(call, job)

    async def cancel(self, job_id: str) -> bool:
        """Cooperative: the job is reported cancelled now; its thread runs on to the end."""
        return self._jobs.cancel(job_id)

    async def shutdown(self, grace: float) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            self._jobs.cancel_all()
        self._pool.shutdown()
