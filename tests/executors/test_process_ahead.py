"""The process executor's look-ahead: calls queued in a child behind the one it runs.

A child starts its next call the moment it sends the last one's outcome, without a
round trip to the supervisor; each promise of the look-ahead must still hold there:
a queued call is taken back at once by a drain, taken back when it waits longer than
``lookahead_wait``, cancelled without touching the running job, and a crash, timeout
or retirement of the child ends only the job it ran while the queued ones move on.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from naq.executors.base import NotStarted
from naq.executors.process import ProcessExecutor
from tests import jobs
from tests.executors.conftest import Gate, make_call, result_of, wait_until
from tests.executors.test_process import gone, process_executor


@pytest.fixture
async def ex(gate: Gate) -> AsyncIterator[ProcessExecutor]:
    """One child, two calls queued behind its running one."""
    async with process_executor(gate, concurrency=1, lookahead=2) as executor:
        yield executor


async def blocked(ex: ProcessExecutor, gate: Gate, name: str = "a") -> tuple[Any, int]:
    """A running call that waits for the gate, and the pid of the child running it."""
    marker = gate.marker(name)
    task = asyncio.create_task(ex.run(make_call(jobs.wait_for_file, (gate.path, marker))))
    return task, await gate.started(marker)


async def queued(ex: ProcessExecutor, *calls: Any) -> list[asyncio.Task[Any]]:
    tasks = [asyncio.create_task(ex.run(call)) for call in calls]
    await wait_until(lambda: len(ex.queued()) == len(calls))
    return tasks


async def test_the_places_are_the_slot_and_its_queue_and_calls_run_in_order(
    ex: ProcessExecutor, gate: Gate
) -> None:
    assert ex.free_slots() == 3
    running, pid = await blocked(ex, gate)
    calls = [make_call(jobs.pid), make_call(jobs.add, (1, 2))]
    later = await queued(ex, *calls)
    assert ex.free_slots() == 0
    assert ex.queued() == [call.job_id for call in calls]
    assert not any(task.done() for task in later)  # they wait for the running one
    gate.open()
    assert result_of(await asyncio.wait_for(running, 10)) == pid
    assert result_of(await asyncio.wait_for(later[0], 10)) == pid  # same child, no respawn
    assert result_of(await asyncio.wait_for(later[1], 10)) == 3
    await wait_until(lambda: ex.free_slots() == 3)


async def test_a_crash_fails_only_the_running_call_and_the_queued_ones_run_on_the_next_child(
    ex: ProcessExecutor, gate: Gate
) -> None:
    marker = gate.marker("crash")
    crasher = asyncio.create_task(ex.run(make_call(jobs.exit_when_file, (gate.path, marker, 3))))
    old = await gate.started(marker)
    later = await queued(ex, make_call(jobs.pid), make_call(jobs.add, (2, 2)))
    gate.open()
    outcome = await asyncio.wait_for(crasher, 10)
    assert (outcome.status, outcome.error) == ("crashed", "worker process exited with code 3")
    new = result_of(await asyncio.wait_for(later[0], 10))
    assert new != old
    assert result_of(await asyncio.wait_for(later[1], 10)) == 4
    await gone(old)


async def test_a_drain_takes_queued_calls_back_at_once_and_the_running_one_finishes(
    ex: ProcessExecutor, gate: Gate
) -> None:
    running, pid = await blocked(ex, gate)
    later = await queued(ex, make_call(jobs.add, (1, 1)), make_call(jobs.add, (2, 2)))
    ex.hand_back_queued()
    for task in later:
        with pytest.raises(NotStarted) as info:
            await asyncio.wait_for(task, 2)
        assert info.value.reason == "back"
    assert not running.done()
    gate.open()
    assert result_of(await asyncio.wait_for(running, 10)) == pid


async def test_a_call_queued_longer_than_lookahead_wait_is_taken_back_late(gate: Gate) -> None:
    async with process_executor(gate, concurrency=1, lookahead=1, lookahead_wait=0.3) as ex:
        running, pid = await blocked(ex, gate)
        (late,) = await queued(ex, make_call(jobs.add, (1, 1)))
        with pytest.raises(NotStarted) as info:
            await asyncio.wait_for(late, 5)
        assert info.value.reason == "late"
        ex.ahead_open = False  # what the supervisor does on "late": no place beyond the slot
        assert ex.free_slots() == 0
        gate.open()
        assert result_of(await asyncio.wait_for(running, 10)) == pid
        assert ex.free_slots() == 1
        ex.ahead_open = True
        assert ex.free_slots() == 2


async def test_calls_queued_at_different_times_are_each_taken_back_when_their_own_wait_ends(
    gate: Gate,
) -> None:
    """One timer per child watches its queue: when the first queued call's wait ends,
    the one sent after it is not due yet and is taken back later, at its own time."""
    async with process_executor(gate, concurrency=1, lookahead=2, lookahead_wait=0.6) as ex:
        running, pid = await blocked(ex, gate)
        (first,) = await queued(ex, make_call(jobs.add, (1, 1)))
        await asyncio.sleep(0.3)  # the offset between the two calls' waits is the subject
        second = asyncio.create_task(ex.run(make_call(jobs.add, (2, 2), timeout=30)))
        await wait_until(lambda: len(ex.queued()) == 2)
        with pytest.raises(NotStarted) as info:
            await asyncio.wait_for(first, 5)
        assert info.value.reason == "late"
        assert not second.done()  # sent 0.3 s later, it still has time
        assert len(ex.queued()) == 1
        with pytest.raises(NotStarted) as info:
            await asyncio.wait_for(second, 5)
        assert info.value.reason == "late"
        gate.open()
        assert result_of(await asyncio.wait_for(running, 10)) == pid


async def test_cancelling_a_queued_call_leaves_the_running_one_and_its_child(
    ex: ProcessExecutor, gate: Gate
) -> None:
    running, pid = await blocked(ex, gate)
    call = make_call(jobs.add, (1, 1))
    (cancelled,) = await queued(ex, call)
    assert await ex.cancel(call.job_id) is True
    assert (await asyncio.wait_for(cancelled, 5)).status == "cancelled"
    assert not running.done()
    gate.open()
    assert result_of(await asyncio.wait_for(running, 10)) == pid


async def test_a_queued_call_whose_task_is_cancelled_is_taken_back_without_a_kill(
    ex: ProcessExecutor, gate: Gate
) -> None:
    running, pid = await blocked(ex, gate)
    (waiting,) = await queued(ex, make_call(jobs.add, (1, 1)))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ex.queued() == []
    gate.open()
    assert result_of(await asyncio.wait_for(running, 10)) == pid
    assert result_of(await asyncio.wait_for(ex.run(make_call(jobs.pid)), 10)) == pid


async def test_a_timeout_of_the_running_call_moves_the_queued_ones_to_the_next_child(
    ex: ProcessExecutor, gate: Gate
) -> None:
    marker = gate.marker("slow")
    slow = asyncio.create_task(
        ex.run(make_call(jobs.wait_for_file, (gate.path, marker), timeout=0.5))
    )
    old = await gate.started(marker)
    (later,) = await queued(ex, make_call(jobs.pid))
    assert (await asyncio.wait_for(slow, 5)).status == "timeout"
    assert result_of(await asyncio.wait_for(later, 10)) != old


async def test_a_child_killed_from_outside_fails_only_its_call(
    ex: ProcessExecutor, gate: Gate
) -> None:
    running, pid = await blocked(ex, gate)
    later = await queued(ex, make_call(jobs.add, (3, 4)))
    os.kill(pid, signal.SIGKILL)
    assert (await asyncio.wait_for(running, 5)).status == "crashed"
    assert result_of(await asyncio.wait_for(later[0], 10)) == 7


async def test_a_retired_child_hands_its_queued_calls_to_the_next(gate: Gate) -> None:
    """``max_jobs_per_child=1`` (with its jitter, one or two jobs a child): every call
    queued behind a retiring child's last job still runs, on a new child."""
    async with process_executor(gate, concurrency=1, lookahead=3, max_jobs_per_child=1) as ex:
        running, first = await blocked(ex, gate)
        later = await queued(ex, *(make_call(jobs.pid) for _ in range(3)))
        gate.open()
        assert result_of(await asyncio.wait_for(running, 10)) == first
        pids = [result_of(await asyncio.wait_for(task, 10)) for task in later]
        assert len({first, *pids}) >= 2
