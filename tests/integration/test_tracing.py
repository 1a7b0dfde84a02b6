"""Tracing (naq.tracing) against a real server: one trace from the producer's enqueue
to the spans a job opens, across the process boundary of the process executor."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from naq import Queue
from naq.errors import ConfigurationError
from naq.executors.base import Call
from naq.executors.calls import run_blocking
from naq.middleware import load_middleware
from naq.serializers import get_serializer
from naq.settings import Settings
from naq.tracing import Tracing
from tests import jobs, otel_jobs
from tests.conftest import StartSupervisor, until
from tests.executors.conftest import interpreters_available


@pytest.fixture
def exported() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider of the test's own (the global one is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _hex(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


async def test_one_trace_from_enqueue_to_a_span_opened_in_a_process_child(
    settings: Settings,
    start_supervisor: StartSupervisor,
    exported: tuple[TracerProvider, InMemorySpanExporter],
    tmp_path: Path,
) -> None:
    provider, exporter = exported
    sup = await start_supervisor(
        executor="process", concurrency=1, middleware=[Tracing(tracer_provider=provider)]
    )
    child_spans = tmp_path / "child-spans.jsonl"
    with provider.get_tracer("tests").start_as_current_span("request"):
        async with Queue(settings=settings, middleware=[Tracing(tracer_provider=provider)]) as q:
            job = await q.enqueue(otel_jobs.traced_work, str(child_spans), 21)
    async with Queue(settings=settings) as q:
        assert await q.fetch_result(job.job_id, timeout=30) == 42

    async def consumer_span_ended() -> bool:  # after_settle follows the stored result
        return "process default" in _by_name(exporter)

    await until(consumer_span_ended, 10, "the consumer span")
    spans = _by_name(exporter)
    request, create, process = spans["request"], spans["create default"], spans["process default"]
    trace_id = _hex(request)[0]
    assert {_hex(s)[0] for s in (create, process)} == {trace_id}
    assert create.kind is SpanKind.PRODUCER
    assert create.parent is not None
    assert f"{create.parent.span_id:016x}" == _hex(request)[1]
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == create.get_span_context().span_id  # type: ignore[union-attr]
    assert dict(process.attributes or {}) | {"naq.worker.id": ""} == {
        "messaging.system": "nats",
        "messaging.destination.name": "default",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": job.job_id,
        "messaging.consumer.group.name": "default",
        "naq.job.function": "tests.otel_jobs:traced_work",
        "naq.job.attempt": 1,
        "naq.worker.id": "",
        "naq.job.outcome": "ok",
        "naq.job.action": "finished",
    }
    assert (process.attributes or {})["naq.worker.id"] == sup.worker_id
    # The span the job opened, exported by the child process itself:
    [inside] = [json.loads(line) for line in child_spans.read_text().splitlines()]
    assert inside["name"] == "inside the job"
    assert inside["trace_id"] == trace_id
    assert inside["parent_id"] == _hex(process)[1]


IN_PROCESS = [
    ("asyncio", otel_jobs.async_current_span_ids),  # a coroutine on the loop
    ("asyncio", otel_jobs.current_span_ids),  # a function in its threads
    ("thread", otel_jobs.current_span_ids),
    *([("interpreter", otel_jobs.current_span_ids)] if interpreters_available() else []),
]


@pytest.mark.parametrize(("executor", "function"), IN_PROCESS)
async def test_a_job_runs_under_the_consumer_span_in_every_in_process_executor(
    settings: Settings,
    start_supervisor: StartSupervisor,
    exported: tuple[TracerProvider, InMemorySpanExporter],
    executor: str,
    function: Any,
) -> None:
    provider, exporter = exported
    await start_supervisor(executor=executor, middleware=[Tracing(tracer_provider=provider)])
    async with Queue(settings=settings, middleware=[Tracing(tracer_provider=provider)]) as q:
        job = await q.enqueue(function)
        seen = await q.fetch_result(job.job_id, timeout=15)

    async def consumer_span_ended() -> bool:
        return "process default" in _by_name(exporter)

    await until(consumer_span_ended, 10, "the consumer span")
    assert tuple(seen) == _hex(_by_name(exporter)["process default"])


async def test_a_failed_run_marks_its_span_with_the_class_not_the_message(
    settings: Settings,
    start_supervisor: StartSupervisor,
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    await start_supervisor(middleware=[Tracing(tracer_provider=provider)])
    async with Queue(settings=settings, middleware=[Tracing(tracer_provider=provider)]) as q:
        job = await q.enqueue(jobs.boom, "token-XYZ")
        await q.fetch_results([job.job_id], timeout=15)

    async def consumer_span_ended() -> bool:
        return "process default" in _by_name(exporter)

    await until(consumer_span_ended, 10, "the consumer span")
    span = _by_name(exporter)["process default"]
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.status.description == "tests.jobs.Boom"
    assert (span.attributes or {})["error.type"] == "tests.jobs.Boom"
    assert "token-XYZ" not in repr(dict(span.attributes or {}))


def test_without_the_extra_asking_for_tracing_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import fails: not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'naq\[otel\]'"):
        load_middleware("tracing")
    # A call that carries a trace context runs unchanged where OpenTelemetry is missing.
    call = Call(
        "j1",
        "tests.jobs:add",
        "pickle",
        get_serializer("pickle").dumps_call(jobs.add, (2, 3), {}),
        trace_context=(("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"),),
    )
    outcome = run_blocking(call)
    assert outcome.status == "ok"
