"""An example third-party executor: one long-lived thread per slot.

It shows the whole ``naq.executors.Executor`` contract in one page. Install it with
``pip install -e examples/plugin`` and run ``naq-supervise --executor example``
(its entry point), or without installing: ``--executor naq_example_executor:SlotThreadExecutor``
with this folder on ``PYTHONPATH``.

Each slot owns a thread for its whole life, which is what code with thread-local
state (a database session per thread, say) wants. Timeouts and cancellation are
cooperative, as in any thread: the job is reported at once and its slot stays busy
until the function returns.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from naq.executors import Call, Executor, NoFreeSlot, Outcome
from naq.executors.calls import cancelled, run_blocking, timed_out
from naq.settings import Settings

_STOP = None


class SlotThreadExecutor(Executor):
    name = "example"

    def __init__(self, concurrency: int, settings: Settings) -> None:
        super().__init__(concurrency, settings)
        self._work: queue.Queue[tuple[Call, asyncio.Future[Outcome]] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._waiting: dict[asyncio.Future[Outcome], str] = {}  # by run: a job may run twice
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_idle = asyncio.Event()
        self._all_idle.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._serve, name=f"example-slot-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        assert self._loop is not None
        while (item := self._work.get()) is not _STOP:
            call, future = item
            outcome = run_blocking(call)  # decode, run, encode: errors come back as Outcome
            self._loop.call_soon_threadsafe(self._finish, future, outcome)

    def _finish(self, future: asyncio.Future[Outcome], outcome: Outcome) -> None:
        self._busy -= 1  # the slot is free only now that its thread has returned
        if self._busy == 0:
            self._all_idle.set()
        self.slot_freed()  # a job held in the supervisor's look-ahead starts on it now
        if not future.done():
            future.set_result(outcome)

    def free_slots(self) -> int:
        return self.concurrency - self._busy

    async def run(self, call: Call) -> Outcome:
        if self._busy >= self.concurrency:  # the contract: refuse, never queue
            raise NoFreeSlot(self.name, self.concurrency, call.job_id)
        self._busy += 1  # before the first await, so free_slots() is exact
        self._all_idle.clear()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[future] = call.job_id
        self._work.put((call, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), call.timeout)
        except TimeoutError:
            return timed_out(call)
        except asyncio.CancelledError:
            if future.cancelled():
                return cancelled(call)
            raise
        finally:
            del self._waiting[future]

    async def cancel(self, job_id: str) -> bool:
        found = [f for f, running in self._waiting.items() if running == job_id and not f.done()]
        for future in found:
            future.cancel()
        return bool(found)

    async def shutdown(self, grace: float) -> None:
        """Wait up to ``grace`` for every slot's thread, timed-out jobs' included, since a
        thread still running when the loop closes could not report back."""
        try:
            await asyncio.wait_for(self._all_idle.wait(), grace)
        except TimeoutError:
            for future in self._waiting:
                future.cancel()
        for _ in self._threads:
            self._work.put(_STOP)
