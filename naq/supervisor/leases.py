"""Keeping running jobs' leases: ``in_progress()`` on each one every ``ack_wait / 3``.

A job that runs longer than ``ack_wait`` would otherwise be redelivered to another
supervisor while it still runs here. The ``ack_wait`` is the consumer's own, read
again every round, not the local setting: the consumer is shared by every
supervisor of the queue and the last one to start sets it, so a supervisor started
with a longer ``ack_wait`` than the consumer now has would renew too late. Each round
waits a third of the smaller of the two. The renewal runs on the supervisor's own loop,
never in job code, so a job cannot forget it; a supervisor that dies stops renewing,
and its jobs are redelivered after ``ack_wait`` (nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from nats.aio.msg import Msg

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.2


async def keep_leases(
    running: Callable[[], Iterable[Msg]], ack_wait: Callable[[], Awaitable[float]]
) -> None:
    """Run for the supervisor's life, renewing the lease of every message ``running()``
    returns; ``ack_wait()`` gives the ``ack_wait`` in force before each round. A failed
    renewal (a lost connection) is logged and tried again next round: the next one in
    time keeps the job, and a job whose lease lapses is redelivered."""
    while True:
        await asyncio.sleep(max(MIN_INTERVAL, await ack_wait() / 3))
        for msg in list(running()):
            try:
                await msg.in_progress()
            except Exception as exc:
                log.debug("renewing a running job's lease failed: %s", exc)
