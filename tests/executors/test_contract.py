"""The Executor contract, checked the same way on every executor naq has or a plugin adds.

The supervisor relies on each point for every executor alike: an Outcome for every
job and never an exception, ``free_slots`` never promising a slot that is still
busy, cancel and shutdown ending jobs as ``cancelled`` so they are handed back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from naq.errors import ConfigurationError
from naq.executors import Executor, NoFreeSlot, interpreter as interpreter_module, load_executor
from naq.settings import Settings
from tests import jobs
from tests.executors.conftest import (
    CONCURRENCY,
    EXAMPLE_SPEC,
    Gate,
    interpreters_available,
    make_call,
    result_of,
    wait_until,
)

HOLDS_SLOT_AFTER_TIMEOUT = {"asyncio", "thread", "interpreter", "example"}
"""Executors that cannot stop a running function: a timed-out job keeps its slot until
it returns. The asyncio executor runs sync functions in threads, so it is one of them."""

LONG = 2.0
SHORT_TIMEOUT = 0.3


# loading


def test_the_example_plugin_loads_by_module_and_class(plugin_on_path: None) -> None:
    cls = load_executor(EXAMPLE_SPEC)
    assert issubclass(cls, Executor)
    assert cls.__name__ == "SlotThreadExecutor"
    assert cls.name == "example"


def test_the_interpreter_executor_names_the_python_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Below 3.13 there is no per-interpreter GIL: asking for the executor must say so.

    Where subinterpreters exist the contract tests below cover the executor, and this
    check runs against an older version reported to the module.
    """
    if interpreters_available():
        old = SimpleNamespace(version_info=(3, 12, 9), version="3.12.9 (main)")
        monkeypatch.setattr(interpreter_module, "sys", old)
    with pytest.raises(ConfigurationError, match=r"needs Python 3\.13 or newer"):
        load_executor("interpreter")(CONCURRENCY, Settings())


# results and errors


async def test_sync_result_round_trip(executor: Executor) -> None:
    call = make_call(jobs.add, (2, 3))
    outcome = await executor.run(call)
    assert outcome.job_id == call.job_id
    assert result_of(outcome) == 5
    assert executor.free_slots() == CONCURRENCY


async def test_async_result_round_trip(executor: Executor) -> None:
    call = make_call(jobs.async_add, (4, 5))
    assert call.is_async
    outcome = await executor.run(call)
    assert outcome.job_id == call.job_id
    assert result_of(outcome) == 9
    assert executor.free_slots() == CONCURRENCY


async def test_an_exception_is_an_error_with_the_raising_line(executor: Executor) -> None:
    outcome = await executor.run(make_call(jobs.fail, ("no good",)))
    assert outcome.status == "error"
    assert outcome.error == "ValueError: no good"
    assert outcome.result is None
    assert "raise ValueError(message)" in (outcome.traceback or "")
    assert executor.free_slots() == CONCURRENCY


# timeouts


@pytest.mark.parametrize("func", [jobs.sleep, jobs.async_sleep], ids=["sync", "async"])
async def test_timeout(executor: Executor, kind: str, func: Callable[..., Any]) -> None:
    started = time.monotonic()
    outcome = await executor.run(make_call(func, (LONG,), timeout=SHORT_TIMEOUT))
    assert outcome.status == "timeout"
    assert outcome.error == f"TimeoutError: job exceeded {SHORT_TIMEOUT}s"
    assert time.monotonic() - started < 1.5
    # A coroutine on the asyncio executor's own loop is cancelled; anywhere else an
    # async function is run to its end by a loop of its own, like a sync one.
    holds = kind in HOLDS_SLOT_AFTER_TIMEOUT and not (
        kind == "asyncio" and func is jobs.async_sleep
    )
    if holds:
        assert executor.free_slots() == CONCURRENCY - 1
        await wait_until(lambda: executor.free_slots() == CONCURRENCY, LONG + 1)
        assert time.monotonic() - started >= LONG - 0.05  # not before the function returned
    else:  # the job was stopped: a killed child is replaced, a task cancelled
        assert executor.free_slots() == CONCURRENCY
    assert result_of(await executor.run(make_call(jobs.add, (1, 1)))) == 2


