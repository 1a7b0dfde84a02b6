"""Executors driven directly, without a server: one fixture for every executor there is.

Jobs that must stay running while a test looks wait on a ``Gate``: a file, because
the same job may run in a pool thread, a child process or a subinterpreter, and a
file is the one thing all of them see.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from naq.errors import ConfigurationError
from naq.executors import Call, Executor, Outcome, load_executor
from naq.executors.interpreter import interpreters_module
from naq.job import new_job_id
from naq.serializers import function_ref, get_serializer
from naq.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = ROOT / "examples" / "plugin"
EXAMPLE_SPEC = "naq_example_executor:SlotThreadExecutor"
CONCURRENCY = 2


def interpreters_available() -> bool:
    try:
        interpreters_module()
    except ConfigurationError:
        return False
    return True


SPECS = {
    "asyncio": "asyncio",
    "thread": "thread",
    "process": "process",
    **({"interpreter": "interpreter"} if interpreters_available() else {}),
    "example": EXAMPLE_SPEC,
}
"""Every executor the contract is checked on: its test id and its ``load_executor`` spec.
Below Python 3.13 the interpreter executor cannot exist; ``test_contract`` checks that
it says so instead."""


def make_call(
    func: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
) -> Call:
    payload = get_serializer("pickle").dumps_call(func, args, kwargs or {})
    return Call(
        job_id=new_job_id(),
        function=function_ref(func),
        serializer="pickle",
        payload=payload,
        timeout=timeout,
        is_async=inspect.iscoroutinefunction(func),
    )


def result_of(outcome: Outcome) -> Any:
    assert outcome.status == "ok", outcome
    assert outcome.result is not None
    return get_serializer("pickle").loads_result(outcome.result)


async def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


class Gate:
    """Jobs given ``path`` block until the test opens it; ``marker`` files say they started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = str(root / "gate")

    def marker(self, name: str) -> str:
        return str(self.root / f"started-{name}")

    def open(self) -> None:
        Path(self.path).touch()

    async def started(self, marker: str, timeout: float = 5.0) -> int:
        """Waits until the job writing ``marker`` runs; returns the pid it runs in."""
        await wait_until(lambda: Path(marker).exists(), timeout)
        return int(Path(marker).read_text())


@pytest.fixture(scope="session")
def plugin_on_path() -> Iterator[None]:
    """The example plugin, importable as an uninstalled third-party package would be."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGIN_DIR))
        yield


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(tmp_path)


@contextlib.asynccontextmanager
async def started_executor(
    spec: str, gate: Gate, settings: Settings | None = None, concurrency: int = CONCURRENCY
) -> AsyncIterator[Executor]:
    """A started executor; at the end the gate opens, so no job is left blocked, and every
    slot is back before shutdown: a thread must not outlive the loop it reports to."""
    executor = load_executor(spec)(concurrency, settings or Settings())
    await executor.start()
    idle = executor.free_slots()
    try:
        yield executor
    finally:
        gate.open()
        await wait_until(lambda: executor.free_slots() == idle, 10)
        await executor.shutdown(5.0)


@pytest.fixture(params=list(SPECS))
def kind(request: pytest.FixtureRequest, plugin_on_path: None) -> str:
    return str(request.param)


@pytest.fixture
async def executor(kind: str, gate: Gate) -> AsyncIterator[Executor]:
    """The contract is about slots: an executor that queues calls ahead of its slots
    (the process executor) is checked here with no look-ahead, and its queue in
    ``test_process_ahead``."""
    async with started_executor(SPECS[kind], gate, Settings(lookahead=0)) as ex:
        yield ex
