"""What only the process executor promises: a crash, a leak or a hung job costs one job
and one child, never the executor, and every failure says what happened."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psutil
import pytest

from naq.errors import BrokenExecutor
from naq.executors import process as process_module
from naq.executors.process import ProcessExecutor
from naq.settings import Settings
from naq.transport.pool import new_event_loop
from tests import jobs
from tests.executors.conftest import Gate, make_call, result_of, started_executor, wait_until


@contextlib.asynccontextmanager
async def process_executor(
    gate: Gate, concurrency: int = 2, **settings: Any
) -> AsyncIterator[ProcessExecutor]:
    async with started_executor("process", gate, Settings(**settings), concurrency) as ex:
        assert isinstance(ex, ProcessExecutor)
        yield ex


def pid_of_slot(ex: ProcessExecutor, index: int) -> int:
    return next(s.pid for s in ex.slots() if s.index == index)


async def gone(pid: int, timeout: float = 3.0) -> None:
    """The child is reaped by its forkserver shortly after it dies."""
    await wait_until(lambda: not psutil.pid_exists(pid), timeout)


def kill_from_outside(pid: int) -> None:
    """A signal whose default is to end the process (children ignore SIGTERM and SIGINT,
    which a stop sends to the whole process group: the supervisor's drain decides; and
    a supervisor started under ``nohup`` passes on an ignored SIGHUP)."""
    os.kill(pid, signal.SIGUSR1)


# crashes


@pytest.mark.parametrize(
    ("func", "args", "outside", "reason"),
    [
        (jobs.exit_now, (3,), None, "worker process exited with code 3"),
        (jobs.kill_self, (signal.SIGKILL,), None, "worker process killed by signal SIGKILL (9)"),
        (jobs.segfault, (), None, "worker process killed by signal SIGSEGV (11)"),
        (jobs.wait_for_file, (), kill_from_outside, "worker process killed by signal SIGUSR1 (10)"),
    ],
    ids=["exit-code", "sigkill", "segfault", "sigusr1-from-outside"],
)
async def test_a_crash_fails_only_its_job_and_the_child_is_replaced(
    gate: Gate,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    outside: Callable[[int], None] | None,
    reason: str,
) -> None:
    async with process_executor(gate) as ex:
        bystander_marker = gate.marker("bystander")
        bystander = asyncio.create_task(
            ex.run(make_call(jobs.wait_for_file, (gate.path, bystander_marker)))
        )
        bystander_pid = await gate.started(bystander_marker)
        assert bystander_pid == pid_of_slot(ex, 0)
        victim_pid = pid_of_slot(ex, 1)

        if outside is None:
            call = make_call(func, args)
            outcome = await asyncio.wait_for(ex.run(call), 5)
        else:
            marker = gate.marker("victim")
            call = make_call(func, (gate.path, marker))
            task = asyncio.create_task(ex.run(call))
            assert await gate.started(marker) == victim_pid
            outside(victim_pid)
            outcome = await asyncio.wait_for(task, 5)

        assert outcome.status == "crashed"
        assert outcome.job_id == call.job_id
        assert reason in (outcome.error or "")
        assert not bystander.done()  # the other child never noticed
        next_pid = result_of(await asyncio.wait_for(ex.run(make_call(jobs.pid)), 10))
        assert next_pid not in (victim_pid, bystander_pid)
        await gone(victim_pid)
        gate.open()
        assert result_of(await asyncio.wait_for(bystander, 5)) == bystander_pid


# recycling


async def test_children_are_recycled_after_max_jobs_per_child(gate: Gate) -> None:
    limit = 3
    most = limit + max(1, limit // 4)  # the jitter that keeps children from retiring at once
    async with process_executor(gate, concurrency=1, max_jobs_per_child=limit) as ex:
        pids = [result_of(await ex.run(make_call(jobs.pid))) for _ in range(10)]
    runs = [(pid, len(list(group))) for pid, group in _groups(pids)]
    assert len(runs) >= 2, pids
    assert len({pid for pid, _ in runs}) == len(runs), f"a retired child came back: {pids}"
    assert all(count <= most for _, count in runs), pids
    assert all(count >= limit for _, count in runs[:-1]), f"retired too early: {pids}"


def _groups(pids: list[int]) -> list[tuple[int, list[int]]]:
    out: list[tuple[int, list[int]]] = []
    for pid in pids:
        if out and out[-1][0] == pid:
            out[-1][1].append(pid)
        else:
            out.append((pid, [pid]))
    return out


async def test_a_child_over_the_memory_limit_after_its_job_is_replaced(
    gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job itself succeeds; only the next job sees a fresh child.

    The in-job watch is held off here: it would be right to kill a job caught while
    it allocates, but this test is about the check made after each job.
    """
    monkeypatch.setattr(process_module, "MEMORY_CHECK_INTERVAL", 3600.0)
    async with process_executor(gate, concurrency=1, max_memory_per_child="150MiB") as ex:
        leaky_pid = pid_of_slot(ex, 0)
        outcome = await asyncio.wait_for(ex.run(make_call(jobs.leak, (200,))), 10)
        assert result_of(outcome) == 1
        next_pid = result_of(await asyncio.wait_for(ex.run(make_call(jobs.pid)), 10))
        assert next_pid != leaky_pid
        await gone(leaky_pid)


