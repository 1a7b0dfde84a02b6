"""Command line: ``naq`` (worker, server, purge, workers) and ``naq-supervise``.

Every supervisor flag is generated from a ``Settings`` field and has the
environment twin ``NAQ_<FIELD>``, so a container is configured by environment alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from naq.connection import Client, close_connections, connect, new_event_loop
from naq.errors import BrokenExecutor, ConfigurationError, JobNotFound, NaqError
from naq.executors.registry import available_executors, load_executor
from naq.queue import Queue
from naq.server import EmbeddedServer, binary_version, default_store_dir, port_in_use
from naq.settings import DEFAULT_NATS_URL, Settings, env_name, validate_name
from naq.supervisor import Supervisor
from naq.workers import list_workers

log = logging.getLogger("naq")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONFIG = 2
EXIT_CONNECTION = 3
EXIT_BROKEN = 4
"""The executor broke (children dying at start-up): restarting would not help."""
SHORT = {"concurrency": "-c", "executor": "-e", "nats_url": "-u", "namespace": "-n"}
_TYPES: dict[str, Any] = {"int": int, "float": float}


def settings_options(*names: str) -> Callable[[F], F]:
    """Click options for ``names``, each with help, default and its ``NAQ_*`` twin."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}

    def decorate(func: F) -> F:
        for name in reversed(names):
            f = fields[name]
            flags = [f"--{name.replace('_', '-')}"] + ([SHORT[name]] if name in SHORT else [])
            help_text = f.metadata.get("help", "")
            if name == "executor":
                help_text += f" ({', '.join(available_executors())})"
            if f.default is not None:
                help_text += f"  [default: {f.default}]"
            func = click.option(
                *flags,
                name,
                type=str if f.metadata.get("size") else _TYPES.get(str(f.type), str),
                default=None,
                envvar=env_name(name),
                show_envvar=True,
                help=help_text,
            )(func)
        return func

    return decorate


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _settings(params: dict[str, Any]) -> Settings:
    try:
        return Settings.from_env(**params)
    except NaqError as exc:
        raise click.UsageError(str(exc)) from None


def _queues(queues: tuple[str, ...], settings: Settings) -> list[str]:
    """The queues to serve, checked before anything connects (or starts a server):
    a bad name is a usage error, not a connection failure after the fact."""
    try:
        return [validate_name("queue", q) for q in queues] or [settings.default_queue]
    except NaqError as exc:
        raise click.UsageError(str(exc)) from None


SUPERVISOR_FIELDS = tuple(f.name for f in dataclasses.fields(Settings))
"""Every setting is a supervisor flag, so none lacks its environment twin."""


class Role(Protocol):
    """A long-running process role: the supervisor, the scheduler."""

    def request_stop(self) -> None: ...

    async def run(self) -> int: ...


def run_role(make: Callable[[], Role]) -> int:
    """Run ``make().run()`` on a fresh loop; SIGTERM and SIGINT ask it to stop."""

    async def main() -> int:
        role = make()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, role.request_stop)
        return await role.run()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())


def run_supervisor(settings: Settings, queues: list[str]) -> int:
    """Run a supervisor until it is told to stop; returns the process exit code."""
    _configure_logging(settings)
    # Job modules live beside the user, as with `python -m`: a console script's
    # sys.path starts at its own bin directory, so `naq worker` in the folder of
    # tasks.py would not find it.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        executor = load_executor(settings.executor)(settings.concurrency, settings)
    except NaqError as exc:
        click.echo(f"naq-supervise: {exc}", err=True)
        return EXIT_CONFIG
    server: EmbeddedServer | None = None
    if settings.nats_url is None and not port_in_use(4222):
        server = EmbeddedServer(4222, settings.store_dir or default_store_dir()).start()
        log.info(
            "no NATS server on %s: started an embedded nats-server (store %s)",
            DEFAULT_NATS_URL,
            server.store_dir,
        )
        settings = settings.replace(nats_url=server.url)

    try:
        code = run_role(lambda: Supervisor(settings, executor, queues))
    except BrokenExecutor as exc:
        log.error("%s", exc)
        code = EXIT_BROKEN
    except NaqError as exc:
        log.error("%s", exc)
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


