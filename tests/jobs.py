"""Job functions the tests enqueue; importable as ``tests.jobs`` by supervisors in
this process and in subprocesses (the repository root is on ``PYTHONPATH``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any


def mark(path: str, line: str) -> int:
    """Append ``line`` to ``path``: how tests count runs across processes and retries.
    Returns the number of lines now there (this run's number)."""
    with open(path, "a") as f:
        f.write(line + "\n")
    return count(path)


def count(path: str) -> int:
    with open(path) as f:
        return len(f.readlines())


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def noop() -> None:
    return None


def echo(*args: Any, **kwargs: Any) -> Any:
    return [list(args), kwargs]


def fail(message: str = "bad input") -> None:
    raise ValueError(message)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def unpicklable_result() -> Any:
    return threading.Lock()


def not_json_result() -> Any:
    return {1, 2, 3}


def big_result(size: int) -> bytes:
    return b"x" * size


def count_words(text: str) -> int:
    return len(text.split())


def record_run(path: str, seconds: float = 0.0) -> int:
    """Appends a line per execution, so a test can count how often a job really ran."""
    mark(path, "run")
    time.sleep(seconds)
    return count(path)


def flaky(path: str, failures: int) -> int:
    """Fails ``failures`` times, then succeeds; the attempt count lives in ``path``."""
    tries = mark(path, "try")
    if tries <= failures:
        raise RuntimeError(f"failure {tries} of {failures}")
    return tries


def pid() -> int:
    import os

    return os.getpid()


def exit_now(code: int) -> None:
    """Leaves the process at once, no cleanup: what a crashing C extension looks like."""
    import os

    os._exit(code)


def kill_self(signum: int) -> None:
    import os

    os.kill(os.getpid(), signum)


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


_hoard: list[bytes] = []


def leak(megabytes: int) -> int:
    """Keeps ``megabytes`` more memory for the life of the process, as leaky code does."""
    _hoard.append(b"x" * (megabytes * 1024 * 1024))
    return len(_hoard)


def leak_slowly(megabytes: int, seconds: float) -> None:
    """Grows while it runs: caught by the watch during the job, not after it."""
    _hoard.append(b"x" * (megabytes * 1024 * 1024))
    time.sleep(seconds)


def busy_loop(seconds: float) -> int:
    """Pure-Python CPU work: holds the GIL of whatever runs it."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return n


def _mark(path: str) -> None:
    """Writes the pid of whatever runs the job to ``path``, atomically, so a test that
    sees the file can read a whole pid from it."""
    import os

    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)


def wait_for_file(gate: str, started: str | None = None, limit: float = 10.0) -> int:
    """Blocks until ``gate`` exists. A file rather than an Event: the test opens it the
    same way for a thread, a child process and a subinterpreter."""
    import os

    if started is not None:
        _mark(started)
    deadline = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.005)
    return os.getpid()


def sleep_marked(started: str, seconds: float) -> float:
    """``sleep``, telling the test when it has really begun."""
    _mark(started)
    time.sleep(seconds)
    return seconds


def timed_sleep(seconds: float) -> tuple[float, float]:
    """Wall-clock start and end, comparable across threads, processes and interpreters."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def exit_after_record(path: str, code: int) -> None:
    """Counts its attempts in ``path``, then crashes like ``exit_now``."""
    import os

    mark(path, "run")
    os._exit(code)


def crash_once(path: str) -> str:
    """Takes its process down on the first run only; ``path`` remembers that it did."""
    import os

    if not os.path.exists(path):
        open(path, "w").close()
        os._exit(5)
    return "survived"


def fail_with(path: str, kind: str) -> None:
    """Raises ``kind`` (a builtin exception name) and counts the attempt in ``path``."""
    mark(path, "try")
    import builtins

    raise getattr(builtins, kind)("failing on purpose")


def fail_loudly(path: str, size: int) -> None:
    """Counts the attempt in ``path``, then fails with an error message of ``size``
    characters (bigger than a server's max_payload, say)."""
    mark(path, "try")
    raise ValueError("x" * size)


class TransientError(ConnectionError):
    """A subclass, to check that retry_on matches bases too."""


def fail_transient(path: str, failures: int) -> int:
    tries = mark(path, "try")
    if tries <= failures:
        raise TransientError(f"transient failure {tries}")
    return tries


def ask_for_retry(path: str, delay: float) -> int:
    """Asks to be run again once, after ``delay`` seconds, with naq.Retry."""
    from naq import Retry

    tries = mark(path, str(time.time()))
    if tries == 1:
        raise Retry(delay=delay)
    return tries


def stamp(path: str, name: str, seconds: float = 0.0) -> str:
    """Runs for ``seconds``, then appends ``name start end`` (wall clock) to ``path``:
    the order in which jobs ran, and whether they overlapped."""
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{name} {start} {time.time()}\n")
    return name


async def async_wait_for_file(gate: str, limit: float = 10.0) -> str:
    """``wait_for_file`` as a coroutine: an async job that runs until the test opens
    the gate."""
    import os

    deadline = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        await asyncio.sleep(0.005)
    return "opened"


def exit_when_file(gate: str, started: str, code: int) -> None:
    """Runs until ``gate`` exists, then takes its process down with exit ``code``."""
    import os

    wait_for_file(gate, started)
    os._exit(code)


class Boom(Exception):
    """A job's own exception class, for what metrics and traces say of a failure."""


def boom(secret: str) -> None:
    """Fails with a message that holds its argument: it must show up in no metric label."""
    raise Boom(f"could not use {secret}")
