"""Tracing with OpenTelemetry: one trace from ``enqueue`` to the end of the job's run.

Optional: it needs the ``otel`` extra (``pip install 'naq[otel]'``). It is turned on
as a middleware, ``NAQ_MIDDLEWARE=tracing`` (or ``Queue(middleware=[Tracing()])``),
in the producers, the supervisors and the scheduler; without the extra naq works
unchanged, and asking for tracing is a configuration error that says what to
install (the class refuses to be created).

- Producer (``before_enqueue``): a ``create`` span (kind PRODUCER) is made under the
  caller's current span and its W3C trace context (``traceparent``, ``tracestate``)
  is written into the job's NATS headers, which travel with the job on every path.
- Supervisor (``before_job`` .. ``after_settle``): a ``process`` span (kind
  CONSUMER), child of the context the headers carry, around the run and its
  settling; its context goes into the ``Call`` (``Call.trace_context``), and where
  the job runs (the loop, a thread, a process-executor child, a subinterpreter)
  ``naq.executors.calls.attached`` makes it current, so spans the job function
  opens are its children. A child process exports its spans through its own tracer
  provider (set it up in a ``--preload`` module).
- Attributes follow OpenTelemetry's messaging conventions: ``messaging.system`` =
  ``nats``, ``messaging.destination.name`` = the queue, ``messaging.operation.type``,
  ``messaging.message.id`` = the job id. A failed run sets the span's status to
  ERROR with ``error.type`` = the exception's class, never its message (which may
  carry a job's arguments).

This module imports no NATS and, at import time, no OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naq.errors import ConfigurationError
from naq.middleware import JobContext, Middleware

if TYPE_CHECKING:
    from naq.executors.base import Outcome
    from naq.job import Job

TRACER_NAME = "naq"
TRACE_HEADERS = ("traceparent", "tracestate")
"""The W3C trace-context headers: what crosses from producer to supervisor to job."""
_SPAN = "naq.tracing.span"
"""Where the consumer span is kept in a delivery's ``JobContext.state``."""


def _otel() -> Any:
    """The OpenTelemetry API modules, or a ConfigurationError saying what to install."""
    try:
        from opentelemetry import context, propagate, trace
    except ImportError as exc:
        raise ConfigurationError(
            "tracing needs OpenTelemetry: pip install 'naq[otel]' "
            f"(opentelemetry-api and opentelemetry-sdk): {exc}"
        ) from None
    return context, propagate, trace


class Tracing(Middleware):
    """The tracing middleware; see the module's docstring. Refuses to be created
    without the ``otel`` extra, so ``--middleware tracing`` fails as a usage error."""

    def __init__(self, tracer_provider: Any = None) -> None:
        """``tracer_provider``: where the spans go; by default the global one (what
        ``opentelemetry.trace.set_tracer_provider`` set)."""
        self._context, self._propagate, self._trace = _otel()
        self._tracer = self._trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    def before_enqueue(self, job: Job, headers: dict[str, str]) -> None:
        span = self._tracer.start_span(
            f"create {job.queue_name}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes={
                **_messaging(job.queue_name, job.job_id, "create"),
                "naq.job.function": job.function,
            },
        )
        try:
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier, context=self._trace.set_span_in_context(span))
            headers.update({k: v for k, v in carrier.items() if k in TRACE_HEADERS})
        finally:
            span.end()

    def before_job(self, job: JobContext) -> None:
        parent = self._propagate.extract(
            {k: v for k, v in job.headers.items() if k.lower() in TRACE_HEADERS}
        )
        span = self._tracer.start_span(
            f"process {job.queue}",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            start_time=int(job.started_at * 1e9) if job.started_at else None,
            attributes={
                **_messaging(job.queue, job.job_id, "process"),
                "messaging.consumer.group.name": job.queue,
                "naq.job.function": job.function,
                "naq.job.attempt": job.attempt,
                "naq.worker.id": job.worker_id,
            },
        )
        job.state[_SPAN] = span
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier, context=self._trace.set_span_in_context(span))
        job.trace_context.update(carrier)

    def after_outcome(self, job: JobContext, outcome: Outcome) -> None:
        span = job.state.get(_SPAN)
        if span is None:
            return
        span.set_attribute("naq.job.outcome", outcome.status)
        failed = outcome.error_class
        if failed is not None:
            span.set_attribute("error.type", failed)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, failed))

    def after_settle(self, job: JobContext, outcome: Outcome, action: str) -> None:
        span = job.state.pop(_SPAN, None)
        if span is not None:
            span.set_attribute("naq.job.action", action)
            span.end()


def _messaging(queue: str, job_id: str, operation: str) -> dict[str, str]:
    return {
        "messaging.system": "nats",
        "messaging.destination.name": queue,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.message.id": job_id,
    }
