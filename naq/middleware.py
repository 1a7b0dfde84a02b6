"""The middleware seam: hooks around enqueueing and around every job a supervisor runs.

Metrics, tracing and signing plug in here rather than into the supervisor's code,
as dramatiq's middleware does. A middleware subclasses :class:`Middleware` and
overrides the hooks it needs; every hook of the base class does nothing.

Producer side (``Queue``), for each job:

- ``before_enqueue(job, headers)``: before the job is published; ``headers`` are the
  message's NATS headers, and a hook may add its own (trace context, a signature).
  Headers naq itself sets (``Nats-*``) cannot be replaced.
- ``after_enqueue(job)``: once JetStream has stored it (or held it for its
  dependencies, or scheduled it).

Supervisor side:

- ``on_start(worker)`` once the supervisor pulls; ``on_stop(worker)`` after it drained.
- ``before_job(job)``: a job is about to run (after naq decided it will run).
- ``after_outcome(job, outcome)``: the executor returned its ``Outcome``.
- ``after_settle(job, outcome, action)``: naq acted on it: ``finished``, ``failed``,
  ``retry``, ``requeued`` (handed back by a shutdown) or ``cancelled``.

Rules that keep a middleware from hurting the jobs it watches:

- A hook that raises is logged with its traceback and skipped: it never fails a job,
  never stops a supervisor, and the other middleware still run.
- Hooks are plain functions called on the event loop, in the order the middleware
  were given (``after_*`` and ``on_stop`` in reverse, so the first one wraps the
  rest). They must not block: hand slow work to a task or a thread.
- With no middleware, nothing is called and no per-job object is built.

Middleware is named like executors: ``--middleware module:Class`` (several, comma
separated; environment ``NAQ_MIDDLEWARE``), or a name registered under the
entry-point group ``naq.middleware``. Classes are instantiated without arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from naq.errors import ConfigurationError
from naq.plugins import available, load_class

if TYPE_CHECKING:
    from naq.executors.base import Outcome
    from naq.job import Job, JobOptions

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "naq.middleware"
RESERVED_HEADER_PREFIX = "Nats-"
"""Headers the server acts on (message id, schedules, TTLs): naq's to set, not a hook's."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """The supervisor a middleware is attached to."""

    worker_id: str
    namespace: str
    queues: tuple[str, ...]
    executor: str
    concurrency: int


@dataclass(slots=True)
class JobContext:
    """One delivery of a job, as middleware see it: no NATS message, no payload.

    ``state`` is for middleware to keep what they need from ``before_job`` to the
    ``after_*`` hooks of the same delivery (a span, a start time); key it by
    something of your own, since every middleware shares it.
    """

    job_id: str
    function: str
    queue: str
    attempt: int
    enqueued_at: float
    options: JobOptions
    headers: Mapping[str, str]
    worker_id: str
    started_at: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)
    delivered: int = 1
    """The server's delivery count: above 1 for every redelivery (a retry, a job handed
    back by a shutdown, the job of a worker that died)."""
    trace_context: dict[str, str] = field(default_factory=dict)
    """W3C trace-context headers a ``before_job`` hook may set: the job runs under them,
    wherever it runs (``naq.tracing``)."""


class Middleware:
    """Base class of naq middleware: override the hooks you need; each does nothing."""

    def before_enqueue(self, job: Job, headers: dict[str, str]) -> None:
        """Before ``job`` is published; add to ``headers`` to send headers with it."""

    def after_enqueue(self, job: Job) -> None:
        """``job`` was stored by JetStream (held, for a job with dependencies)."""

    def on_start(self, worker: WorkerInfo) -> None:
        """The supervisor is connected and about to pull its first jobs."""

    def on_stop(self, worker: WorkerInfo) -> None:
        """The supervisor has drained; its connection is still open."""

    def before_job(self, job: JobContext) -> None:
        """``job`` is about to run."""

    def after_outcome(self, job: JobContext, outcome: Outcome) -> None:
        """The executor returned ``outcome`` for ``job``; nothing is settled yet."""

    def after_settle(self, job: JobContext, outcome: Outcome, action: str) -> None:
        """naq acted on ``outcome``: ``action`` is finished, failed, retry, requeued or
        cancelled."""


class Middlewares:
    """The middleware of one producer or supervisor, each hook called in isolation."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Middleware] = ()) -> None:
        self.items: tuple[Middleware, ...] = tuple(items)
        for item in self.items:
            if not isinstance(item, Middleware):
                raise ConfigurationError(f"{item!r} is not a naq Middleware (naq.Middleware)")

    @classmethod
    def configured(
        cls, names: Sequence[str], given: Sequence[Middleware] | None = None
    ) -> Middlewares:
        """``given`` instances when there are any, else those the settings name."""
        return cls(load_middleware(names) if given is None else given)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __repr__(self) -> str:
        return f"Middlewares({', '.join(type(m).__name__ for m in self.items)})"

    def emit(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on each middleware in order; one that raises is logged, skipped."""
        for item in self.items:
            self._call(item, hook, args)

    def emit_after(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on each middleware in reverse order (the first wraps the rest)."""
        for item in reversed(self.items):
            self._call(item, hook, args)

    def before_enqueue(self, job: Job, headers: dict[str, str]) -> None:
        """Let each middleware add headers; ones naq sets itself are kept as they were."""
        ours = {k: v for k, v in headers.items() if k.startswith(RESERVED_HEADER_PREFIX)}
        self.emit("before_enqueue", job, headers)
        for key in [k for k in headers if k.startswith(RESERVED_HEADER_PREFIX) and k not in ours]:
            log.error("middleware may not set the %s header (job %s): dropped", key, job.job_id)
            del headers[key]
        headers.update(ours)

    @staticmethod
    def _call(item: Middleware, hook: str, args: tuple[Any, ...]) -> None:
        try:
            getattr(item, hook)(*args)
        except Exception:
            log.exception("middleware %s failed in %s; ignored", type(item).__name__, hook)


def available_middleware() -> list[str]:
    return available(ENTRY_POINT_GROUP, {})


def load_middleware(specs: str | Sequence[str]) -> list[Middleware]:
    """Instances of the middleware ``specs`` names (a comma-separated string or a list)."""
    names = specs.split(",") if isinstance(specs, str) else list(specs)
    loaded = []
    for spec in (name.strip() for name in names):
        if not spec:
            continue
        cls = load_class(spec, kind="middleware", group=ENTRY_POINT_GROUP, base=Middleware)
        try:
            loaded.append(cast(Middleware, cls()))
        except Exception as exc:
            raise ConfigurationError(f"middleware {spec!r} could not be created: {exc}") from exc
    return loaded
