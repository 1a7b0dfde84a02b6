"""Waiting on jobs that cannot be stopped once they run: threads and subinterpreters.

Python can stop neither. A job past its timeout, or cancelled, is therefore reported
at once (``timeout`` / ``cancelled``) while its function runs on to the end, keeping
its slot busy; the executor frees the slot only when the function returns.

One future per run, settled by whichever comes first (the outcome, the timeout's
timer, a cancellation) with an :class:`Outcome`; so a cancelled task awaiting it is
told apart from a cancelled job without a shield, and no ``wait_for`` runs per job.
"""

from __future__ import annotations

import asyncio
import functools

from naq.executors.base import Call, Outcome
from naq.executors.calls import cancelled, timed_out


class CooperativeJobs:
    def __init__(self) -> None:
        self._waiters: dict[asyncio.Future[Outcome], Call] = {}
        """Each run's waiter and its call: by run, since one job may run twice at once."""

    async def wait(self, call: Call, job: asyncio.Future[Outcome]) -> Outcome:
        """The outcome of ``job``, or ``timeout``/``cancelled`` as soon as they happen."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Outcome] = loop.create_future()
        self._waiters[waiter] = call
        job.add_done_callback(functools.partial(_settle, waiter))
        timer = (
            loop.call_later(call.timeout, _end, waiter, timed_out(call))
            if call.timeout is not None
            else None
        )
        try:
            return await waiter
        finally:
            del self._waiters[waiter]
            if timer is not None:
                timer.cancel()

    def cancel(self, job_id: str) -> bool:
        """Report every run of the job cancelled now; False if none is waited on here."""
        found = False
        for waiter, call in list(self._waiters.items()):
            if call.job_id == job_id and not waiter.done():
                waiter.set_result(cancelled(call))
                found = True
        return found

    def cancel_all(self) -> None:
        for waiter, call in list(self._waiters.items()):
            _end(waiter, cancelled(call))


def _end(waiter: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not waiter.done():
        waiter.set_result(outcome)


def _settle(waiter: asyncio.Future[Outcome], job: asyncio.Future[Outcome]) -> None:
    if waiter.done():
        return
    if job.cancelled():
        waiter.cancel()
    elif (exc := job.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(job.result())
