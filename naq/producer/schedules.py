"""Recurring jobs: ``schedule(func, cron=... | interval=...)`` and its controls.

A schedule is a record in ``{ns}_schedules``; the ``naq scheduler`` role fires it.
Every control is a compare-and-set on the record (see ``naq.scheduler.store``), so
a pause racing a fire is applied to the record the fire wrote, never lost.
``*_sync`` twins run on naq's sync loop thread.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

from nats.js.kv import KeyValue

from naq.cron import MISSED_POLICIES, MissedPolicy, Spec, first_fire, interval_seconds, parse_when
from naq.errors import ConfigurationError
from naq.job import new_job_id, take_options, validate_job_id
from naq.producer.api import connected, shared_queue
from naq.settings import validate_name
from naq.signing import SCHEDULE
from naq.state import schedules as store
from naq.state.schedules import ACTIVE, DONE, PAUSED, STATUSES, Schedule
from naq.transport.pool import run_sync
from naq.wire import decode_job

MAX_SCHEDULE_ID = 100
"""A run's job id is ``{schedule_id}-{fire time}``, and job ids stop at 128 characters."""

Interval = float | datetime.timedelta


async def schedule(
    func: Callable[..., Any],
    *args: Any,
    cron: str | None = None,
    interval: Interval | None = None,
    repeat: int | None = None,
    queue_name: str | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
    tz: str | None = None,
    schedule_id: str | None = None,
    missed: MissedPolicy = "run_once",
    **kwargs: Any,
) -> str:
    """Run ``func(*args, **kwargs)`` on a cron expression or every ``interval``.

    ``repeat=N`` runs it N times in all (``None``: for ever). ``missed`` says what
    happens to ticks missed while no scheduler ran: ``run_once`` (one catch-up run)
    or ``skip``. Job options (``max_retries``, ``timeout``, ...) are taken out of
    ``kwargs`` and apply to every run. Returns the schedule id.
    """
    spec = Spec(cron, interval_seconds(interval), tz)
    if repeat is not None and (isinstance(repeat, bool) or repeat < 1):
        raise ConfigurationError(f"repeat must be a positive number of runs, got {repeat!r}")
    if missed not in MISSED_POLICIES:
        raise ConfigurationError(f"missed must be one of {', '.join(MISSED_POLICIES)}")
    if schedule_id is None:
        schedule_id = new_job_id()
    elif len(validate_job_id(schedule_id)) > MAX_SCHEDULE_ID:
        raise ConfigurationError(f"schedule_id is longer than {MAX_SCHEDULE_ID} characters")
    options = take_options(kwargs)
    if "depends_on" in options or "job_id" in options:
        raise ConfigurationError("a recurring job takes neither depends_on nor job_id")
    queue = shared_queue(queue_name, nats_url, namespace)
    job, message = queue.prepare(func, args, kwargs, **options)
    signer = queue.settings.signer
    now = time.time()
    record = Schedule(
        schedule_id=schedule_id,
        queue=queue.name,
        function=job.function,
        job=message.payload,
        cron=spec.cron,
        interval=spec.interval,
        tz=spec.tz,
        repeat=repeat,
        next_run=first_fire(spec, now),
        missed=missed,
        created_at=now,
        signature=None if signer is None else signer.sign(SCHEDULE, message.payload),
    )
    client = await queue.connection()
    await store.create(await store.bucket(client, queue.layout), record)
    return schedule_id


async def _kv(nats_url: str | None, namespace: str | None) -> KeyValue:
    return await store.bucket(*await connected(nats_url, namespace))


