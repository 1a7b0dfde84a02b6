"""``naq-supervise`` and ``naq worker``: run a supervisor until it is told to stop."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import click

from naq.cli.common import (
    CONTEXT,
    SUPERVISOR_FIELDS,
    configure_logging,
    queue_names,
    run_role,
    settings_from,
    settings_options,
)
from naq.errors import (
    EXIT_BROKEN,
    EXIT_CONFIG,
    EXIT_CONNECTION,
    BrokenExecutor,
    ConfigurationError,
    NaqError,
)
from naq.executors.registry import load_executor
from naq.middleware import load_middleware
from naq.settings import DEFAULT_NATS_URL, Settings
from naq.supervisor import Supervisor
from naq.transport.server import EmbeddedServer, default_store_dir, port_in_use

log = logging.getLogger("naq")


def run_supervisor(settings: Settings, queues: list[str]) -> int:
    """Run a supervisor until it is told to stop; returns the process exit code."""
    configure_logging(settings)
    # Job modules live beside the user, as with `python -m`: a console script's
    # sys.path starts at its own bin directory, so `naq worker` in the folder of
    # tasks.py would not find it.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        executor = load_executor(settings.executor)(settings.concurrency, settings)
        middleware = load_middleware(settings.middleware_names)
    except NaqError as exc:
        click.echo(f"naq-supervise: {exc}", err=True)
        return EXIT_CONFIG
    server: EmbeddedServer | None = None
    # Credentials or TLS mean a real server is meant: never answer them with an
    # embedded one that has neither.
    if settings.nats_url is None and not settings.uses_auth_or_tls and not port_in_use(4222):
        server = EmbeddedServer(4222, settings.store_dir or default_store_dir()).start()
        log.info(
            "no NATS server on %s: started an embedded nats-server (store %s)",
            DEFAULT_NATS_URL,
            server.store_dir,
        )
        settings = settings.replace(nats_url=server.url)

    try:
        code = run_role(lambda: Supervisor(settings, executor, queues, middleware=middleware))
    except BrokenExecutor as exc:
        log.error("%s", exc)
        code = EXIT_BROKEN
    except ConfigurationError as exc:  # found on start (a metrics port taken, say)
        log.error("%s", settings.redact(str(exc)))
        code = EXIT_CONFIG
    except NaqError as exc:
        log.error("%s", settings.redact(str(exc)))
        code = EXIT_CONNECTION
    finally:
        if server is not None:
            server.stop()
    if threading.active_count() > 1:
        # Threads of jobs cut short cannot be stopped; do not wait for them to end.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


@click.command(name="naq-supervise", context_settings=CONTEXT)
@click.argument("queues", nargs=-1)
@settings_options(*SUPERVISOR_FIELDS)
def supervise_main(queues: tuple[str, ...], **params: Any) -> None:
    """Run jobs from QUEUES (default: the default queue) with an executor."""
    settings = settings_from(params)
    sys.exit(run_supervisor(settings, queue_names(queues, settings)))


@click.command()
@click.argument("queues", nargs=-1)
@settings_options(*SUPERVISOR_FIELDS)
def worker(queues: tuple[str, ...], **params: Any) -> None:
    """Run a worker (a supervisor) on QUEUES; the same as naq-supervise."""
    settings = settings_from(params)
    sys.exit(run_supervisor(settings, queue_names(queues, settings)))
