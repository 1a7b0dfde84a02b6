"""``naq.executors.handoff.Threads``: the thread executor's pool. Every call's outcome
reaches its own future, however many are handed back in one batch; a shutdown drops
the calls not started and lets the running ones finish; the threads never keep a
process alive."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from naq.executors.handoff import Threads


class Boom(Exception):
    """Raised in a pool thread; must arrive as itself on the loop."""


def square(value: int) -> tuple[int, int]:
    return value, value * value


def raise_boom(value: int) -> None:
    raise Boom(f"boom {value}")


class Blocker:
    """A call that says it started, then blocks until ``released`` is set."""

    def __init__(self, released: threading.Event) -> None:
        self.released = released
        self.started = threading.Semaphore(0)

    def __call__(self, value: int) -> int:
        self.started.release()
        assert self.released.wait(10), "never released"
        return value

    async def started_calls(self, count: int) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self.started.acquire, True, 10)


@pytest.fixture
def released() -> Iterator[threading.Event]:
    """Set at the end of every test: no pool thread stays blocked on it."""
    event = threading.Event()
    yield event
    event.set()


async def test_many_concurrent_calls_each_get_their_own_result() -> None:
    pool = Threads(4, "handoff-many")
    try:
        futures = [pool.submit(square, value) for value in range(2000)]
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
    finally:
        pool.shutdown()
    assert results == [(value, value * value) for value in range(2000)]


async def test_calls_from_many_tasks_at_once_are_not_mixed_up() -> None:
    """Tasks awaiting at the same time, as jobs in a supervisor's slots do."""
    pool = Threads(3, "handoff-tasks")

    async def one(value: int) -> tuple[int, int]:
        result: tuple[int, int] = await pool.submit(square, value)
        return result

    try:
        results = await asyncio.wait_for(asyncio.gather(*(one(v) for v in range(500))), 30)
    finally:
        pool.shutdown()
    assert results == [(value, value * value) for value in range(500)]


async def test_an_exception_in_the_call_is_raised_on_the_awaiting_side() -> None:
    pool = Threads(2, "handoff-errors")
    try:
        failing = [pool.submit(raise_boom, value) for value in range(50)]
        fine = pool.submit(square, 7)
        for value, future in enumerate(failing):
            with pytest.raises(Boom) as info:
                await asyncio.wait_for(future, 10)
            assert str(info.value) == f"boom {value}"
        assert await asyncio.wait_for(fine, 10) == (7, 49)
        # a thread that saw an exception goes on running calls
        assert await asyncio.wait_for(pool.submit(square, 3), 10) == (3, 9)
    finally:
        pool.shutdown()


async def test_shutdown_cancels_calls_not_started_and_lets_running_ones_finish(
    released: threading.Event,
) -> None:
    size = 2
    pool = Threads(size, "handoff-shutdown")
    blocked = Blocker(released)
    futures = [pool.submit(blocked, value) for value in range(size + 5)]
    await blocked.started_calls(size)  # every thread is inside a call
    pool.shutdown()
    running, queued = futures[:size], futures[size:]
    assert all(future.cancelled() for future in queued)
    assert not any(future.done() for future in running)
    released.set()
    assert await asyncio.wait_for(asyncio.gather(*running), 10) == list(range(size))
    assert not blocked.started.acquire(timeout=0.2)  # no queued call ran after all
    for thread in [t for t in threading.enumerate() if t.name.startswith("handoff-shutdown")]:
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()  # each thread ended after its call


async def test_threads_are_daemons_named_with_the_prefix_and_started_on_first_use(
    released: threading.Event,
) -> None:
    prefix = "handoff-names"
    pool = Threads(3, prefix)

    def ours() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith(f"{prefix}_")]

    assert ours() == []  # nothing started before the first call
    try:
        assert await asyncio.wait_for(pool.submit(threading.current_thread), 10) in ours()
        threads = ours()
        assert sorted(t.name for t in threads) == [f"{prefix}_{index}" for index in range(3)]
        assert all(t.daemon for t in threads)
    finally:
        pool.shutdown()


async def test_calls_that_block_each_get_a_thread_whether_sent_together_or_apart(
    released: threading.Event,
) -> None:
    """Threads are woken only when none is on its way to the next call: a thread that
    takes a call with more waiting wakes another before it runs its own, so no call
    waits behind a blocked one while a thread sleeps."""
    size = 6
    pool = Threads(size, "handoff-wake")
    blocked = Blocker(released)
    try:
        assert await asyncio.wait_for(pool.submit(square, 1), 10) == (1, 1)  # all asleep now
        futures = [pool.submit(blocked, value) for value in range(3)]  # in one burst
        await blocked.started_calls(3)
        for value in range(3, size):  # one at a time, the others blocked meanwhile
            futures.append(pool.submit(blocked, value))
            await blocked.started_calls(1)
        extra = pool.submit(square, 9)  # every thread is inside a call: it waits
        assert not extra.done()
        released.set()
        assert await asyncio.wait_for(asyncio.gather(*futures), 10) == list(range(size))
        assert await asyncio.wait_for(extra, 10) == (9, 81)
    finally:
        pool.shutdown()
