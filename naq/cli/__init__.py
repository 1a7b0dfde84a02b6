"""Command line: ``naq`` (worker, scheduler, server, info, workers, failed, ...) and
``naq-supervise``.

One module per group of commands: ``worker`` (the supervisor), ``admin`` (server,
purge, workers, info), ``failed``, ``scheduler``, ``health``, ``dashboard`` (the web
dashboard, imported only when run); ``common`` holds what they share.
This module only assembles the ``naq`` group.
"""

from __future__ import annotations

import click

from naq.cli.admin import info_cmd, purge, server, workers_cmd
from naq.cli.common import CONTEXT
from naq.cli.dashboard import dashboard_cmd
from naq.cli.failed import failed
from naq.cli.health import health
from naq.cli.scheduler import job_control, list_scheduled, scheduler_cmd
from naq.cli.worker import supervise_main, worker

__all__ = ["main", "supervise_main"]


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="naq")
def main() -> None:
    """naq: a job queue for Python on NATS JetStream."""


for command in (
    worker,
    server,
    purge,
    info_cmd,
    workers_cmd,
    failed,
    scheduler_cmd,
    list_scheduled,
    job_control,
    dashboard_cmd,
    health,
):
    main.add_command(command)
main.add_command(workers_cmd, name="list-workers")  # the original naq's name
