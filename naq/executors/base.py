"""The executor contract: what a plugin implements.

Executors never see a NATS message. They get a plain :class:`Call` (job id, function
reference, serializer name, payload bytes, timeout) and return a plain
:class:`Outcome`, so retry policy, acks and results live once, in the supervisor,
whatever runs the job: a coroutine on the loop, a thread, a child process or a
subinterpreter. ``Call`` and ``Outcome`` are plain, picklable values because they
cross process and interpreter boundaries.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from naq.errors import NaqError
from naq.executors.allow import AllowList

if TYPE_CHECKING:
    from naq.settings import Settings

Status = Literal["ok", "error", "retry", "timeout", "cancelled", "crashed", "rejected"]
"""``rejected``: the job cannot run at all (undecodable payload, function not
importable); it is dead-lettered, never retried."""
FAILED: dict[str, str] = {
    "error": "Error",
    "timeout": "TimeoutError",
    "crashed": "Crashed",
    "rejected": "Rejected",
}
"""The statuses of a failed run, each with the class it is counted under when the
Outcome names none (a timeout, a child that died, a job that could not be loaded)."""


@dataclass(slots=True)  # not frozen: built per job, and frozen costs ~0.1 us a field
class Call:
    job_id: str
    function: str
    """``module:qualname``, for logs and for resolving json jobs."""
    serializer: str
    payload: bytes
    """Serialized function and arguments; decoded only where the job runs."""
    timeout: float | None = None
    is_async: bool = False
    attempt: int = 1
    keep_result: bool = True
    """False for ``result_ttl=0``: the return value is not even serialized, so a job
    whose result nobody keeps cannot fail on an unpicklable result."""
    allow: AllowList | None = None
    """A json-mode supervisor's allow-list: the function is resolved through it, so the
    check made before dispatch is made again where the job runs. ``None``: no limit
    (pickle mode, where decoding the payload runs code anyway)."""
    trace_context: tuple[tuple[str, str], ...] = ()
    """W3C trace-context headers (``traceparent``, ``tracestate``) the job runs under,
    so spans its function opens are children of the supervisor's (``naq.tracing``);
    plain strings, so they cross to children and subinterpreters as they are."""


@dataclass(slots=True)  # not frozen: built per job, and frozen costs ~0.1 us a field
class Outcome:
    job_id: str
    status: Status
    result: bytes | None = None
    """The serialized return value (``ok`` only)."""
    error: str | None = None
    """One line: ``ValueError: bad input``."""
    traceback: str | None = None
    retry_in: float | None = None
    error_types: tuple[str, ...] = ()
    """``module.Qualname`` of the exception's class and its bases, for retry_on/ignore_on."""

    @property
    def error_class(self) -> str | None:
        """A failed run's exception class (``ValueError``, ``tasks.Boom``), never its
        message; ``None`` for a run that did not fail. What metrics label and traces
        record: a message may carry a job's arguments."""
        if self.status not in FAILED:
            return None
        if self.error_types:
            return self.error_types[0].removeprefix("builtins.")
        return FAILED[self.status]


class NoFreeSlot(NaqError):
    """``run`` was called with every slot busy: the call is refused, not queued or run
    beside the others. The supervisor never asks this (it hands the job back), so it
    is a defence against a caller that miscounted, stated instead of a crash deep in
    the executor."""

    def __init__(self, executor: str, concurrency: int, job_id: str) -> None:
        super().__init__(
            f"{executor} executor: all {concurrency} slot(s) are busy; job {job_id} refused"
        )


class NotStarted(NaqError):
    """A call the executor had queued ahead of its slot (``queues_ahead``) was taken
    back before it started: the drain began (``back``), or it waited longer than
    ``lookahead_wait`` behind a long job (``late``). The supervisor hands the job back
    without counting a run, as it does with a job waiting in its own look-ahead."""

    def __init__(self, job_id: str, reason: Literal["back", "late"]) -> None:
        super().__init__(f"job {job_id} was not started: {reason}")
        self.job_id = job_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SlotInfo:
    index: int
    pid: int
    rss: int
    job_id: str | None
    jobs_done: int


def _nothing() -> None:
    return None


class Executor(abc.ABC):
    """Runs calls, at most ``concurrency`` at once.

    ``run`` must mark its slot busy before its first ``await`` so ``free_slots`` is
    exact when the supervisor sizes its next fetch, and must raise :class:`NoFreeSlot`
    (never run, queue or crash) when called with no slot free.
    """

    name: ClassVar[str]
    queues_ahead: ClassVar[bool] = False
    """True for an executor that keeps the look-ahead itself, queued where its calls
    run (the process executor, in each child: the hand-off to a child is hidden behind
    the job it runs). Its ``free_slots`` then counts those places too, the supervisor
    keeps no look-ahead of its own, and ``run`` may end in :class:`NotStarted`."""

    def __init__(self, concurrency: int, settings: Settings) -> None:
        self.concurrency = concurrency
        self.settings = settings
        self.slot_freed: Callable[[], None] = _nothing
        """Set by the supervisor; an executor whose slot can free after ``run``
        returned (a thread that runs on past its job's timeout) calls it then, so a job
        waiting in the supervisor's look-ahead starts on that slot at once."""
        self.ahead_open = True
        """Whether the look-ahead is open, kept by the supervisor: False while jobs run
        longer than ``lookahead_wait``. Its own look-ahead follows it, and a
        ``queues_ahead`` executor then queues no call behind a running one."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    def free_slots(self) -> int:
        """Slots that can start a job now: the supervisor fetches at most this many."""

    @abc.abstractmethod
    async def run(self, call: Call) -> Outcome:
        """Run one call. Job errors come back as an Outcome and are never raised."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> bool:
        """Stop every running call of ``job_id`` (a job delivered twice may run twice at
        once); each ``run`` returns a ``cancelled`` Outcome. False if none runs here."""

    @abc.abstractmethod
    async def shutdown(self, grace: float) -> None:
        """Let running jobs finish for ``grace`` seconds, then cancel what remains."""

    def hand_back_queued(self) -> None:
        """The drain began: calls queued ahead (``queues_ahead``) end with
        :class:`NotStarted` now, not after the running jobs."""
        return None

    def slots(self) -> Sequence[SlotInfo]:
        """Per-slot pid, rss and job, for heartbeats; in-process executors have none."""
        return ()