async def test_a_child_over_the_memory_limit_during_its_job_is_killed(gate: Gate) -> None:
    async with process_executor(gate, concurrency=1, max_memory_per_child="150MiB") as ex:
        leaky_pid = pid_of_slot(ex, 0)
        started = time.monotonic()
        outcome = await asyncio.wait_for(ex.run(make_call(jobs.leak_slowly, (300, 3))), 10)
        assert time.monotonic() - started < 3  # stopped, not waited for
        assert outcome.status == "crashed"
        assert "memory limit exceeded" in (outcome.error or "")
        assert "over 150 MiB" in (outcome.error or "")
        next_pid = result_of(await asyncio.wait_for(ex.run(make_call(jobs.pid)), 10))
        assert next_pid != leaky_pid
        await gone(leaky_pid)


# timeouts and cancellation


async def test_a_hard_timeout_kills_the_child(gate: Gate) -> None:
    async with process_executor(gate, concurrency=1) as ex:
        idle = ex.free_slots()
        marker = gate.marker("job")
        started = time.monotonic()
        task = asyncio.create_task(
            ex.run(make_call(jobs.wait_for_file, (gate.path, marker), timeout=0.3))
        )
        old_pid = await gate.started(marker)
        outcome = await asyncio.wait_for(task, 5)
        assert outcome.status == "timeout"
        assert time.monotonic() - started < 1.5
        assert ex.free_slots() == idle
        await gone(old_pid)
        next_pid = result_of(await asyncio.wait_for(ex.run(make_call(jobs.pid)), 10))
        assert next_pid != old_pid


async def test_cancel_kills_the_child(gate: Gate) -> None:
    async with process_executor(gate, concurrency=1) as ex:
        marker = gate.marker("job")
        call = make_call(jobs.wait_for_file, (gate.path, marker))
        task = asyncio.create_task(ex.run(call))
        old_pid = await gate.started(marker)
        assert await ex.cancel(call.job_id) is True
        assert (await asyncio.wait_for(task, 5)).status == "cancelled"
        await gone(old_pid)
        assert result_of(await asyncio.wait_for(ex.run(make_call(jobs.pid)), 10)) != old_pid


async def test_shutdown_while_a_child_is_being_replaced_cancels_the_waiting_job(
    gate: Gate,
) -> None:
    """A job waiting for its slot's new child is as much cut short by shutdown as a
    running one: it must end ``cancelled`` (and so be handed back), not raise."""
    async with process_executor(gate, concurrency=1) as ex:
        crashed = await asyncio.wait_for(ex.run(make_call(jobs.exit_now, (3,))), 5)
        assert crashed.status == "crashed"
        waiting = asyncio.create_task(ex.run(make_call(jobs.pid)))
        await asyncio.sleep(0)  # it now waits for the replacement child
        await ex.shutdown(0.0)
        outcome = await asyncio.wait_for(waiting, 5)
        assert outcome.status == "cancelled"


async def test_a_shutdown_while_children_start_leaves_none_running() -> None:
    """A child whose start a shutdown cut short is killed, not left running: children
    ignore SIGTERM, so one left behind held its socket open and multiprocessing's exit
    handler, which joins every child, kept the process from exiting. The forkserver is
    up first (without the slow module), so each child imports it itself, for 5 s:
    the shutdown comes while they start."""
    warm = ProcessExecutor(1, Settings())
    await warm.start()
    await warm.shutdown(1.0)
    ex = ProcessExecutor(2, Settings(preload="tests.slow_module"))
    starting = asyncio.create_task(ex.start())
    deadline = time.monotonic() + 10
    while len(_children_alive()) < 2:
        assert time.monotonic() < deadline, "the children did not start"
        await asyncio.sleep(0.02)
    await ex.shutdown(0.0)
    with pytest.raises(asyncio.CancelledError):
        await starting
    deadline = time.monotonic() + 3  # before their import would have ended
    while alive := _children_alive():
        assert time.monotonic() < deadline, f"children {alive} outlived the shutdown"
        await asyncio.sleep(0.02)


def _children_alive() -> list[int]:
    return [p.pid or 0 for p in multiprocessing.active_children() if p.name == "naq-child"]


