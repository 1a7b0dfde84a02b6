"""Turning a :class:`Call` into an :class:`Outcome`: shared by every executor.

Decoding happens here, where the job runs, never in the supervisor: for the process
and interpreter executors the parent only ever holds the payload's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import traceback
from collections.abc import Iterator
from typing import Any

from naq.errors import Retry, SerializationError
from naq.executors.base import Call, Outcome
from naq.serializers import JSON, FuncArgs, get_serializer


class Rejected(Exception):
    """The call cannot run at all; the message says why."""


def load(call: Call) -> FuncArgs:
    """The function and arguments of ``call``; :class:`Rejected` if it cannot run.

    With an allow-list (a json-mode supervisor) the function is resolved through it,
    and a payload in any other encoding is refused before a byte of it is decoded.
    """
    try:
        if call.allow is None:
            return get_serializer(call.serializer).loads_call(call.function, call.payload)
        if call.serializer != JSON.name:
            raise Rejected(
                f"job {call.job_id} is serialized with {call.serializer!r}; this worker "
                "runs json jobs only and never unpickles"
            )
        func = call.allow.resolve(call.function)
        return (func, *JSON.loads_args(call.function, call.payload))
    except Rejected:
        raise
    except (SerializationError, LookupError) as exc:
        raise Rejected(str(exc)) from exc
    except Exception as exc:  # unpickling runs arbitrary code: anything can come out
        raise Rejected(
            f"cannot decode the call to {call.function}: {type(exc).__name__}: {exc}"
        ) from exc


def succeeded(call: Call, value: Any) -> Outcome:
    if not call.keep_result:
        return Outcome(call.job_id, "ok")
    try:
        data = get_serializer(call.serializer).dumps_result(value)
    except SerializationError as exc:
        return Outcome(call.job_id, "error", error=f"SerializationError: {exc}")
    return Outcome(call.job_id, "ok", result=data)


def raised(call: Call, exc: BaseException) -> Outcome:
    if isinstance(exc, Retry):
        return Outcome(call.job_id, "retry", error=f"Retry: {exc}", retry_in=exc.delay)
    return Outcome(
        call.job_id,
        "error",
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
        error_types=tuple(
            f"{cls.__module__}.{cls.__qualname__}"
            for cls in type(exc).__mro__
            if cls not in (BaseException, object)
        ),
    )


def rejected(call: Call, exc: Rejected) -> Outcome:
    return Outcome(call.job_id, "rejected", error=str(exc))


def timed_out(call: Call) -> Outcome:
    return Outcome(call.job_id, "timeout", error=f"TimeoutError: job exceeded {call.timeout}s")


def cancelled(call: Call, why: str = "cancelled") -> Outcome:
    return Outcome(call.job_id, "cancelled", error=why)


_UNTRACED = contextlib.nullcontext()


def attached(carrier: tuple[tuple[str, str], ...]) -> contextlib.AbstractContextManager[None]:
    """Run the block under the trace context ``carrier`` holds (W3C headers), so spans
    opened inside are its children. Nothing happens with an empty carrier (a shared
    no-op, as most jobs are untraced) or without OpenTelemetry installed (a child
    without the extra runs its job untraced)."""
    return _attached(carrier) if carrier else _UNTRACED


@contextlib.contextmanager
def _attached(carrier: tuple[tuple[str, str], ...]) -> Iterator[None]:
    try:
        from opentelemetry import context, propagate
    except ImportError:
        yield
        return
    token = context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        context.detach(token)


_local = threading.local()


def _thread_runner() -> asyncio.Runner:
    """A per-thread event loop, for coroutine jobs run outside the supervisor's loop."""
    runner: asyncio.Runner | None = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
    return runner


def run_blocking(call: Call) -> Outcome:
    """Decode, run and encode in the calling thread (a pool thread or a child process),
    under the call's trace context."""
    try:
        func, args, kwargs = load(call)
    except Rejected as exc:
        return rejected(call, exc)
    try:
        with attached(call.trace_context):
            value = func(*args, **kwargs)
            if asyncio.iscoroutine(value):
                value = _thread_runner().run(value)
    except (Exception, SystemExit) as exc:  # sys.exit() in a job fails the job, not the worker
        return raised(call, exc)
    return succeeded(call, value)
