"""Admin commands: ``naq server``, ``naq purge``, ``naq workers`` (``list-workers``)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import click

from naq.cli.common import run_command, settings_from, settings_options
from naq.producer.queue import Queue
from naq.state.workers import list_workers
from naq.transport.connect import Client, connect
from naq.transport.server import EmbeddedServer, binary_version


@click.command()
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


@click.command()
@click.argument("queues", nargs=-1, required=True)
@settings_options("nats_url", "namespace")
def purge(queues: tuple[str, ...], **params: Any) -> None:
    """Remove every waiting job from QUEUES."""
    settings = settings_from(params)

    async def run() -> None:
        for name in queues:
            async with Queue(name, settings=settings) as queue:
                click.echo(f"{name}: {await queue.purge()} jobs removed")

    run_command(run())


@click.command(name="workers")
@settings_options("nats_url", "namespace")
@click.option("--json", "as_json", is_flag=True, help="one JSON record per line")
def workers_cmd(as_json: bool, **params: Any) -> None:
    """List live workers from their heartbeats."""
    settings = settings_from(params)

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

    run_command(run())
