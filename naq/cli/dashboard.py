"""``naq dashboard``: the web dashboard (``pip install 'naq[dashboard]'``).

Every option has its ``NAQ_DASHBOARD_*`` twin, so a container needs no flags; the
token and the basic-auth password are read from the environment only. The web
application itself is ``naq.dashboard``, imported only here, so the rest of the CLI
runs without the extra installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Iterator
from typing import Any

import click

from naq.cli.common import CONTEXT, configure_logging, settings_from, settings_options
from naq.settings import Settings
from naq.transport.pool import new_event_loop

log = logging.getLogger(__name__)
STOP_GRACE = 2


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond this machine with no authentication: anyone reaching the
    port would read every job's metadata (and act, with --admin)."""
    guarded = settings.dashboard_token or (settings.dashboard_user and settings.dashboard_password)
    if not guarded and not _loopback(settings.dashboard_host):
        raise click.UsageError(
            f"the dashboard would listen on {settings.dashboard_host} with no "
            "authentication: set NAQ_DASHBOARD_TOKEN, or NAQ_DASHBOARD_USER and "
            "NAQ_DASHBOARD_PASSWORD"
        )
    if settings.dashboard_user and not settings.dashboard_password:
        raise click.UsageError("NAQ_DASHBOARD_USER needs NAQ_DASHBOARD_PASSWORD")


@click.command(name="dashboard", context_settings=CONTEXT)
@settings_options("nats_url", "namespace", "log_level")
@click.option(
    "--host",
    "dashboard_host",
    envvar="NAQ_DASHBOARD_HOST",
    show_envvar=True,
    help="address to listen on  [default: 127.0.0.1]",
)
@click.option(
    "--port",
    "dashboard_port",
    type=click.IntRange(0, 65535),
    envvar="NAQ_DASHBOARD_PORT",
    show_envvar=True,
    help="port to listen on  [default: 8080]",
)
@click.option(
    "--admin/--no-admin",
    "dashboard_admin",
    default=None,
    help="offer the actions (requeue, purge, pause, resume, cancel, run now)  "
    "[env var: NAQ_DASHBOARD_ADMIN]",
)
@click.option(
    "--user",
    "dashboard_user",
    envvar="NAQ_DASHBOARD_USER",
    show_envvar=True,
    help="basic-auth user (its password in NAQ_DASHBOARD_PASSWORD only)",
)
@click.option(
    "--redact",
    "dashboard_redact",
    envvar="NAQ_DASHBOARD_REDACT",
    show_envvar=True,
    help="module:function masking secrets in the job arguments shown",
)
def dashboard_cmd(**params: Any) -> None:
    """Serve the web dashboard: queues, jobs, failed jobs, schedules and workers, live.

    Read-only unless started with --admin (requeue, purge, pause, resume, cancel, run
    now; each asks for a confirmation). A token (NAQ_DASHBOARD_TOKEN) or basic auth
    (--user and NAQ_DASHBOARD_PASSWORD) is required to listen beyond loopback.
    """
    settings = settings_from(params)
    configure_logging(settings)
    check_exposure(settings)
    try:
        import uvicorn

        from naq.dashboard.app import make_app, missing_assets
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra: pip install 'naq[dashboard]' ({exc})"
        ) from None
    if missing := missing_assets():
        raise click.ClickException(
            f"the dashboard's front-end files are missing ({', '.join(missing)}): this naq "
            "was built without npm; build it where npm is installed"
        )
    app = make_app(settings)
    Server = _server_class()
    config = uvicorn.Config(
        app,
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        loop="none",
        lifespan="on",
        log_level=settings.log_level.lower(),
        access_log=False,
        # Open pages hold their live (SSE) streams for ever: a stop closes them after
        # this many seconds instead of waiting for every browser to leave.
        timeout_graceful_shutdown=STOP_GRACE,
    )
    server = Server(config)
    click.echo(
        f"naq dashboard for namespace {settings.namespace} on "
        f"http://{settings.dashboard_host}:{settings.dashboard_port}/ "
        f"({'admin' if settings.dashboard_admin else 'read-only'})",
        err=True,
    )
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(server.serve())


def _server_class() -> type[Any]:
    import uvicorn

    class StoppedCleanly(uvicorn.Server):
        """uvicorn's server, stopped by SIGTERM or SIGINT like naq's other commands:
        the first stops it (its pages' streams closed after ``STOP_GRACE``), and it
        exits 0. uvicorn's own handling raises the signal again once stopped, so the
        process would end killed by it."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop_requested)
            try:
                yield
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

        def stop_requested(self) -> None:
            if self.should_exit:  # a second request: stop at once
                self.force_exit = True
            self.should_exit = True

    return StoppedCleanly
