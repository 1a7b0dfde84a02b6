"""Job data and options: pure values, no I/O.

Options are validated when a job is enqueued, so a bad ``retry_delay`` fails in the
producer with a clear message instead of in a worker hours later.
"""

from __future__ import annotations

import functools
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from naq.errors import ConfigurationError

KEEP_FOREVER = -1
"""``result_ttl=-1``: the result is kept until deleted."""


def capped_ttl(ttl: int, cap: int) -> int:
    """``ttl`` (seconds, or ``KEEP_FOREVER``) within a supervisor's ``cap`` (0: none).

    The TTL comes off the wire, set by whoever enqueued the job; a supervisor that
    bounds how long records live must not be talked out of it by ``result_ttl=-1``.
    """
    if cap and (ttl == KEEP_FOREVER or ttl > cap):
        return cap
    return ttl


OPTION_NAMES = frozenset(
    {
        "max_retries",
        "retry_delay",
        "retry_strategy",
        "retry_max_delay",
        "retry_jitter",
        "retry_on",
        "ignore_on",
        "timeout",
        "result_ttl",
        "job_id",
        "depends_on",
    }
)
"""Keyword arguments of ``enqueue`` that are job options, never passed to the function."""


def take_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Move the job options out of ``kwargs`` (what is left goes to the function)."""
    return {name: kwargs.pop(name) for name in OPTION_NAMES & kwargs.keys()}


_JOB_ID = re.compile(r"[^\s.*>]{1,128}\Z")


def new_job_id() -> str:
    """32 random hex digits, like ``uuid4().hex`` at a fifth of the cost."""
    return os.urandom(16).hex()


def validate_job_id(job_id: str) -> str:
    """Job ids become subject tokens, KV keys and message ids: no spaces, wildcards
    or dots. Anything else a subject takes is allowed (``user:42``), which is more
    than nats-py's KV key check lets through, so naq's KV calls turn that check off
    (``validate_keys=False``)."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ConfigurationError(
            f"invalid job_id {job_id!r}: 1-128 characters, no spaces, dots, '*' or '>'"
        )
    return job_id


RetryStrategy = Literal["linear", "exponential"]


def exception_name(exc: type[BaseException] | str) -> str:
    """``module.Qualname`` of an exception class, from the class or from its import path.

    Names, not classes, travel with the job, so a supervisor decides on retry_on and
    ignore_on without importing anything (and in json mode without unpickling).
    """
    if isinstance(exc, type) and issubclass(exc, BaseException):
        return f"{exc.__module__}.{exc.__qualname__}"
    if isinstance(exc, str) and exc.strip():
        name = exc.strip().replace(":", ".")
        return name if "." in name else f"builtins.{name}"
    raise ConfigurationError(
        f"retry_on/ignore_on take exception classes or import paths, got {exc!r}"
    )


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple | set | frozenset) else (value,)
    return tuple(exception_name(e) for e in items)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How a job is run. ``None`` for ``result_ttl`` means the configured default."""

    max_retries: int = 0
    retry_delay: float | tuple[float, ...] = 0.0
    timeout: float | None = None
    result_ttl: int | None = None
    retry_strategy: RetryStrategy = "linear"
    retry_max_delay: float | None = None
    retry_jitter: bool = False
    retry_on: tuple[str, ...] = ()
    ignore_on: tuple[str, ...] = ()
    _wire: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    """``to_wire()``, computed once: a batch's jobs share one options object."""

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
        if self.retry_strategy not in ("linear", "exponential"):
            raise ConfigurationError(
                f"retry_strategy must be 'linear' or 'exponential', got {self.retry_strategy!r}"
            )
        cap = self.retry_max_delay
        if cap is not None and (not isinstance(cap, int | float) or not cap > 0):
            raise ConfigurationError(f"retry_max_delay must be positive seconds, got {cap!r}")

    @classmethod
    def build(
        cls,
        *,
        max_retries: int = 0,
        retry_delay: float | Sequence[float] = 0.0,
        timeout: float | None = None,
        result_ttl: int | None = None,
        retry_strategy: RetryStrategy = "linear",
        retry_max_delay: float | None = None,
        retry_jitter: bool = False,
        retry_on: Any = None,
        ignore_on: Any = None,
    ) -> JobOptions:
        if (
            (max_retries, retry_delay, timeout, result_ttl, retry_strategy)
            == (0, 0.0, None, None, "linear")
            and retry_max_delay is None
            and not retry_jitter
            and not retry_on
            and not ignore_on
        ):
            return DEFAULT_OPTIONS  # the common case skips validation: it is known valid
        delay: float | tuple[float, ...] = (
            tuple(retry_delay) if isinstance(retry_delay, Sequence) else retry_delay
        )
        return cls(
            max_retries,
            delay,
            timeout,
            result_ttl,
            retry_strategy,
            retry_max_delay,
            bool(retry_jitter),
            _names(retry_on),
            _names(ignore_on),
        )

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

        A list is used in turn, its last value repeated; otherwise ``linear`` waits
        ``retry_delay`` each time and ``exponential`` doubles it per attempt. The cap
        applies to both, and jitter then picks a point in the upper half, so retries
        of many jobs that failed together spread out.
        """
        if isinstance(self.retry_delay, tuple):
            delay = float(self.retry_delay[min(attempt, len(self.retry_delay)) - 1])
        elif self.retry_strategy == "exponential":
            delay = float(self.retry_delay) * 2 ** (attempt - 1)
        else:
            delay = float(self.retry_delay)
        if self.retry_max_delay is not None:
            delay = min(delay, self.retry_max_delay)
        if self.retry_jitter:
            delay = random.uniform(delay / 2, delay)
        return delay

    def result_ttl_or(self, default: int) -> int:
        """Seconds the result is kept (0: not at all, -1: for ever)."""
        return default if self.result_ttl is None else self.result_ttl

    def record_ttl_or(self, default: int) -> int:
        """Seconds a record that is not a result (retrying, failed) is kept: as long as a
        result would be, and ``default`` where results are not kept at all."""
        return self.result_ttl or default

    def should_retry(self, error_types: Sequence[str]) -> bool:
        """Whether an exception (named by its class and bases) may be retried.

        ``ignore_on`` wins over ``retry_on``; an empty ``retry_on`` allows everything.
        Timeouts and crashes carry no exception and are always retried (within
        ``max_retries``).
        """
        if not error_types:
            return True
        if any(name in error_types for name in self.ignore_on):
            return False
        return not self.retry_on or any(name in error_types for name in self.retry_on)

    def to_wire(self) -> dict[str, Any]:
        """Only non-default options travel, keeping messages small."""
        if self._wire is None:
            out: dict[str, Any] = {}
            for f in fields(self):
                value = getattr(self, f.name)
                if f.name != "_wire" and value != f.default:
                    out[f.name] = list(value) if isinstance(value, tuple) else value
            object.__setattr__(self, "_wire", out)  # frozen: a cache, not a change
        assert self._wire is not None
        return self._wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobOptions:
        """Options as a worker reads them, cached: the jobs of a batch carry the same."""
        if not isinstance(data, dict):
            raise TypeError(f"job options must be an object, got {type(data).__name__}")
        if not data:
            return DEFAULT_OPTIONS
        key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in data.items())
        try:
            return _from_wire_cached(key)
        except TypeError:  # an unhashable value: validate it the long way
            return cls.build(**data)


DEFAULT_OPTIONS = JobOptions()


@functools.lru_cache(maxsize=1024)
def _from_wire_cached(key: tuple[tuple[str, Any], ...]) -> JobOptions:
    options: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in key}
    return JobOptions.build(**options)


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
