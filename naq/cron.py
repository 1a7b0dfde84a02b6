"""When a recurring schedule fires next: pure functions of a spec and a time.

Kept free of I/O so the rules (UTC unless a time zone is named, whole-second fire
times, what happens to ticks missed during downtime) are tested without a server.
Fire times are Unix timestamps in whole seconds: a run's job id is the schedule id
plus its fire time, so two fires of one schedule can never share an id.
"""

from __future__ import annotations

import datetime
import math
import zoneinfo
from dataclasses import dataclass
from typing import Literal

from croniter import croniter

from naq.errors import ConfigurationError

MissedPolicy = Literal["run_once", "skip"]
MISSED_POLICIES: tuple[str, ...] = ("run_once", "skip")
MIN_INTERVAL = 1.0
"""Fire times are whole seconds (they name the run's job), so nothing repeats faster."""


@dataclass(frozen=True, slots=True)
class Spec:
    """How a schedule recurs: exactly one of ``cron`` and ``interval`` (seconds)."""

    cron: str | None = None
    interval: float | None = None
    tz: str | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ConfigurationError("give exactly one of cron= and interval=")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ConfigurationError(f"invalid cron expression {self.cron!r}")
        if self.interval is not None and not self.interval >= MIN_INTERVAL:
            raise ConfigurationError(
                f"interval must be at least {MIN_INTERVAL:g} second, got {self.interval!r}"
            )
        if self.tz is not None:
            zone(self.tz)


def zone(name: str | None) -> datetime.tzinfo:
    if name is None:
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown time zone {name!r}") from None


def interval_seconds(value: float | datetime.timedelta | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"interval must be seconds or a timedelta, got {value!r}")
    return float(value)


def next_after(spec: Spec, after: float) -> float:
    """The first fire time strictly after ``after`` (for an interval: ``after`` + it)."""
    if spec.interval is not None:
        return float(math.ceil(after + spec.interval))
    assert spec.cron is not None
    start = datetime.datetime.fromtimestamp(math.floor(after), zone(spec.tz))
    fire: datetime.datetime = croniter(spec.cron, start).get_next(datetime.datetime)
    return fire.timestamp()


def first_fire(spec: Spec, now: float) -> float:
    return next_after(spec, now)


def following(spec: Spec, fired: float, now: float) -> float:
    """The fire after ``fired``, skipping ticks already in the past at ``now``.

    After downtime a schedule catches up with one run, not one per missed tick; an
    interval keeps its cadence (the next tick of the same grid after ``now``).
    """
    nxt = next_after(spec, fired)
    if nxt > now:
        return nxt
    if spec.interval is not None:
        steps = math.floor((now - fired) / spec.interval) + 1
        return float(math.ceil(fired + steps * spec.interval))
    return next_after(spec, now)


def due(next_run: float, now: float, policy: MissedPolicy, grace: float) -> bool:
    """Fire the tick at ``next_run`` now? Under ``skip`` a tick later than ``grace`` is dropped."""
    if next_run > now:
        return False
    return policy == "run_once" or now - next_run <= grace


def parse_when(value: str | float | datetime.datetime) -> float:
    """A Unix timestamp from a timestamp, a datetime (naive is UTC) or an ISO string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"not an ISO date and time: {value!r}") from None
    if not isinstance(value, datetime.datetime):
        raise ConfigurationError(f"not a time: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()
