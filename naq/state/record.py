"""A job's record in the results KV: the type, its codec, and one constructor per status.

Every writer of job state (the settler, cancellation, dependencies, the dead-letter
backstop) builds its record through these constructors, so what a record carries
for each status is decided here once. The record has the job message's shape: one
line of JSON metadata, a newline, the serialized return value::

    {"naq":1,"id":…,"status":"finished","ser":…,"t":…,"attempt":1,…}\n<value>
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from naq.wire import SEP, VERSION, BadMessage, dumps, split_message

ResultStatus = Literal["finished", "failed", "cancelled", "retrying", "interrupted", "running"]
FINAL = frozenset({"finished", "failed", "cancelled"})
"""Statuses a job never leaves; ``retrying`` and ``interrupted`` wait for another run."""

_EXTRA = (
    "attempt",
    "queue",
    "enqueued_at",
    "started_at",
    "worker",
    "crashes",
    "interruptions",
    "function",
)


@dataclass(slots=True)  # not frozen: built per job, and frozen costs ~0.1 us a field
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
    function: str = ""
    """The job's ``module:qualname``, so a record can be listed and filtered by function
    after the job message is gone (the dashboard's jobs page)."""
    verified: bool | None = field(default=None, compare=False)
    """Whether the record's signature matched a signing key when it was read; None
    when the reader has no key. Not part of the record's bytes."""

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
    return dumps(head).encode() + SEP + rec.payload


def decode_result(body: bytes) -> ResultRecord:
    head, payload = split_message(body)
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


@dataclass(slots=True)  # not frozen: built per job, and frozen costs ~0.1 us a field
class RunFacts:
    """What every record of a job repeats about it: where it ran and how often.

    ``attempt`` counts runs against ``max_retries``; ``crashes`` the deliveries whose
    worker died without a word; ``interruptions`` the runs a shutdown cut short.
    """

    queue: str = ""
    enqueued_at: float = 0.0
    attempt: int = 0
    started_at: float = 0.0
    worker: str = ""
    crashes: int = 0
    interruptions: int = 0
    serializer: str = "json"
    """How the record's value is encoded: the job's serializer (json when it has none)."""
    function: str = ""


def _record(
    job_id: str,
    status: ResultStatus,
    facts: RunFacts,
    error: str | None = None,
    traceback: str | None = None,
    payload: bytes = b"",
) -> ResultRecord:
    return ResultRecord(
        job_id,
        status,
        facts.serializer,
        time.time(),
        error,
        traceback,
        payload,
        attempt=facts.attempt,
        queue=facts.queue,
        enqueued_at=facts.enqueued_at,
        started_at=facts.started_at,
        worker=facts.worker,
        crashes=facts.crashes,
        interruptions=facts.interruptions,
        function=facts.function,
    )


def finished(job_id: str, facts: RunFacts, value: bytes) -> ResultRecord:
    """The job returned: ``value`` is its result, as its serializer encoded it."""
    return _record(job_id, "finished", facts, payload=value)


def failed(job_id: str, facts: RunFacts, error: str, traceback: str | None = None) -> ResultRecord:
    """The job failed for good (its retries used up, refused, or exhausted)."""
    return _record(job_id, "failed", facts, error, traceback)


def cancelled(job_id: str, facts: RunFacts, reason: str) -> ResultRecord:
    """The job will never run (again): ``cancel_job``, or a dependency that did not finish."""
    return _record(job_id, "cancelled", facts, reason)


def retrying(job_id: str, facts: RunFacts, error: str | None) -> ResultRecord:
    """A run failed and another is due: the job's state for that run and for status."""
    return _record(job_id, "retrying", facts, error)


def interrupted(job_id: str, facts: RunFacts, reason: str | None) -> ResultRecord:
    """A run a shutdown cut short (or handed back during a drain): not the job's fault."""
    return _record(job_id, "interrupted", facts, reason)


def running(job_id: str, facts: RunFacts, note: str | None) -> ResultRecord:
    """A redelivery's start note, left when the delivery before it ended without a
    word, so the next one can count that crash."""
    return _record(job_id, "running", facts, note)
