"""Threads that run blocking calls for the event loop, handing outcomes back in batches.

Why not ``concurrent.futures.ThreadPoolExecutor`` with ``asyncio.wrap_future``: each
call there costs a work item, a semaphore and a condition on the way in, a wake-up
of a thread per call, and a ``call_soon_threadsafe`` (a write to the loop's
self-pipe, a wake-up) on the way out, per call. Here calls go in through a deque,
and a thread is woken only when none is on its way to them; outcomes come back
through one deque: the thread that finds no hand-back scheduled schedules one, and
that one hand-back settles every outcome that has arrived by the time it runs.
Under load, a wake-up of the loop settles many calls instead of one, and a thread
that finishes picks its next call without waiting for the loop at all.

The threads are daemons: a job that never returns must not keep a stopped
supervisor's process alive (``ThreadPoolExecutor`` joins its threads at exit).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

_Call = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class Threads:
    """``size`` threads, started on first use, each running one call at a time.

    A thread is woken only when no other is about to take the next call: the loop
    hands calls in bursts, and waking a thread per call set up to ``size`` threads
    fighting for the GIL over calls that one of them could have run in turn
    (measured at -c 16: about four context switches per no-op job). A thread that
    takes a call and sees more waiting, with no other thread on its way to them,
    wakes one before it runs its own: a call never waits behind a long one while a
    thread sleeps.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self._name = name
        self._calls: collections.deque[_Call] = collections.deque()
        self._done: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        """Guards the calls, the sleepers, the takers and the hand-back flag."""
        self._sleepers: list[threading.Lock] = []
        """Locks of sleeping threads, each held while its thread sleeps on it: releasing
        one wakes its thread."""
        self._takers = 0
        """Threads awake or woken and not running a call: each takes the next call."""
        self._stopped = False
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
        with self._lock:
            self._calls.append((func, args, future))
            wake = self._sleepers.pop() if not self._takers and self._sleepers else None
            if wake is not None:
                self._takers += 1
        if wake is not None:
            wake.release()
        return future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._takers = self.size  # each new thread looks for a call before it sleeps
        for index in range(self.size):
            thread = threading.Thread(target=self._work, name=f"{self._name}_{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _next(self, wake: threading.Lock) -> _Call | None:
        """The next call, or None after this thread slept (woken as a taker) or once
        the pool is shut down (then ``_stopped``)."""
        with self._lock:
            self._takers -= 1
            if self._stopped:
                return None
            if not self._calls:
                self._sleepers.append(wake)
                item = None
            else:
                item = self._calls.popleft()
                nudge = (
                    self._sleepers.pop()
                    if self._calls and not self._takers and self._sleepers
                    else None
                )
                if nudge is not None:
                    self._takers += 1
        if item is None:
            wake.acquire()  # held already: blocks until a waker releases it
            return None
        if nudge is not None:
            nudge.release()
        return item

    def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        wake = threading.Lock()
        wake.acquire()
        while not self._stopped:
            item = self._next(wake)
            if item is None:
                continue
            func, args, future = item
            try:
                value, error = func(*args), None
            except BaseException as exc:  # handed to the awaiting side, which decides
                value, error = None, exc
            self._done.append((future, value, error))
            with self._lock:  # after the append: a hand-back that started has it, or one is due
                due, self._handing_back = not self._handing_back, True
                self._takers += 1  # back for the next call
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
        with self._lock:
            self._stopped = True
            calls, self._calls = list(self._calls), collections.deque()
            sleepers, self._sleepers = self._sleepers, []
        for _, _, future in calls:
            future.cancel()
        for wake in sleepers:
            wake.release()
        self._threads.clear()
