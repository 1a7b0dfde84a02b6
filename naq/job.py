"""Job data and options: pure values, no I/O.

Options are validated when a job is enqueued, so a bad ``retry_delay`` fails in the
producer with a clear message instead of in a worker hours later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from naq.errors import ConfigurationError

KEEP_FOREVER = -1
"""``result_ttl=-1``: the result is kept until deleted."""

OPTION_NAMES = frozenset({"max_retries", "retry_delay", "timeout", "result_ttl", "job_id"})
"""Keyword arguments of ``enqueue`` that are job options, never passed to the function."""


def new_job_id() -> str:
    """32 random hex digits, like ``uuid4().hex`` at a fifth of the cost."""
    return os.urandom(16).hex()


def validate_job_id(job_id: str) -> str:
    """Job ids become KV keys and message ids: no spaces, wildcards or dots."""
    if (
        not isinstance(job_id, str)
        or not job_id
        or len(job_id) > 128
        or any(c in job_id for c in " \t\r\n.*>")
    ):
        raise ConfigurationError(
            f"invalid job_id {job_id!r}: 1-128 characters, no spaces, dots, '*' or '>'"
        )
    return job_id


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How a job is run. ``None`` for ``result_ttl`` means the configured default."""

    max_retries: int = 0
    retry_delay: float | tuple[float, ...] = 0.0
    timeout: float | None = None
    result_ttl: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigurationError(f"max_retries must be an int, got {self.max_retries!r}")
        if self.max_retries < 0:
            raise ConfigurationError(f"max_retries must not be negative, got {self.max_retries}")
        delays = self.retry_delay if isinstance(self.retry_delay, tuple) else (self.retry_delay,)
        if not delays or any(
            isinstance(d, bool) or not isinstance(d, int | float) or d < 0 for d in delays
        ):
            raise ConfigurationError(
                "retry_delay must be seconds >= 0 or a non-empty list of them, "
                f"got {self.retry_delay!r}"
            )
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or self.timeout <= 0
        ):
            raise ConfigurationError(f"timeout must be positive seconds, got {self.timeout!r}")
        ttl = self.result_ttl
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int) or (ttl < 0 and ttl != KEEP_FOREVER)
        ):
            raise ConfigurationError(
                f"result_ttl must be whole seconds, 0 (keep no result) or -1 (keep), got {ttl!r}"
            )

    @classmethod
    def build(
        cls,
        *,
        max_retries: int = 0,
        retry_delay: float | Sequence[float] = 0.0,
        timeout: float | None = None,
        result_ttl: int | None = None,
    ) -> JobOptions:
        if (max_retries, retry_delay, timeout, result_ttl) == (0, 0.0, None, None):
            return DEFAULT_OPTIONS  # the common case skips validation: it is known valid
        delay: float | tuple[float, ...] = (
            tuple(retry_delay) if isinstance(retry_delay, Sequence) else retry_delay
        )
        return cls(max_retries, delay, timeout, result_ttl)

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if isinstance(self.retry_delay, tuple):
            return float(self.retry_delay[min(attempt, len(self.retry_delay)) - 1])
        return float(self.retry_delay)

    def to_wire(self) -> dict[str, Any]:
        """Only non-default options travel, keeping messages small."""
        out: dict[str, Any] = {}
        if self.max_retries:
            out["max_retries"] = self.max_retries
        if self.retry_delay:
            rd = self.retry_delay
            out["retry_delay"] = list(rd) if isinstance(rd, tuple) else rd
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.result_ttl is not None:
            out["result_ttl"] = self.result_ttl
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobOptions:
        return cls.build(**data) if data else DEFAULT_OPTIONS


DEFAULT_OPTIONS = JobOptions()


@dataclass(frozen=True, slots=True)
class Job:
    """A job as enqueued: what the producer gets back from ``enqueue``."""

    job_id: str
    function: str
    queue_name: str
    options: JobOptions = field(default_factory=JobOptions)
    enqueue_time: float = 0.0
    namespace: str = "naq"

    def __repr__(self) -> str:
        return f"<Job {self.job_id} {self.function} on {self.namespace}.{self.queue_name}>"
