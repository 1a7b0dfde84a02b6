"""Job functions for the benchmarks, in their own module so a supervisor can import them.

A process executor's children and an interpreter executor's subinterpreters import
the job's module by name (``benchjobs``, found on the ``sys.path`` they inherit), so
nothing here may live in a script's ``__main__``.

The no-op jobs do nothing: the benchmark measures what naq costs per job, not the
job. ``spin`` is the opposite: pure-Python work whose amount is fixed by its
argument, so a job costs the same wherever it runs and only parallelism changes
how many finish per second. ``stamp`` returns the moment it started, for
the latency benchmark.
"""

from __future__ import annotations

import time


async def noop() -> None:
    return None


def noop_sync() -> None:
    return None


def spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


async def stamp() -> float:
    """When the job started, on the clock of whatever runs it (the latency benchmark)."""
    return time.time()


def stamp_sync() -> float:
    """``stamp`` for the executors that run plain functions: in a process executor's
    child, the time is taken in the child, after the hand-off to it."""
    return time.time()