async def test_a_call_beyond_capacity_is_refused_and_the_running_ones_go_on(
    executor: Executor, gate: Gate
) -> None:
    """A caller that miscounted gets a clear error, not a crash deep in the executor
    (a ``next()`` without default, a ``pop()`` from an empty list) nor a hidden queue."""
    markers = [gate.marker(str(i)) for i in range(CONCURRENCY)]
    running = [
        asyncio.create_task(executor.run(make_call(jobs.wait_for_file, (gate.path, m))))
        for m in markers
    ]
    for marker in markers:
        await gate.started(marker)
    assert executor.free_slots() == 0
    extra = make_call(jobs.add, (1, 2))
    with pytest.raises(NoFreeSlot, match=f"job {extra.job_id} refused"):
        await executor.run(extra)
    gate.open()
    outcomes = await asyncio.wait_for(asyncio.gather(*running), 10)
    assert [o.status for o in outcomes] == ["ok"] * CONCURRENCY
    await wait_until(lambda: executor.free_slots() == CONCURRENCY)
    assert result_of(await executor.run(extra)) == 3


# cancellation


async def test_cancel_a_running_job(executor: Executor, gate: Gate) -> None:
    marker = gate.marker("job")
    call = make_call(jobs.wait_for_file, (gate.path, marker))
    task = asyncio.create_task(executor.run(call))
    await gate.started(marker)
    asked = time.monotonic()
    assert await executor.cancel(call.job_id) is True
    outcome = await asyncio.wait_for(task, 2)
    assert time.monotonic() - asked < 1
    assert outcome.status == "cancelled"
    assert outcome.job_id == call.job_id
    assert await executor.cancel(call.job_id) is False  # over: nothing left to cancel
    gate.open()
    await wait_until(lambda: executor.free_slots() == CONCURRENCY)
    assert result_of(await executor.run(make_call(jobs.add, (1, 2)))) == 3


async def test_cancel_of_an_unknown_job(executor: Executor) -> None:
    assert await executor.cancel("no-such-job") is False


# shutdown


async def test_shutdown_lets_a_short_job_finish_and_cancels_a_long_one(
    executor: Executor, gate: Gate
) -> None:
    short_marker, long_marker = gate.marker("short"), gate.marker("long")
    short = asyncio.create_task(executor.run(make_call(jobs.sleep_marked, (short_marker, 0.3))))
    long = asyncio.create_task(
        executor.run(make_call(jobs.wait_for_file, (gate.path, long_marker)))
    )
    await gate.started(short_marker)
    await gate.started(long_marker)
    grace = 1.0
    asked = time.monotonic()
    await executor.shutdown(grace)
    assert time.monotonic() - asked < grace + 1
    short_outcome, long_outcome = await asyncio.wait_for(asyncio.gather(short, long), 2)
    assert result_of(short_outcome) == 0.3
    assert long_outcome.status == "cancelled"


async def test_shutdown_waits_for_a_function_still_running_after_its_timeout(
    executor: Executor,
) -> None:
    """A timed-out job whose function cannot be stopped still runs: within the grace,
    shutdown waits for it like for any other. The supervisor closes its loop once
    shutdown returns, and a thread finishing later would report to a closed loop."""
    outcome = await executor.run(make_call(jobs.sleep, (1.0,), timeout=0.2))
    assert outcome.status == "timeout"
    asked = time.monotonic()
    await executor.shutdown(3.0)
    assert time.monotonic() - asked < 3.0
    assert executor.free_slots() == CONCURRENCY, "shutdown returned with a slot still busy"


async def test_a_slot_that_frees_after_run_returned_is_announced(
    executor: Executor, gate: Gate
) -> None:
    """A job held in the supervisor's look-ahead starts the moment a slot frees: one
    that frees later than ``run`` returned (a function running on past its timeout)
    is announced through ``slot_freed``, or the held job would wait for another job."""
    freed = asyncio.Event()
    executor.slot_freed = freed.set
    marker = gate.marker("late")
    outcome = await executor.run(make_call(jobs.wait_for_file, (gate.path, marker), timeout=0.3))
    assert outcome.status == "timeout"
    if executor.free_slots() == CONCURRENCY:
        return  # stopped with its job (a process executor kills the child): free at once
    freed.clear()
    gate.open()
    await asyncio.wait_for(freed.wait(), 5)
    assert executor.free_slots() == CONCURRENCY


# concurrency


async def test_concurrency_limit_is_honoured_and_jobs_overlap(executor: Executor) -> None:
    assert CONCURRENCY == 2
    first = asyncio.create_task(executor.run(make_call(jobs.timed_sleep, (0.5,))))
    await asyncio.sleep(0)  # run marks its slot busy before its first await
    assert executor.free_slots() == 1
    second = asyncio.create_task(executor.run(make_call(jobs.timed_sleep, (0.5,))))
    await asyncio.sleep(0)
    assert executor.free_slots() == 0
    outcomes = await asyncio.wait_for(asyncio.gather(first, second), 3)
    (start_a, end_a), (start_b, end_b) = (result_of(o) for o in outcomes)
    assert max(start_a, start_b) < min(end_a, end_b), "the two jobs did not run at once"
    await wait_until(lambda: executor.free_slots() == CONCURRENCY)
