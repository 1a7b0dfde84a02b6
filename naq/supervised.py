"""Keeping a long-lived task alive: an error is logged with its traceback, and the task
starts again after a capped, jittered backoff.

Why: a supervisor's background work (pulling, leases, heartbeats, the dead-letter
drain, taking in held jobs, the memory watch) runs for the process's life. One that
ends on an error (a 503 during a leader election, a deleted consumer) would leave a
live process doing less than it claims, silently. The backoff doubles from ``base``
up to ``cap`` and is jittered (a point in its upper half), so tasks that failed
together do not hammer a recovering server together; it starts over once a run has
lasted longer than ``cap``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

BASE = 0.5
CAP = 30.0


def backoff(failures: int, base: float = BASE, cap: float = CAP) -> float:
    """Seconds to wait after ``failures`` failures in a row: base * 2**(n-1), at most
    ``cap``, then a random point in the upper half of that."""
    delay = min(cap, base * 2 ** max(0, failures - 1))
    return random.uniform(delay / 2, delay)


async def keep_running(
    name: str, run: Callable[[], Awaitable[None]], *, base: float = BASE, cap: float = CAP
) -> None:
    """Run ``run()`` until it returns (the task chose to end: a puller told to stop) or
    is cancelled; when it raises, log the traceback and run it again after a backoff."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; it starts again", name)
        else:
            return
        if time.monotonic() - started > cap:
            failures = 0  # it ran well for a while: this is a new run of trouble
        failures += 1
        delay = backoff(failures, base, cap)
        log.warning("%s failed %d time(s) in a row; next start in %.1fs", name, failures, delay)
        await asyncio.sleep(delay)


async def finish(tasks: Iterable[asyncio.Future[Any]], *, cancel: bool = False) -> None:
    """Wait until every one of ``tasks`` has ended (cancelling them first when
    ``cancel``), then log with its traceback each error one ended with.

    Why not ``gather(return_exceptions=True)``: its results are easy to leave unread,
    and an error nobody reads is a failure nobody sees. A cancellation of the caller
    itself still propagates (``asyncio.wait`` does not swallow it).
    """
    pending = [asyncio.ensure_future(task) for task in tasks]
    if cancel:
        for task in pending:
            task.cancel()
    if not pending:
        return
    await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a task ended with an error while stopping: %r", exc, exc_info=exc)
