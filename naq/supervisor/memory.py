"""The supervisor's memory watch: stop pulling while its total RSS is over the limit.

``--max-memory SIZE`` bounds the supervisor and its executor's children together.
Over the limit the supervisor withdraws its open pull requests and takes no new job;
running jobs go on (killing them would lose work a restart would repeat), and once
the total is back under the limit, pulling resumes. Checked once a second, a look
at ``/proc`` through psutil: cheap next to a job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psutil

from naq.executors.base import Executor

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0


def total_rss(executor: Executor) -> int:
    """RSS of this process and its executor's children."""
    own = psutil.Process().memory_info().rss
    return own + sum(slot.rss for slot in executor.slots())


class MemoryWatch:
    def __init__(
        self,
        limit: int,
        executor: Executor,
        pause: Callable[[], Awaitable[None]],
        resume: Callable[[], None],
    ) -> None:
        self.limit = limit
        self.paused = False
        """True while over the limit: the supervisor has no free slots."""
        self._executor = executor
        self._pause = pause
        self._resume = resume

    async def check(self) -> None:
        rss = total_rss(self._executor)
        if rss > self.limit and not self.paused:
            log.warning(
                "memory %s over the limit of %s: not pulling jobs", _mib(rss), _mib(self.limit)
            )
            self.paused = True
            await self._pause()
        elif rss <= self.limit and self.paused:
            log.info("memory %s back under the limit: pulling again", _mib(rss))
            self.paused = False
            self._resume()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            await self.check()


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
