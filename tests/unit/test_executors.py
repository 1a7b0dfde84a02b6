"""The executor contract, checked on the built-in executors without a server.

Jobs that must stay running while the test looks at slots wait on ``GATE``, a module
global: pickle sends these functions by reference, so the job in the pool thread
waits on the very event the test opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from naq.executors import Call, Executor, Outcome, load_executor
from naq.executors.asyncio import AsyncioExecutor
from naq.executors.frames import pack_call, unpack, unpack_call
from naq.executors.thread import ThreadExecutor
from naq.job import new_job_id
from naq.serializers import function_ref, get_serializer
from naq.settings import Settings
from tests import jobs

CONCURRENCY = 2
GATE = threading.Event()


def wait_for_gate() -> str:
    if not GATE.wait(5):
        raise TimeoutError("the test never opened the gate")
    return "through"


async def async_wait_for_gate() -> str:
    deadline = time.monotonic() + 5
    while not GATE.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        await asyncio.sleep(0.01)
    return "through"


async def async_fail() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("async boom")


async def raise_own_timeout() -> None:
    raise TimeoutError("the job's own timeout")


async def async_exit() -> None:
    sys.exit(3)


def make_call(
    func: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    serializer: str = "pickle",
    timeout: float | None = None,
) -> Call:
    payload = get_serializer(serializer).dumps_call(func, args, kwargs or {})
    return Call(
        job_id=new_job_id(),
        function=function_ref(func),
        serializer=serializer,
        payload=payload,
        timeout=timeout,
        is_async=inspect.iscoroutinefunction(func),
    )


def result_of(outcome: Outcome, serializer: str = "pickle") -> Any:
    assert outcome.status == "ok", outcome
    assert outcome.result is not None
    return get_serializer(serializer).loads_result(outcome.result)


async def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def gate() -> Any:
    GATE.clear()
    yield GATE
    GATE.set()  # never leave a pool thread blocked


@contextlib.asynccontextmanager
async def _running(kind: str) -> AsyncIterator[Executor]:
    ex = load_executor(kind)(CONCURRENCY, Settings())
    await ex.start()
    try:
        yield ex
    finally:
        GATE.set()
        await ex.shutdown(2.0)


@pytest.fixture(params=["asyncio", "thread"])
async def executor(request: pytest.FixtureRequest) -> AsyncIterator[Executor]:
    async with _running(request.param) as ex:
        yield ex


@pytest.fixture
async def asyncio_executor() -> AsyncIterator[AsyncioExecutor]:
    async with _running("asyncio") as ex:
        assert isinstance(ex, AsyncioExecutor)
        yield ex


@pytest.fixture
async def thread_executor() -> AsyncIterator[ThreadExecutor]:
    async with _running("thread") as ex:
        assert isinstance(ex, ThreadExecutor)
        yield ex


# results and errors


@pytest.mark.parametrize("serializer", ["pickle", "json"])
@pytest.mark.parametrize("func", [jobs.add, jobs.async_add])
async def test_result_round_trip(
    executor: Executor, serializer: str, func: Callable[..., Any]
) -> None:
    call = make_call(func, (2, 3), serializer=serializer)
    outcome = await executor.run(call)
    assert outcome.job_id == call.job_id
    assert result_of(outcome, serializer) == 5
    assert executor.free_slots() == CONCURRENCY


async def test_closure_result(executor: Executor) -> None:
    offset = 100
    outcome = await executor.run(make_call(lambda x: x + offset, (1,)))
    assert result_of(outcome) == 101


async def test_exception_is_an_error_with_traceback(executor: Executor) -> None:
    outcome = await executor.run(make_call(jobs.fail, ("no good",)))
    assert outcome.status == "error"
    assert outcome.error == "ValueError: no good"
    assert outcome.traceback is not None
    assert "raise ValueError(message)" in outcome.traceback
    assert outcome.result is None


async def test_async_exception_is_an_error_with_traceback(executor: Executor) -> None:
    outcome = await executor.run(make_call(async_fail))
    assert outcome.status == "error"
    assert outcome.error == "RuntimeError: async boom"
    assert 'raise RuntimeError("async boom")' in (outcome.traceback or "")


async def test_a_jobs_own_timeout_error_is_not_a_timeout(executor: Executor) -> None:
    outcome = await executor.run(make_call(raise_own_timeout, timeout=5))
    assert outcome.status == "error"
    assert outcome.error == "TimeoutError: the job's own timeout"


async def test_unpicklable_result_is_an_error(executor: Executor) -> None:
    outcome = await executor.run(make_call(jobs.unpicklable_result))
    assert outcome.status == "error"
    assert "cannot be pickled" in (outcome.error or "")


async def test_non_json_result_is_an_error(executor: Executor) -> None:
    outcome = await executor.run(make_call(jobs.not_json_result, serializer="json"))
    assert outcome.status == "error"
    assert "not JSON serializable" in (outcome.error or "")


@pytest.mark.parametrize("is_async", [False, True])
async def test_invalid_pickle_payload_is_rejected(executor: Executor, is_async: bool) -> None:
    call = Call(new_job_id(), "tests.jobs:add", "pickle", b"not a pickle", is_async=is_async)
    outcome = await executor.run(call)
    assert outcome.status == "rejected"
    assert "tests.jobs:add" in (outcome.error or "")
    assert executor.free_slots() == CONCURRENCY


@pytest.mark.parametrize("is_async", [False, True])
async def test_json_call_to_a_missing_function_is_rejected(
    executor: Executor, is_async: bool
) -> None:
    call = Call(new_job_id(), "tests.jobs:nope", "json", b"[[],{}]", is_async=is_async)
    outcome = await executor.run(call)
    assert outcome.status == "rejected"
    assert "nope" in (outcome.error or "")


async def test_unknown_serializer_is_rejected(executor: Executor) -> None:
    call = Call(new_job_id(), "tests.jobs:add", "yaml", b"a: 1")
    outcome = await executor.run(call)
    assert outcome.status == "rejected"
    assert "yaml" in (outcome.error or "")


# timeouts


async def test_async_job_timeout(asyncio_executor: AsyncioExecutor) -> None:
    started = time.monotonic()
    outcome = await asyncio_executor.run(make_call(jobs.async_sleep, (5,), timeout=0.2))
    assert time.monotonic() - started < 2
    assert outcome.status == "timeout"
    assert outcome.error == "TimeoutError: job exceeded 0.2s"
    assert asyncio_executor.free_slots() == CONCURRENCY


async def test_thread_job_timeout_keeps_its_slot_until_the_thread_returns(
    executor: Executor,
) -> None:
    """Python cannot stop a thread: its slot must stay taken until the function returns."""
    started = time.monotonic()
    outcome = await executor.run(make_call(jobs.sleep, (1.0,), timeout=0.2))
    assert outcome.status == "timeout"
    assert executor.free_slots() == CONCURRENCY - 1  # returned while the thread still runs
    await wait_until(lambda: executor.free_slots() == CONCURRENCY, timeout=3)
    assert time.monotonic() - started >= 0.9


# cancellation


async def test_cancel_a_running_async_job(asyncio_executor: AsyncioExecutor) -> None:
    call = make_call(jobs.async_sleep, (5,))
    task = asyncio.create_task(asyncio_executor.run(call))
    await wait_until(lambda: asyncio_executor.free_slots() == CONCURRENCY - 1)
    started = time.monotonic()
    assert await asyncio_executor.cancel(call.job_id) is True
    outcome = await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1
    assert outcome.status == "cancelled"
    assert not task.cancelled()
    assert task.cancelling() == 0
    assert asyncio_executor.free_slots() == CONCURRENCY
    assert await asyncio_executor.cancel(call.job_id) is False


async def test_cancel_a_running_thread_job(executor: Executor) -> None:
    call = make_call(wait_for_gate)
    task = asyncio.create_task(executor.run(call))
    await wait_until(lambda: executor.free_slots() == CONCURRENCY - 1)
    assert await executor.cancel(call.job_id) is True
    outcome = await asyncio.wait_for(task, 2)
    assert outcome.status == "cancelled"
    assert executor.free_slots() == CONCURRENCY - 1  # the thread is still running
    GATE.set()
    await wait_until(lambda: executor.free_slots() == CONCURRENCY)


async def test_cancel_of_an_unknown_job(executor: Executor) -> None:
    assert await executor.cancel("no-such-job") is False


# concurrency


@pytest.mark.parametrize("func", [wait_for_gate, async_wait_for_gate])
async def test_slots_are_taken_while_jobs_run(executor: Executor, func: Callable[..., Any]) -> None:
    assert executor.free_slots() == CONCURRENCY
    first = asyncio.create_task(executor.run(make_call(func)))
    await asyncio.sleep(0)  # run marks its slot busy before its first await
    assert executor.free_slots() == CONCURRENCY - 1
    second = asyncio.create_task(executor.run(make_call(func)))
    await asyncio.sleep(0)
    assert executor.free_slots() == 0
    await asyncio.sleep(0.05)
    assert not first.done()
    assert not second.done()
    GATE.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, second), 3)
    assert [result_of(o) for o in outcomes] == ["through", "through"]
    await wait_until(lambda: executor.free_slots() == CONCURRENCY)


async def test_jobs_run_concurrently(executor: Executor) -> None:
    started = time.monotonic()
    calls = [make_call(jobs.sleep, (0.3,)) for _ in range(CONCURRENCY)]
    outcomes = await asyncio.gather(*(executor.run(c) for c in calls))
    assert [result_of(o) for o in outcomes] == [0.3] * CONCURRENCY
    assert time.monotonic() - started < 0.3 * CONCURRENCY


# shutdown


async def test_shutdown_lets_a_short_async_job_finish_and_cancels_a_long_one(
    asyncio_executor: AsyncioExecutor,
) -> None:
    short = asyncio.create_task(asyncio_executor.run(make_call(jobs.async_sleep, (0.1,))))
    long = asyncio.create_task(asyncio_executor.run(make_call(jobs.async_sleep, (5,))))
    await asyncio.sleep(0)
    started = time.monotonic()
    await asyncio_executor.shutdown(0.5)
    assert time.monotonic() - started < 2
    short_outcome, long_outcome = await asyncio.wait_for(asyncio.gather(short, long), 2)
    assert result_of(short_outcome) == 0.1
    assert long_outcome.status == "cancelled"


async def test_shutdown_lets_a_short_thread_job_finish_and_cancels_a_long_one(
    executor: Executor,
) -> None:
    short = asyncio.create_task(executor.run(make_call(jobs.sleep, (0.1,))))
    long = asyncio.create_task(executor.run(make_call(wait_for_gate)))
    await asyncio.sleep(0)
    started = time.monotonic()
    await executor.shutdown(0.5)
    assert time.monotonic() - started < 2
    short_outcome, long_outcome = await asyncio.wait_for(asyncio.gather(short, long), 2)
    assert result_of(short_outcome) == 0.1
    assert long_outcome.status == "cancelled"


async def test_shutdown_when_idle_returns_at_once(executor: Executor) -> None:
    started = time.monotonic()
    await executor.shutdown(5)
    assert time.monotonic() - started < 1


# a job that calls sys.exit()


@pytest.mark.parametrize(
    ("kind", "func"),
    [("thread", sys.exit), ("asyncio", sys.exit), ("asyncio", async_exit)],
    ids=["thread-sync", "asyncio-sync", "asyncio-async"],
)
def test_sys_exit_in_a_job_is_an_error_outcome(kind: str, func: Callable[..., Any]) -> None:
    """A job that calls sys.exit() (argparse does on bad input) must not stop the worker.

    Run on a private loop: if SystemExit escapes the executor, it escapes the loop.
    """

    async def scenario() -> Outcome:
        async with _running(kind) as ex:
            return await ex.run(make_call(func, (3,) if func is sys.exit else ()))

    try:
        outcome = asyncio.run(scenario())
    except SystemExit:
        pytest.fail("SystemExit raised by a job escaped Executor.run")
    assert outcome.status == "error"
    assert "SystemExit" in (outcome.error or "")


def test_executor_names() -> None:
    assert AsyncioExecutor.name == "asyncio"
    assert ThreadExecutor.name == "thread"
    assert ThreadExecutor(1, Settings()).slots() == ()


def test_a_calls_trace_context_crosses_the_frame_to_a_child() -> None:
    context = (("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"), ("tracestate", "k=v"))
    call = Call("j1", "tests.jobs:add", "pickle", b"payload", trace_context=context)
    assert unpack_call(*unpack(pack_call(call)[4:])) == call
    plain = Call("j2", "tests.jobs:add", "pickle", b"payload")
    assert b"trace" not in pack_call(plain)  # nothing sent when there is none
    assert unpack_call(*unpack(pack_call(plain)[4:])).trace_context == ()


@pytest.mark.parametrize(
    ("status", "types", "expected"),
    [
        ("ok", (), None),
        ("retry", (), None),
        ("cancelled", (), None),
        ("error", ("builtins.ValueError", "builtins.Exception"), "ValueError"),
        ("error", ("tasks.Boom", "builtins.Exception"), "tasks.Boom"),
        ("error", (), "Error"),
        ("timeout", (), "TimeoutError"),
        ("crashed", (), "Crashed"),
        ("rejected", (), "Rejected"),
    ],
)
def test_an_outcome_names_its_failure_by_class_never_by_message(
    status: Any, types: tuple[str, ...], expected: str | None
) -> None:
    outcome = Outcome("j", status, error="ValueError: secret 42", error_types=types)
    assert outcome.error_class == expected
