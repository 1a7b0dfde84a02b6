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
        self._waiters: dict[str, asyncio.Future[Outcome]] = {}

    async def wait(self, call: Call, job: asyncio.Future[Outcome]) -> Outcome:
        """The outcome of ``job``, or ``timeout``/``cancelled`` as soon as they happen."""
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[call.job_id] = waiter
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
            self._waiters.pop(call.job_id, None)

    def cancel(self, job_id: str) -> bool:
        """Report the job cancelled now; False if it is not waited on here."""
        waiter = self._waiters.get(job_id)
        if waiter is None or waiter.done():
            return False
        waiter.cancel()
        return True

    def cancel_all(self) -> None:
        for job_id in list(self._waiters):
            self.cancel(job_id)


def _settle(waiter: asyncio.Future[Outcome], job: asyncio.Future[Outcome]) -> None:
    if waiter.done():
        return
    if job.cancelled():
        waiter.cancel()
    elif (exc := job.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(job.result())
