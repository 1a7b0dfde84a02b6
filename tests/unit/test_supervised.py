"""naq.supervised without a server: a failing task is logged and started again, with a
capped, jittered backoff; a task that returns is done; cancelling it stops it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from naq.supervised import backoff, finish, keep_running


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    for failures, full in ((1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (50, 30.0)):
        for _ in range(50):
            delay = backoff(failures)
            assert full / 2 <= delay <= full, (failures, delay)


async def test_a_failing_task_is_logged_with_its_traceback_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"failure {runs}")

    with caplog.at_level(logging.INFO, logger="naq.supervised"):
        await asyncio.wait_for(keep_running("flaky", flaky, base=0.001, cap=0.01), 5)
    assert runs == 3  # two failures, then it returned: done
    failed = [r for r in caplog.records if r.getMessage() == "flaky failed; it starts again"]
    assert [str(r.exc_info[1]) for r in failed if r.exc_info] == ["failure 1", "failure 2"]
    assert any("failed 2 time(s) in a row" in r.getMessage() for r in caplog.records)


async def test_cancelling_stops_it_even_while_it_waits_to_start_again() -> None:
    started = asyncio.Event()

    async def always_fails() -> None:
        started.set()
        raise RuntimeError("down")

    task = asyncio.create_task(keep_running("down", always_fails, base=10.0, cap=10.0))
    await started.wait()
    await asyncio.sleep(0)  # now in its backoff
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_finish_waits_logs_each_error_and_cancels_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def forever() -> None:
        await asyncio.Event().wait()

    failing = asyncio.create_task(fails())
    endless = asyncio.create_task(forever())
    await asyncio.sleep(0)  # both start: one fails, one waits
    await finish([failing, endless], cancel=True)
    assert endless.cancelled()
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [failing.exception()]
    await finish([])  # nothing to wait for


async def test_finish_lets_the_callers_own_cancellation_through() -> None:
    endless = asyncio.create_task(asyncio.Event().wait())
    waiting = asyncio.create_task(finish([endless]))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    endless.cancel()
