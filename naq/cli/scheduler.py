"""``naq scheduler``, ``naq list-scheduled`` and ``naq job-control``.

The scheduler role's commands, beside each other.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

import click

from naq.cli.common import (
    configure_logging,
    run_command,
    run_role,
    settings_from,
    settings_options,
)
from naq.errors import EXIT_CONFIG, EXIT_CONNECTION, ConfigurationError, NaqError
from naq.middleware import load_middleware
from naq.producer.schedules import (
    cancel_recurring,
    job_of,
    list_schedules,
    modify_scheduled_job,
    pause_scheduled_job,
    resume_scheduled_job,
)
from naq.scheduler import Scheduler
from naq.state.schedules import STATUSES, Schedule


@click.command(name="scheduler")
@settings_options(
    "nats_url",
    "namespace",
    "log_level",
    "scheduler_lock_ttl",
    "scheduler_lock_renew_interval",
    "replicas",
    "duplicate_window",
    "middleware",
    "heartbeat_interval",
    "worker_id_file",
    "metrics_port",
    "metrics_host",
)
def scheduler_cmd(**params: Any) -> None:
    """Run the scheduler role: fire recurring jobs while this process is the leader."""
    settings = settings_from(params)
    configure_logging(settings)
    try:
        middleware = load_middleware(settings.middleware_names)
    except NaqError as exc:
        click.echo(f"naq scheduler: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        code = run_role(lambda: Scheduler(settings, middleware=middleware))
    except ConfigurationError as exc:  # found on start (a metrics port taken, say)
        click.echo(f"naq scheduler: {settings.redact(str(exc))}", err=True)
        code = EXIT_CONFIG
    except NaqError as exc:
        click.echo(f"naq scheduler: {settings.redact(str(exc))}", err=True)
        code = EXIT_CONNECTION
    sys.exit(code)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def _line(s: Schedule) -> str:
    every = f"cron {s.cron!r}" if s.cron else f"every {s.interval:g}s"
    left = "" if s.repeat is None else f" ({s.repeat} left)"
    nxt = _when(s.next_run)
    return f"{s.schedule_id}  {s.status:<6}  {s.queue}  {s.function}  {every}{left}  next {nxt}"


@click.command(name="list-scheduled")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--queue", "-q", default=None, help="only this queue's schedules")
@click.option("--id", "schedule_id", default=None, help="only this schedule")
@click.option("--detailed", is_flag=True, help="every field of each schedule")
@settings_options("nats_url", "namespace")
def list_scheduled(
    status: str | None, queue: str | None, schedule_id: str | None, detailed: bool, **params: Any
) -> None:
    """List recurring jobs, soonest next run first."""
    settings = settings_from(params)

    async def work() -> None:
        found = await list_schedules(
            status, queue, schedule_id, settings.nats_url, settings.namespace
        )
        if not found:
            click.echo("no schedules")
        for s in found:
            click.echo(_line(s))
            if detailed:
                job = job_of(s)
                click.echo(f"    tz: {s.tz or 'UTC'}  missed: {s.missed}  runs: {s.runs}")
                click.echo(f"    last run: {_when(s.last_run)}  created: {_when(s.created_at)}")
                click.echo(f"    serializer: {job['serializer']}  options: {job['options']}")

    run_command(work())


@click.command(name="job-control")
@click.argument("schedule_id", metavar="ID")
@click.argument("action", type=click.Choice(["cancel", "pause", "resume", "reschedule"]))
@click.option("--cron", default=None)
@click.option("--interval", type=float, default=None, help="seconds")
@click.option("--repeat", type=int, default=None)
@click.option("--next-run", default=None, help="ISO date and time (naive is UTC)")
@settings_options("nats_url", "namespace")
def job_control(
    schedule_id: str,
    action: str,
    cron: str | None,
    interval: float | None,
    repeat: int | None,
    next_run: str | None,
    **params: Any,
) -> None:
    """Cancel, pause, resume or reschedule the recurring job ID."""
    settings = settings_from(params)
    target = {"nats_url": settings.nats_url, "namespace": settings.namespace}

    async def work() -> None:
        if action == "cancel":
            ok = await cancel_recurring(schedule_id, **target)
        elif action == "pause":
            ok = await pause_scheduled_job(schedule_id, **target)
        elif action == "resume":
            ok = await resume_scheduled_job(schedule_id, **target)
        else:
            s = await modify_scheduled_job(
                schedule_id,
                cron=cron,
                interval=interval,
                repeat=repeat,
                next_run=next_run,
                **target,
            )
            click.echo(_line(s))
            return
        if not ok:
            raise click.ClickException(f"schedule {schedule_id} was not changed ({action})")
        click.echo(f"{action}: {schedule_id}")

    run_command(work())
