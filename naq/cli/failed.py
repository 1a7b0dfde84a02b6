"""``naq failed list|show|requeue|purge``: the failed-job registry from the command line."""

from __future__ import annotations

import datetime
import time
from typing import Any

import click

from naq.cli.common import CONTEXT, run_command, settings_from, settings_options
from naq.errors import JobNotFound
from naq.producer.failed import FailedJob, get_failed, list_failed, purge_failed, requeue_failed
from naq.settings import Settings


@click.group(context_settings=CONTEXT)
def failed() -> None:
    """Jobs that failed for good: list, show, requeue or purge them.

    Unreadable entries (messages that were never a job) have no id; they are
    shown as #SEQ, their number in the failed stream.
    """


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _line(job: FailedJob, now: float) -> str:
    return (
        f"{job.ref}  {job.queue}  {job.function or '-'}  attempts={job.attempts}  "
        f"{_age(now - job.failed_at)} ago  {job.reason}"
    )


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _target(settings: Settings) -> dict[str, Any]:
    """The library builds its settings from these and the same environment."""
    return {"nats_url": settings.nats_url, "namespace": settings.namespace}


async def _find(ref: str, settings: Settings) -> FailedJob:
    """A job id, or ``#SEQ`` for an entry without one (a job id may itself start with
    ``#``, so the id is tried first)."""
    try:
        return await get_failed(ref, **_target(settings))
    except JobNotFound:
        if not (ref.startswith("#") and ref[1:].isdigit()):
            raise
    seq = int(ref[1:])
    for job in await list_failed(**_target(settings)):
        if job.seq == seq:
            return job
    raise JobNotFound(f"no failed entry #{seq} in namespace {settings.namespace}")


@failed.command(name="list")
@click.option("--queue", "-q", default=None, help="only this queue's failed jobs")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="at most N, oldest first")
@settings_options("nats_url", "namespace")
def list_cmd(queue: str | None, limit: int | None, **params: Any) -> None:
    """List failed jobs, oldest first.

    One line each: id (#SEQ if it has none), queue, function, attempts, age, reason.
    """
    settings = settings_from(params)

    async def work() -> None:
        jobs = await list_failed(queue, limit, **_target(settings))
        now = time.time()
        for job in jobs:
            click.echo(_line(job, now))
        if not jobs:
            click.echo("no failed jobs")

    run_command(work())


@failed.command()
@click.argument("ref", metavar="ID")
@settings_options("nats_url", "namespace")
def show(ref: str, **params: Any) -> None:
    """Show failed job ID (or entry #SEQ) with its traceback.

    A job that failed more than once shows its latest failure.
    """
    settings = settings_from(params)

    async def work() -> None:
        job = await _find(ref, settings)
        fields = [
            ("job id", job.job_id or "- (not a readable job)"),
            ("seq", str(job.seq)),
            ("queue", job.queue),
            ("function", job.function or "-"),
            ("attempts", str(job.attempts)),
            ("worker", job.worker or "-"),
            ("failed at", f"{_when(job.failed_at)} ({_age(time.time() - job.failed_at)} ago)"),
            ("reason", job.reason),
            ("size", f"{len(job.body)} bytes"),
        ]
        for name, value in fields:
            click.echo(f"{name + ':':<11}{value}")
        click.echo("traceback:")
        click.echo(job.traceback.rstrip("\n") if job.traceback else "  (none recorded)")

    run_command(work())


@failed.command()
@click.argument("job_ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "everything", is_flag=True, help="every failed job that can run")
@settings_options("nats_url", "namespace")
def requeue(job_ids: tuple[str, ...], everything: bool, **params: Any) -> None:
    """Run failed jobs again, under their own ids.

    Each goes back on the queue it failed on; its old failed result is cleared, so
    whoever asks for its result waits for the new run.
    """
    if everything == bool(job_ids):
        raise click.UsageError("give the ids of the jobs to requeue, or --all")
    settings = settings_from(params)

    async def work() -> None:
        ids: list[str] = list(job_ids)
        if everything:
            jobs = await list_failed(**_target(settings))
            for job in jobs:
                if job.job_id is None:
                    click.echo(
                        f"skipped {job.ref}: not a readable job ({job.reason}); "
                        f"see `naq failed show {job.ref}`, remove with `naq failed purge`",
                        err=True,
                    )
            ids = list(dict.fromkeys(job.job_id for job in jobs if job.job_id is not None))
        done = await requeue_failed(ids, **_target(settings)) if ids else []
        for job_id in done:
            click.echo(f"{job_id}: requeued")
        click.echo(f"{len(done)} job{'' if len(done) == 1 else 's'} requeued")

    run_command(work())


@failed.command()
@click.option("--queue", "-q", default=None, help="only this queue's failed jobs")
@settings_options("nats_url", "namespace")
def purge(queue: str | None, **params: Any) -> None:
    """Remove failed jobs for good.

    Their failed results stay until they expire: the jobs did fail.
    """
    settings = settings_from(params)

    async def work() -> None:
        removed = await purge_failed(queue, **_target(settings))
        click.echo(f"{removed} failed job{'' if removed == 1 else 's'} removed")

    run_command(work())