async def cancel_recurring(
    schedule_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    """Delete the schedule; runs already published still run. False if unknown."""
    validate_job_id(schedule_id)  # bad ids fail here, before anything connects
    return await store.remove(*await connected(nats_url, namespace), schedule_id)


async def _set_status(
    schedule_id: str, status: str, nats_url: str | None, namespace: str | None
) -> bool:
    validate_job_id(schedule_id)

    def mutate(current: Schedule) -> Schedule | None:
        if current.status == DONE or current.status == status:
            return None
        changes: dict[str, Any] = {"status": status}
        if status == ACTIVE and current.next_run < time.time():
            changes["next_run"] = first_fire(current.spec, time.time())  # no catch-up burst
        return current.replace(**changes)

    return await store.change(await _kv(nats_url, namespace), schedule_id, mutate) is not None


async def pause_scheduled_job(
    schedule_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    """Stop firing until resumed; False if it was paused or done already."""
    return await _set_status(schedule_id, PAUSED, nats_url, namespace)


async def resume_scheduled_job(
    schedule_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    """Fire again from the next tick after now; False if it was not paused."""
    return await _set_status(schedule_id, ACTIVE, nats_url, namespace)


async def modify_scheduled_job(
    schedule_id: str,
    *,
    cron: str | None = None,
    interval: Interval | None = None,
    repeat: int | None = None,
    next_run: str | float | datetime.datetime | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> Schedule:
    """Change how the schedule recurs; the next fire is recomputed unless ``next_run``."""
    validate_job_id(schedule_id)
    seconds = interval_seconds(interval)
    if cron is not None and seconds is not None:
        raise ConfigurationError("give at most one of cron= and interval=")
    if repeat is not None and (isinstance(repeat, bool) or repeat < 1):
        raise ConfigurationError(f"repeat must be a positive number of runs, got {repeat!r}")
    when = None if next_run is None else parse_when(next_run)
    if cron is not None:
        Spec(cron=cron)
    if seconds is not None:
        Spec(interval=seconds)

    def mutate(current: Schedule) -> Schedule:
        changes: dict[str, Any] = {}
        if cron is not None:
            changes.update(cron=cron, interval=None)
        if seconds is not None:
            changes.update(interval=seconds, cron=None)
        if repeat is not None:
            changes["repeat"] = repeat
            if current.status == DONE:
                changes["status"] = ACTIVE
        new = current.replace(**changes)
        if when is not None:
            new = new.replace(next_run=float(int(when)))
        elif cron is not None or seconds is not None:
            new = new.replace(next_run=first_fire(new.spec, time.time()))
        return new

    written = await store.change(await _kv(nats_url, namespace), schedule_id, mutate)
    if written is None:
        record, _ = await store.read(await _kv(nats_url, namespace), schedule_id)
        return record
    return written[0]


async def list_schedules(
    status: str | None = None,
    queue_name: str | None = None,
    schedule_id: str | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> list[Schedule]:
    """Schedules, filtered by status, queue and id, soonest next run first."""
    if status is not None and status not in STATUSES:
        raise ConfigurationError(f"status must be one of {', '.join(STATUSES)}")
    if schedule_id is not None:
        validate_job_id(schedule_id)
    if queue_name is not None:
        validate_name("queue", queue_name)
    found = await store.read_all(*await connected(nats_url, namespace))
    return sorted(
        (
            s
            for s in found
            if (status is None or s.status == status)
            and (queue_name is None or s.queue == queue_name)
            and (schedule_id is None or s.schedule_id == schedule_id)
        ),
        key=lambda s: s.next_run,
    )


def job_of(record: Schedule) -> dict[str, Any]:
    """What each run of the schedule calls, read from its job metadata."""
    meta, _ = decode_job(record.job)
    return {"function": meta.function, "serializer": meta.serializer, "options": meta.options}


def schedule_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    return run_sync(schedule(func, *args, **kwargs))


def cancel_recurring_sync(
    schedule_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    return run_sync(cancel_recurring(schedule_id, nats_url, namespace))


def pause_scheduled_job_sync(
    schedule_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    return run_sync(pause_scheduled_job(schedule_id, nats_url, namespace))


def resume_scheduled_job_sync(
    schedule_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    return run_sync(resume_scheduled_job(schedule_id, nats_url, namespace))


def modify_scheduled_job_sync(schedule_id: str, **changes: Any) -> Schedule:
    return run_sync(modify_scheduled_job(schedule_id, **changes))


def list_schedules_sync(**filters: Any) -> list[Schedule]:
    return run_sync(list_schedules(**filters))


async def cancel_scheduled_job(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    """Cancel a delayed job (enqueue_at / enqueue_in) before it fires, or a recurring
    schedule (``schedule``): the seed's one name for both. False if neither exists."""
    validate_job_id(job_id)  # ">" would otherwise cancel every delayed job and schedule
    if await shared_queue(None, nats_url, namespace).cancel_scheduled(job_id):
        return True
    return await cancel_recurring(job_id, nats_url, namespace)


def cancel_scheduled_job_sync(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    return run_sync(cancel_scheduled_job(job_id, nats_url, namespace))
