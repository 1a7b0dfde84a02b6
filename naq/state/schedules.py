"""Schedules in the ``{ns}_schedules`` KV: one key per schedule id, a JSON value.

Every change is a compare-and-set on the key's revision (:func:`change`), so a pause
or a modification racing the scheduler's own update after a fire is re-applied to
the fresh record instead of being overwritten: neither side's change is lost.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from naq.cron import MISSED_POLICIES, MissedPolicy, Spec, following
from naq.errors import ConfigurationError, JobNotFound, NaqError
from naq.job import validate_job_id
from naq.transport.connect import Client
from naq.transport.kv import cas, current_values, get_entry, purge_key, write
from naq.transport.names import Layout

log = logging.getLogger(__name__)

ACTIVE = "active"
PAUSED = "paused"
DONE = "done"
FAILED = "failed"
"""A schedule the scheduler cannot fire (its job cannot be read): kept, with the reason
in ``error``, so that it is seen (``naq list-scheduled``) rather than retried for ever."""
STATUSES = (ACTIVE, PAUSED, DONE, FAILED)


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "schedule_id": (str,),
    "queue": (str,),
    "function": (str,),
    "job": (str,),
    "cron": (str, type(None)),
    "interval": (*_NUMBER, type(None)),
    "tz": (str, type(None)),
    "repeat": (int, type(None)),
    "next_run": _NUMBER,
    "status": (str,),
    "missed": (str,),
    "last_run": (*_NUMBER, type(None)),
    "runs": (int,),
    "created_at": _NUMBER,
    "signature": (str, type(None)),
    "error": (str, type(None)),
}
"""A stored schedule's fields and the JSON types each may have (``job`` is base64)."""
_REQUIRED = (
    "schedule_id",
    "queue",
    "function",
    "job",
    "cron",
    "interval",
    "tz",
    "repeat",
    "next_run",
)


class ScheduleNotFound(JobNotFound):
    """No schedule has this id (never made, cancelled, or in another namespace)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """One recurring job: its encoded job message, how it recurs, and where it is."""

    schedule_id: str
    queue: str
    function: str
    job: bytes
    """The job message as ``Queue.prepare`` encoded it; each run gets a new id."""
    cron: str | None
    interval: float | None
    tz: str | None
    repeat: int | None
    """Runs left; ``None`` runs for ever."""
    next_run: float
    status: str = ACTIVE
    missed: MissedPolicy = "run_once"
    last_run: float | None = None
    runs: int = 0
    created_at: float = 0.0
    signature: str | None = None
    """The producer's signature of ``job`` (purpose ``naq.signing.SCHEDULE``), when it
    had a signing key: a scheduler with the key fires only templates that carry one,
    so writing the schedules KV is not a way to have the scheduler sign a job."""
    error: str | None = None
    """Why the schedule is ``failed``."""

    @property
    def spec(self) -> Spec:
        return Spec(self.cron, self.interval, self.tz)

    @property
    def paused(self) -> bool:
        return self.status == PAUSED

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data["job"] = base64.b64encode(self.job).decode()
        data["paused"] = self.paused
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Schedule:
        """The schedule in ``raw``; ValueError, naming the first fault, for anything that
        is not a record naq wrote: the KV is writable by others, and a field of the wrong
        type would otherwise surface later, in the middle of the scheduler's fire loop."""
        try:
            data = json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError included
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        fields: dict[str, Any] = {}
        for name, kinds in _FIELD_TYPES.items():
            if name not in data:
                if name in _REQUIRED:
                    raise ValueError(f"no {name!r}")
                continue
            value = data[name]
            if not isinstance(value, kinds) or isinstance(value, bool) is not (bool in kinds):
                raise ValueError(f"{name!r} is a {type(value).__name__}")
            fields[name] = value
        if fields.get("status", ACTIVE) not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        if fields.get("missed", "run_once") not in MISSED_POLICIES:
            raise ValueError(f"unknown missed policy {fields['missed']!r}")
        if not math.isfinite(fields["next_run"]):
            raise ValueError(f"'next_run' is {fields['next_run']}")
        try:
            fields["job"] = base64.b64decode(fields["job"], validate=True)
        except ValueError as exc:
            raise ValueError(f"'job' is not base64: {exc}") from None
        schedule = cls(**fields)
        try:
            schedule.spec  # noqa: B018 (checks cron, interval and time zone)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return schedule

    def replace(self, **changes: Any) -> Schedule:
        return dataclasses.replace(self, **changes)

    def after_fire(self, fired: float, now: float) -> Schedule:
        """The record once the run at ``fired`` is published; idempotent per fire time.

        Applied to whatever the record is by then, so a pause or a new ``next_run``
        written meanwhile stays as it was written.
        """
        if self.last_run is not None and self.last_run >= fired:
            return self
        repeat = None if self.repeat is None else max(0, self.repeat - 1)
        next_run = self.next_run
        if next_run <= fired:
            next_run = following(self.spec, fired, now)
        status = DONE if repeat == 0 else self.status
        return self.replace(
            last_run=fired, runs=self.runs + 1, repeat=repeat, next_run=next_run, status=status
        )


async def bucket(client: Client, layout: Layout) -> KeyValue:
    return await client.kv(layout.schedules_bucket)


async def create(kv: KeyValue, schedule: Schedule) -> int:
    try:
        return await write(kv, schedule.schedule_id, schedule.to_json())
    except KeyWrongLastSequenceError:
        raise NaqError(f"a schedule with id {schedule.schedule_id!r} exists already") from None


async def read(kv: KeyValue, schedule_id: str) -> tuple[Schedule, int]:
    """The schedule and its revision. The id is the key, and nats-py's key check is off
    (ids such as ``user:42``), so it is checked here: ``>`` is every key."""
    value, revision = await get_entry(kv, validate_job_id(schedule_id))
    if value is None or revision is None:
        raise ScheduleNotFound(f"no schedule {schedule_id!r}")
    return Schedule.from_json(value), revision


async def change(
    kv: KeyValue, schedule_id: str, mutate: Callable[[Schedule], Schedule | None]
) -> tuple[Schedule, int] | None:
    """Read, apply ``mutate``, write back if the revision is unchanged; else again.

    ``mutate`` returning ``None`` (or the same record) writes nothing. Returns the
    record as written and its revision, or ``None`` when nothing was written.
    """

    def change(raw: bytes | None) -> tuple[bytes | None, Schedule | None]:
        if raw is None:
            raise ScheduleNotFound(f"no schedule {schedule_id!r}")
        current = Schedule.from_json(raw)
        new = mutate(current)
        if new is None or new == current:
            return raw, None  # unchanged: nothing written
        return new.to_json(), new

    new, revision = await cas(kv, validate_job_id(schedule_id), change)
    if new is None or revision is None:
        return None
    return new, revision


async def remove(client: Client, layout: Layout, schedule_id: str) -> bool:
    """Delete the schedule; False if there is none (its marker expires: ``purge_key``)."""
    try:
        await read(await bucket(client, layout), schedule_id)
    except ScheduleNotFound:
        return False
    await purge_key(client, layout.schedules_bucket, schedule_id)
    return True


async def read_all(client: Client, layout: Layout) -> list[Schedule]:
    """Every schedule of the namespace; a record naq cannot read (not one it wrote) is
    left out with a log line rather than failing the whole listing."""
    found = []
    for value in await current_values(client, layout.schedules_bucket):
        try:
            found.append(Schedule.from_json(value))
        except ValueError as exc:
            log.warning("an unreadable schedule record is left out: %s", exc)
    return found
