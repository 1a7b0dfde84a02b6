"""Keeping running jobs' leases: ``in_progress()`` on each one every ``ack_wait / 3``.

A job that runs longer than ``ack_wait`` would otherwise be redelivered to another
supervisor while it still runs here. The renewal runs on the supervisor's own loop,
never in job code, so a job cannot forget it; a supervisor that dies stops renewing,
and its jobs are redelivered after ``ack_wait`` (nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from nats.aio.msg import Msg

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.2


async def keep_leases(running: Callable[[], Iterable[Msg]], ack_wait: float) -> None:
    """Run for the supervisor's life, renewing the lease of every message ``running()``
    returns. A failed renewal (a lost connection) is logged and tried again next round:
    the next one in time keeps the job, and a job whose lease lapses is redelivered."""
    interval = max(MIN_INTERVAL, ack_wait / 3)
    while True:
        await asyncio.sleep(interval)
        for msg in list(running()):
            try:
                await msg.in_progress()
            except Exception as exc:
                log.debug("renewing a running job's lease failed: %s", exc)