async def test_a_start_that_fails_after_its_cancel_is_logged_and_the_cancel_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A child's start runs in a thread and goes on after the cancel that cut it
    short; if it then fails, the failure is logged (never dropped) and the caller
    still gets its CancelledError."""
    ex = ProcessExecutor(1, Settings())
    entered, release = threading.Event(), threading.Event()

    def failing_start(work: Callable[..., Any], *args: Any) -> None:
        entered.set()
        assert release.wait(10), "never released"
        raise OSError("the fork failed")

    ex._locked = failing_start  # type: ignore[method-assign]
    spawn = asyncio.create_task(ex._spawn_once(process_module.Slot(0)))
    assert await asyncio.to_thread(entered.wait, 10)
    spawn.cancel()
    await asyncio.sleep(0)  # the cancel lands while the start still runs in its thread
    assert not spawn.done()
    release.set()
    with (
        caplog.at_level("WARNING", logger=process_module.__name__),
        pytest.raises(asyncio.CancelledError),
    ):
        await asyncio.wait_for(spawn, 10)
    failed = [r for r in caplog.records if r.getMessage() == process_module.LATE_START_FAILED]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert "the fork failed" in str(failed[0].exc_info[1])


async def test_a_stop_reaps_a_replacement_no_job_has_taken_yet(gate: Gate) -> None:
    """After a timeout kills a child, its slot's next child starts in the background;
    if no job takes it before the stop, the stop must still end it (it is no slot's
    child yet), or it outlives the executor."""
    async with process_executor(gate, concurrency=1) as ex:
        outcome = await ex.run(make_call(jobs.sleep, (30,), timeout=0.3))
        assert outcome.status == "timeout"
        await wait_until(lambda: (t := ex._slots[0].starting) is not None and t.done(), 10)
        replacement = ex._slots[0].starting
        assert replacement is not None
        pid = replacement.result().pid
    await gone(pid, 5)


# start-up failures


async def test_a_restart_storm_breaks_the_executor() -> None:
    """A preload that cannot import kills every child at birth: start() must say so
    instead of spawning for ever."""
    ex = ProcessExecutor(2, Settings(preload="tests.broken_module"))
    started = time.monotonic()
    with pytest.raises(BrokenExecutor) as info:
        await asyncio.wait_for(ex.start(), 15)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "died at start-up" in message
    assert "preloading 'tests.broken_module' failed" in message
    assert "ImportError: tests.broken_module refuses to be imported" in message
    assert ex.slots() == []


# what heartbeats report


async def test_children_are_batch_tasks_and_the_supervisor_is_not(gate: Gate) -> None:
    """A write to a child must not hand it the supervisor's CPU (see child._batch_class)."""
    async with process_executor(gate) as ex:
        pids = [s.pid for s in ex.slots()]
        assert [os.sched_getscheduler(pid) for pid in pids] == [os.SCHED_BATCH] * 2
        assert os.sched_getscheduler(0) == os.SCHED_OTHER


async def test_slots_report_each_child(gate: Gate) -> None:
    async with process_executor(gate) as ex:
        idle = ex.slots()
        assert [s.index for s in idle] == [0, 1]
        assert all(s.job_id is None and s.jobs_done == 0 and s.rss > 0 for s in idle)
        assert len({s.pid for s in idle}) == 2
        assert all(psutil.pid_exists(s.pid) for s in idle)

        assert result_of(await ex.run(make_call(jobs.add, (1, 1)))) == 2
        marker = gate.marker("job")
        call = make_call(jobs.wait_for_file, (gate.path, marker))
        task = asyncio.create_task(ex.run(call))
        job_pid = await gate.started(marker)

        busy = {s.index: s for s in ex.slots()}
        assert busy[0].pid == job_pid
        assert busy[0].job_id == call.job_id
        assert busy[0].jobs_done == 1
        assert busy[0].rss > 0
        assert busy[1].job_id is None
        assert busy[1].jobs_done == 0

        gate.open()
        assert result_of(await asyncio.wait_for(task, 5)) == job_pid
        after = {s.index: s for s in ex.slots()}
        assert (after[0].job_id, after[0].jobs_done) == (None, 2)


def test_children_serve_and_crash_on_the_loop_the_cli_runs() -> None:
    """``naq-supervise`` runs uvloop (``new_event_loop``), whose transports are not
    ``asyncio.Transport``s: the executor reads its children there too, a crash
    included."""

    async def main() -> None:
        ex = ProcessExecutor(1, Settings())
        await ex.start()
        try:
            assert result_of(await ex.run(make_call(jobs.add, (2, 3)))) == 5
            crashed = await ex.run(make_call(jobs.exit_now, (3,)))
            assert (crashed.status, crashed.error) == (
                "crashed",
                "worker process exited with code 3",
            )
            assert result_of(await ex.run(make_call(jobs.add, (4, 5)))) == 9  # the new child
        finally:
            await ex.shutdown(1.0)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")
        runner.run(main())
