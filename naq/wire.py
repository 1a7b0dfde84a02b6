"""The versioned wire format of jobs and results.

A job message body is one line of JSON metadata, a newline, then the serializer's
payload::

    {"naq":1,"id":"…","fn":"tasks:count_words","q":"default","ser":"pickle","t":…,"opts":{…}}\\n<payload>

Why this shape: the metadata (id, function, queue, options, enqueue time) is
readable by anything, a CLI, a dashboard, ``nats stream view``, without unpickling,
and the payload stays opaque bytes that only the executor decodes. JSON never
contains a raw newline, so the first newline always ends the metadata. A result
record in the results KV has the same shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from naq.errors import ConfigurationError
from naq.job import JobOptions, validate_job_id
from naq.settings import validate_name

VERSION = 1
_SEP = b"\n"
_dumps = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps`` with arguments builds an encoder per call; this one is built once."""


class BadMessage(ValueError):
    """A message on a jobs subject that is not a job naq can read."""


@dataclass(frozen=True, slots=True)
class JobMeta:
    job_id: str
    function: str
    queue: str
    serializer: str
    enqueue_time: float
    options: JobOptions
    is_async: bool


def encode_job(meta: JobMeta, payload: bytes) -> bytes:
    head: dict[str, Any] = {
        "naq": VERSION,
        "id": meta.job_id,
        "fn": meta.function,
        "q": meta.queue,
        "ser": meta.serializer,
        "t": meta.enqueue_time,
    }
    opts = meta.options.to_wire()
    if opts:
        head["opts"] = opts
    if meta.is_async:
        head["async"] = True
    return _dumps(head).encode() + _SEP + payload


def _split(body: bytes) -> tuple[dict[str, Any], bytes]:
    line, sep, payload = body.partition(_SEP)
    if not sep:
        raise BadMessage("not a naq message: no metadata line")
    try:
        head = json.loads(line.decode())  # bytes would make json sniff the encoding first
    except ValueError:
        raise BadMessage("not a naq message: metadata is not JSON") from None
    if not isinstance(head, dict) or "naq" not in head:
        raise BadMessage("not a naq message: no format version")
    if type(head["naq"]) is not int or head["naq"] != VERSION:
        raise BadMessage(f"unsupported naq format version {head['naq']!r} (this naq reads 1)")
    return head, payload


def decode_job(body: bytes) -> tuple[JobMeta, bytes]:
    """Metadata and the still-encoded payload; raises :class:`BadMessage`."""
    head, payload = _split(body)
    try:
        meta = JobMeta(
            job_id=str(head["id"]),
            function=str(head["fn"]),
            queue=str(head["q"]),
            serializer=str(head["ser"]),
            enqueue_time=float(head["t"]),
            options=JobOptions.from_wire(head.get("opts", {})),
            is_async=bool(head.get("async", False)),
        )
    except KeyError as exc:
        raise BadMessage(f"naq job metadata lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"invalid naq job metadata: {exc}") from None
    if not meta.function:
        raise BadMessage("naq job metadata names no function")
    try:  # both become parts of subjects: a hostile producer must not pick them freely
        validate_job_id(meta.job_id)
        validate_name("queue", meta.queue)
    except ConfigurationError as exc:
        raise BadMessage(str(exc)) from None
    return meta, payload


ResultStatus = Literal["finished", "failed", "cancelled", "retrying", "interrupted", "running"]
FINAL = frozenset({"finished", "failed", "cancelled"})
"""Statuses a job never leaves; ``retrying`` and ``interrupted`` wait for another run."""

_EXTRA = ("attempt", "queue", "enqueued_at", "started_at", "worker", "crashes", "interruptions")


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """A job's record in the results KV: its outcome, or why it waits to run again.

    ``crashes`` counts deliveries whose worker died without a word, and
    ``interruptions`` the runs cut short by a shutdown: neither is the job's own
    failure, so the supervisor tells them apart from the delivery count.
    """

    job_id: str
    status: ResultStatus
    serializer: str
    finished_at: float
    error: str | None = None
    traceback: str | None = None
    payload: bytes = b""
    attempt: int = 0
    queue: str = ""
    enqueued_at: float = 0.0
    started_at: float = 0.0
    worker: str = ""
    crashes: int = 0
    interruptions: int = 0

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def ended_delivery(self) -> int | None:
        """The delivery this record closed: a retry or an interruption; None for a
        ``running`` note, written when a delivery started (it closed nothing)."""
        if self.status == "retrying":
            return self.attempt + self.interruptions
        if self.status == "interrupted":
            return self.attempt + self.interruptions - 1
        return None


def encode_result(rec: ResultRecord) -> bytes:
    head: dict[str, Any] = {
        "naq": VERSION,
        "id": rec.job_id,
        "status": rec.status,
        "ser": rec.serializer,
        "t": rec.finished_at,
    }
    if rec.error is not None:
        head["error"] = rec.error
    if rec.traceback is not None:
        head["tb"] = rec.traceback
    for name in _EXTRA:
        if value := getattr(rec, name):
            head[name] = value
    return _dumps(head).encode() + _SEP + rec.payload


def decode_result(body: bytes) -> ResultRecord:
    head, payload = _split(body)
    try:
        return ResultRecord(
            job_id=str(head["id"]),
            status=head["status"],
            serializer=str(head["ser"]),
            finished_at=float(head["t"]),
            error=head.get("error"),
            traceback=head.get("tb"),
            payload=payload,
            **{name: head[name] for name in _EXTRA if name in head},
        )
    except KeyError as exc:
        raise BadMessage(f"naq result record lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"invalid naq result record: {exc}") from None
