"""Waiting on jobs that cannot be stopped once they run: threads and subinterpreters.

Python can stop neither. A job past its timeout, or cancelled, is therefore reported
at once (``timeout`` / ``cancelled``) while its function runs on to the end, keeping
its slot busy; the executor frees the slot only when the function returns.
"""

from __future__ import annotations

import asyncio

from naq.executors.base import Call, Outcome
from naq.executors.calls import cancelled, timed_out


class CooperativeJobs:
    def __init__(self) -> None:
        self._waiters: dict[asyncio.Future[Outcome], str] = {}
        """Each run's waiter and its job id: by run, since one job may run twice at once."""

    async def wait(self, call: Call, job: asyncio.Future[Outcome]) -> Outcome:
        """The outcome of ``job``, or ``timeout``/``cancelled`` as soon as they happen."""
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = call.job_id
        job.add_done_callback(lambda done: _settle(waiter, done))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), call.timeout)
        except TimeoutError:
            return timed_out(call)
        except asyncio.CancelledError:
            if waiter.cancelled():
                return cancelled(call)
            raise
        finally:
            del self._waiters[waiter]

    def cancel(self, job_id: str) -> bool:
        """Report every run of the job cancelled now; False if none is waited on here."""
        found = False
        for waiter, running in list(self._waiters.items()):
            if running == job_id and not waiter.done():
                waiter.cancel()
                found = True
        return found

    def cancel_all(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.cancel()


def _settle(waiter: asyncio.Future[Outcome], job: asyncio.Future[Outcome]) -> None:
    if waiter.done():
        return
    if job.cancelled():
        waiter.cancel()
    elif (exc := job.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(job.result())
