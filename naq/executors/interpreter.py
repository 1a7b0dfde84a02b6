"""Interpreter executor: jobs in subinterpreters, each with its own GIL, in one process.

CPU-bound Python runs in parallel without a process per slot: each slot is a
subinterpreter (PEP 684/734) driven by one thread of the supervisor. Python 3.14
ships the API as ``concurrent.interpreters``; on 3.13 the ``interpreters-pep-734``
backport provides the same one, which naq installs there. Below 3.13 there is no
per-interpreter GIL, and asking for this executor says so.

What it asks of jobs: the function must be importable in a fresh interpreter (by
module path, or pickled by value with cloudpickle), and every C extension it imports
must support subinterpreters. One that does not (psutil and many older extensions)
makes the job fail with the import error; use the process executor for those.

Timeouts and cancellation are cooperative, as with threads: there is no way to
stop code running in a subinterpreter, so a job past its timeout is reported as
``timeout`` at once and its slot stays busy until the function returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from typing import Any

from naq.errors import BrokenExecutor, ConfigurationError
from naq.executors.base import Call, Executor, NoFreeSlot, Outcome
from naq.executors.cooperative import CooperativeJobs
from naq.executors.frames import pack_call, unpack, unpack_outcome
from naq.executors.handoff import Threads
from naq.settings import Settings

MIN_PYTHON = (3, 13)
SUBINTERPRETER_HINT = (
    " (the interpreter executor runs jobs in subinterpreters, and this module does not "
    "support them: run these jobs with the process executor)"
)


def interpreters_module() -> Any:
    """``concurrent.interpreters`` (3.14+) or its backport (3.13)."""
    if sys.version_info < MIN_PYTHON:
        raise ConfigurationError(
            "the interpreter executor needs Python 3.13 or newer (subinterpreters with "
            f"their own GIL); this is Python {sys.version.split()[0]}"
        )
    try:
        from concurrent import interpreters  # type: ignore[attr-defined]
    except ImportError:
        try:
            from interpreters_backport import interpreters
        except ImportError as exc:
            raise ConfigurationError(
                "the interpreter executor on Python 3.13 needs the interpreters-pep-734 "
                "package (pip install interpreters-pep-734)"
            ) from exc
    return interpreters


@dataclass(eq=False)
class Slot:
    interp: Any
    inbox: Any
    outbox: Any
    job_id: str | None = None


class InterpreterExecutor(Executor):
    name = "interpreter"

    def __init__(self, concurrency: int, settings: Settings) -> None:
        super().__init__(concurrency, settings)
        self._api = interpreters_module()
        self._threads = Threads(concurrency, "naq-interp")
        self._idle: list[Slot] = []
        self._busy = 0
        self._jobs = CooperativeJobs()
        self._all_idle = asyncio.Event()
        self._all_idle.set()
        self._closed = False

    def _create(self) -> Slot:
        """A subinterpreter with naq, the supervisor's sys.path and the preloads imported."""
        interp = self._api.create()
        inbox, outbox = self._api.create_queue(), self._api.create_queue()
        try:
            interp.exec("import _interpqueues")  # queues need it before they can be shared
            # Frames travel through queues bound once: prepare_main per job leaks a little
            # memory per call on 3.13, which a long-lived worker would accumulate.
            interp.prepare_main(_naq_in=inbox, _naq_out=outbox, _naq_path=tuple(sys.path))
            preload = "".join(f"import {m}\n" for m in self.settings.preload_modules)
            interp.exec(
                "import sys\nsys.path[:] = list(_naq_path)\n"
                "from naq.executors._in_interpreter import run as _naq_run\n" + preload
            )
        except self._api.ExecutionFailed as exc:
            with contextlib.suppress(Exception):
                interp.close()
            raise BrokenExecutor(
                f"interpreter executor: a subinterpreter failed to start: {exc}"
            ) from exc
        return Slot(interp, inbox, outbox)

    def _run_blocking(self, slot: Slot, frame: bytes) -> Outcome:
        try:
            slot.inbox.put(frame)
            slot.interp.exec("_naq_out.put(_naq_run(_naq_in.get_nowait()))")
        except self._api.ExecutionFailed as exc:  # BaseException escaping the job itself
            return Outcome(slot.job_id or "", "crashed", error=str(exc).splitlines()[0])
        outcome, _ = unpack_outcome(*unpack(slot.outbox.get_nowait()))
        if outcome.status == "rejected" and "subinterpreters" in (outcome.error or ""):
            hinted = f"{outcome.error}{SUBINTERPRETER_HINT}"
            return Outcome(outcome.job_id, "rejected", error=hinted)
        return outcome

    async def start(self) -> None:
        created = await asyncio.gather(
            *(self._threads.submit(self._create) for _ in range(self.concurrency)),
            return_exceptions=True,
        )
        self._idle = [s for s in created if isinstance(s, Slot)]
        errors = [e for e in created if isinstance(e, BaseException)]
        if errors:
            await self.shutdown(0.0)
            raise (
                errors[0]
                if isinstance(errors[0], BrokenExecutor)
                else BrokenExecutor(f"interpreter executor: {errors[0]}")
            )

    def free_slots(self) -> int:
        return self.concurrency - self._busy

    def _release(self, slot: Slot) -> None:
        slot.job_id = None
        if self._closed:  # finished after shutdown: nobody will run it again
            with contextlib.suppress(Exception):
                slot.interp.close()
        else:
            self._idle.append(slot)
        self._busy -= 1
        if self._busy == 0:
            self._all_idle.set()
        self.slot_freed()

    async def run(self, call: Call) -> Outcome:
        if not self._idle:
            raise NoFreeSlot(self.name, self.concurrency, call.job_id)
        slot = self._idle.pop()
        slot.job_id = call.job_id
        self._busy += 1
        self._all_idle.clear()
        job = self._threads.submit(self._run_blocking, slot, pack_call(call)[4:])
        job.add_done_callback(lambda _: self._release(slot))  # the slot frees when it returns
        return await self._jobs.wait(call, job)

    async def cancel(self, job_id: str) -> bool:
        """Cooperative: reported cancelled now; the subinterpreter runs on to the end."""
        return self._jobs.cancel(job_id)

    async def shutdown(self, grace: float) -> None:
        try:
            await asyncio.wait_for(self._all_idle.wait(), grace)
        except TimeoutError:
            self._jobs.cancel_all()
        self._closed = True
        for slot in self._idle:
            with contextlib.suppress(Exception):
                slot.interp.close()
        self._idle.clear()
        self._threads.shutdown()
