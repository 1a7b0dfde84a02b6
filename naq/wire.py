"""The versioned wire format of jobs and results.

A job message body is one line of JSON metadata, a newline, then the serializer's
payload::

    {"naq":1,"id":"…","fn":"tasks:count_words","q":"default","ser":"pickle","t":…,"opts":{…}}\\n<payload>

Why this shape: the metadata (id, function, queue, options, enqueue time) is
readable by anything, a CLI, a dashboard, ``nats stream view``, without unpickling,
and the payload stays opaque bytes that only the executor decodes. JSON never
contains a raw newline, so the first newline always ends the metadata. A result
record in the results KV has the same shape (``naq.state.record``).
"""

from __future__ import annotations

import functools
import json
import json.encoder
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from naq.errors import ConfigurationError
from naq.job import JobOptions, validate_job_id
from naq.settings import validate_name

VERSION = 1
SEP = b"\n"


def _compact_dumps() -> Callable[[Any], str]:
    """Compact JSON (no spaces), as ``json.JSONEncoder(separators=(",", ":")).encode``
    writes it. Why not that: ``json.dumps`` with arguments builds an encoder object per
    call, and ``JSONEncoder.encode`` still builds its C scanner per call (about a
    microsecond, a fifth of encoding a result record's metadata); the C encoder is
    built here once. Where there is none, the pure-Python encoder is used."""
    plain = json.JSONEncoder(separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python without the json accelerator
        return plain.encode
    # No markers (None): no cycle check, so no state shared between callers on several
    # threads; naq's metadata is built of plain values and never refers to itself.
    encode = make(
        None,
        plain.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )
    return lambda obj: "".join(encode(obj, 0))


dumps = _compact_dumps()
"""Compact JSON of one value, with one encoder built once (:func:`_compact_dumps`)."""


class BadMessage(ValueError):
    """A message on a jobs subject that is not a job naq can read."""


@dataclass(slots=True)  # not frozen: built per job, and frozen costs ~0.1 us a field
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
    return dumps(head).encode() + SEP + payload


def split_message(body: bytes) -> tuple[dict[str, Any], bytes]:
    line, sep, payload = body.partition(SEP)
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


@functools.lru_cache(maxsize=1024)
def _valid_queue(name: str) -> str:
    """``validate_name`` for queue names, remembered: a supervisor reads a few names
    many times, and the check is a regular expression per job otherwise. A failed
    check raises and is not remembered; the cache is bounded."""
    return validate_name("queue", name)


def decode_job(body: bytes) -> tuple[JobMeta, bytes]:
    """Metadata and the still-encoded payload; raises :class:`BadMessage`."""
    head, payload = split_message(body)
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
        _valid_queue(meta.queue)
    except ConfigurationError as exc:
        raise BadMessage(str(exc)) from None
    return meta, payload