@click.command(name="naq-supervise", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("queues", nargs=-1)
@settings_options(*SUPERVISOR_FIELDS)
def supervise_main(queues: tuple[str, ...], **params: Any) -> None:
    """Run jobs from QUEUES (default: the default queue) with an executor."""
    settings = _settings(params)
    sys.exit(run_supervisor(settings, _queues(queues, settings)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="naq")
def main() -> None:
    """naq: a job queue for Python on NATS JetStream."""


@main.command()
@click.argument("queues", nargs=-1)
@settings_options(*SUPERVISOR_FIELDS)
def worker(queues: tuple[str, ...], **params: Any) -> None:
    """Run a worker (a supervisor) on QUEUES; the same as naq-supervise."""
    settings = _settings(params)
    sys.exit(run_supervisor(settings, _queues(queues, settings)))


@main.command()
@click.option("--port", "-p", type=int, default=4222, show_default=True, envvar="NAQ_SERVER_PORT")
@click.option(
    "--store-dir",
    type=click.Path(),
    default=None,
    envvar="NAQ_STORE_DIR",
    help="JetStream store dir  [default: per-user data dir]",
)
def server(port: int, store_dir: str | None) -> None:
    """Run the embedded nats-server with JetStream on 127.0.0.1 until interrupted."""
    srv = EmbeddedServer(port, store_dir)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    srv.start()
    click.echo(
        f"nats-server {binary_version()} on {srv.url} (store {srv.store_dir}); Ctrl-C stops it"
    )
    try:
        while not stop.wait(0.5):
            if srv.process is None or srv.process.poll() is not None:
                click.echo("nats-server exited", err=True)
                sys.exit(1)
    finally:
        srv.stop()


@main.command()
@click.argument("queues", nargs=-1, required=True)
@settings_options("nats_url", "namespace")
def purge(queues: tuple[str, ...], **params: Any) -> None:
    """Remove every waiting job from QUEUES."""
    settings = _settings(params)

    async def run() -> None:
        for name in queues:
            async with Queue(name, settings=settings) as queue:
                click.echo(f"{name}: {await queue.purge()} jobs removed")

    _run(run())


@main.command(name="workers")
@settings_options("nats_url", "namespace")
@click.option("--json", "as_json", is_flag=True, help="one JSON record per line")
def workers_cmd(as_json: bool, **params: Any) -> None:
    """List live workers from their heartbeats."""
    settings = _settings(params)

    async def run() -> None:
        client = Client(await connect(settings), settings)
        try:
            records = await list_workers(client, await client.layout(settings.namespace))
        finally:
            await client.close()
        for rec in records:
            if as_json:
                click.echo(json.dumps(rec))
            elif rec.get("role") == "scheduler":
                click.echo(
                    f"{rec['id']}  scheduler {'LEADER' if rec['leader'] else 'standby'}  "
                    f"schedules={rec['schedules']}  fired={rec['fired']}"
                )
            else:
                click.echo(
                    f"{rec['id']}  {rec['executor']} {rec['busy']}/{rec['slots']} busy  "
                    f"queues={','.join(rec['queues'])}  processed={rec['processed']} "
                    f"failed={rec['failed']}  rss={rec['rss'] // 1024**2}MiB"
                )
        if not records:
            click.echo("no live workers")

    _run(run())


main.add_command(workers_cmd, name="list-workers")  # the original naq's name


def _run(coro: Any) -> None:
    """Run a command's coroutine and close the connections it opened.

    A missing job or schedule (exit 1) and a bad name or value (exit 2) are the
    user's errors; any other naq error is the server's (exit 3).
    """

    async def guarded() -> None:
        try:
            await coro
        except JobNotFound as exc:
            raise click.ClickException(str(exc)) from None
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None
        finally:
            await close_connections()

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(guarded())
    except NaqError as exc:
        click.echo(f"naq: {exc}", err=True)
        sys.exit(EXIT_CONNECTION)


from naq.cli_failed import failed  # noqa: E402 -- last: naq.cli_failed imports from here

main.add_command(failed)

from naq.cli_scheduler import job_control, list_scheduled, scheduler_cmd  # noqa: E402

main.add_command(scheduler_cmd)
main.add_command(list_scheduled)
main.add_command(job_control)
