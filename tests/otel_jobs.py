"""Job functions that open OpenTelemetry spans, for the tracing tests; importable by
supervisors and their process-executor children (the repository root is on the path).

The child sets up a tracer provider of its own, writing each finished span as a line
of JSON to a file the test reads: a real export from the other process, so the test
can check that the span the job opened belongs to the producer's trace."""

from __future__ import annotations

import json
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class FileExporter(SpanExporter):
    """Appends one JSON line per span: name, ids (hex) and the process that made it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as f:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                f.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": f"{context.trace_id:032x}",
                            "span_id": f"{context.span_id:016x}",
                            "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


def traced_work(path: str, n: int) -> int:
    """Open a span under whatever context naq made current, exported to ``path``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(path)))
    with provider.get_tracer("tests").start_as_current_span("inside the job"):
        result = n * 2
    provider.shutdown()
    return result


def current_span_ids() -> tuple[str, str]:
    """The trace and span id current where the job runs (naq's consumer span)."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


async def async_current_span_ids() -> tuple[str, str]:
    return current_span_ids()
