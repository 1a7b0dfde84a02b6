"""Threads that run blocking calls for the event loop, handing outcomes back in batches.

Why not ``concurrent.futures.ThreadPoolExecutor`` with ``asyncio.wrap_future``: each
call there costs a work item, a semaphore and a condition on the way in, and a
``call_soon_threadsafe`` (a write to the loop's self-pipe, a wake-up) on the way
out, per call. Here calls go in through a ``queue.SimpleQueue`` (a C queue, no
lock in Python) and outcomes come back through one deque: the thread that finds no
hand-back scheduled schedules one, and that one hand-back settles every outcome
that has arrived by the time it runs. Under load, a wake-up of the loop settles
many calls instead of one, and a thread that finishes picks its next call
without waiting for the loop at all.

The threads are daemons: a job that never returns must not keep a stopped
supervisor's process alive (``ThreadPoolExecutor`` joins its threads at exit).
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

_Call = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class Threads:
    """``size`` threads, started on first use, each running one call at a time."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._done: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._handing_back = False
        """A hand-back is scheduled on the loop and has not started taking outcomes."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    def submit(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``func(*args)`` in a thread; the future is settled on the loop with its
        return value or exception. Call from the loop's thread."""
        if self._loop is None:
            self._start(asyncio.get_running_loop())
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._calls.put((func, args, future))
        return future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for index in range(self.size):
            thread = threading.Thread(target=self._work, name=f"{self._name}_{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        while (item := self._calls.get()) is not None:
            func, args, future = item
            try:
                value, error = func(*args), None
            except BaseException as exc:  # handed to the awaiting side, which decides
                value, error = None, exc
            self._done.append((future, value, error))
            with self._lock:  # after the append: a hand-back that started has it, or one is due
                due, self._handing_back = not self._handing_back, True
            if due:
                try:
                    loop.call_soon_threadsafe(self._hand_back)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def _hand_back(self) -> None:
        """On the loop: settle every outcome that has arrived."""
        with self._lock:  # before taking: an outcome appended later schedules another
            self._handing_back = False
        done = self._done
        while done:
            future, value, error = done.popleft()
            if future.cancelled():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def shutdown(self) -> None:
        """Each thread ends after its current call; calls not started are dropped
        (their futures cancelled). Does not wait: a job may never return."""
        while True:
            try:
                item = self._calls.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[2].cancel()
        for _ in self._threads:
            self._calls.put(None)
        self._threads.clear()
