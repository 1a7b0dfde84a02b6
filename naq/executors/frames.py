"""Frames between the supervisor and its children: a ``Call`` in, an ``Outcome`` out.

Each frame is a 4-byte big-endian length, a line of JSON, a newline and raw bytes
(the job payload or the result). No pickle crosses the pipe, so a supervisor in
json mode unpickles nothing even with the process executor.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict
from typing import Any

from naq.executors.allow import AllowList
from naq.executors.base import Call, Outcome
from naq.wire import dumps

HEADER = struct.Struct("!I")


def pack(head: dict[str, Any], body: bytes = b"") -> bytes:
    data = dumps(head).encode() + b"\n" + body
    return HEADER.pack(len(data)) + data


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    line, _, body = data.partition(b"\n")
    head: dict[str, Any] = json.loads(line.decode())
    return head, body


def pack_call(call: Call, seq: int = 0) -> bytes:
    """One frame, written with one ``write``; the head is built field by field (no
    ``asdict``, which deep-copies every value of every call). ``seq`` numbers the calls
    sent to one child, so a call queued there can be taken back (see ``child``)."""
    head: dict[str, Any] = {
        "seq": seq,
        "job_id": call.job_id,
        "function": call.function,
        "serializer": call.serializer,
        "timeout": call.timeout,
        "is_async": call.is_async,
        "attempt": call.attempt,
        "keep_result": call.keep_result,
    }
    if call.allow is not None:
        head["allow"] = asdict(call.allow)
    if call.trace_context:
        head["trace"] = call.trace_context
    return pack(head, call.payload)


def unpack_call(head: dict[str, Any], body: bytes) -> Call:
    allow = head.pop("allow", None)
    head.pop("seq", None)
    trace = tuple((str(k), str(v)) for k, v in head.pop("trace", ()))
    return Call(
        payload=body,
        allow=None if allow is None else AllowList.from_wire(allow),
        trace_context=trace,
        **head,
    )


def pack_outcome(outcome: Outcome, rss: int, seq: int = 0) -> bytes:
    """Field by field, as :func:`pack_call`, and only the fields a run set: a job that
    returned sends its id, status and result, nothing else to encode or read."""
    head: dict[str, Any] = {"seq": seq, "job_id": outcome.job_id, "status": outcome.status}
    if rss:
        head["rss"] = rss
    if outcome.result is not None:
        head["has_result"] = True
    if outcome.error is not None:
        head["error"] = outcome.error
    if outcome.traceback is not None:
        head["traceback"] = outcome.traceback
    if outcome.retry_in is not None:
        head["retry_in"] = outcome.retry_in
    if outcome.error_types:
        head["error_types"] = outcome.error_types
    return pack(head, outcome.result or b"")


def unpack_outcome(head: dict[str, Any], body: bytes) -> tuple[Outcome, int]:
    rss = int(head.pop("rss", 0))
    head.pop("seq", None)
    has_result = head.pop("has_result", False)
    head["error_types"] = tuple(head.get("error_types", ()))
    return Outcome(result=body if has_result else None, **head), rss
