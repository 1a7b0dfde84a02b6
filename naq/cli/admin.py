"""Admin commands: ``naq server``, ``naq purge``, ``naq workers`` (``list-workers``),
``naq info``.

``workers`` and ``info`` print through the public read API (``naq.producer.info``),
the same calls a program would make; the text they print is ``naq.cli.view``'s, one
worker line for both, and ``info --watch`` shows it live.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import click

from naq.cli.common import queue_names, run_command, settings_from, settings_options
from naq.cli.view import overview_json, overview_lines, watch as watch_view, worker_line
from naq.errors import EXIT_FAILURE
from naq.producer.info import LiveWorker, Overview, list_workers, overview
from naq.producer.queue import Queue
from naq.settings import Settings
from naq.transport.server import (
    EmbeddedCluster,
    EmbeddedServer,
    ServerError,
    binary_version,
    free_port,
)

SINGLE_SYNC_ALWAYS = False
"""``naq server`` alone fsyncs as nats-server does by default (every two minutes);
``--sync`` turns ``sync_interval: always`` on. The measurements behind this choice
are in the README's Guarantees (``bench/durability.py``)."""


@click.command()
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=4222,
    show_default=True,
    envvar="NAQ_SERVER_PORT",
    help="client port; with --cluster the first node's, the others the next ones; "
    "0 picks free ports",
)
@click.option(
    "--store-dir",
    type=click.Path(),
    default=None,
    envvar="NAQ_STORE_DIR",
    help="JetStream store dir (with --cluster, one subdirectory per node)  "
    "[default: per-user data dir]",
)
@click.option(
    "--cluster",
    "nodes",
    type=click.IntRange(min=3),
    metavar="NODES",
    default=None,
    help="run NODES nats-servers on 127.0.0.1 as one JetStream cluster (3 or more), "
    "to try high availability: set NAQ_REPLICAS=3",
)
@click.option(
    "--sync/--no-sync",
    default=None,
    help="fsync every write before acknowledging it (sync_interval: always)  "
    f"[default: on with --cluster, {'on' if SINGLE_SYNC_ALWAYS else 'off'} alone]",
)
def server(port: int, store_dir: str | None, nodes: int | None, sync: bool | None) -> None:
    """Run the embedded nats-server with JetStream on 127.0.0.1 until interrupted;
    with --cluster, a local JetStream cluster of that many nodes (a node that dies
    leaves the others running; SIGHUP starts the dead ones again)."""
    stop, hup = threading.Event(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    running: EmbeddedServer | EmbeddedCluster
    if nodes is None:
        running = EmbeddedServer(
            port or free_port(),
            store_dir,
            sync_always=SINGLE_SYNC_ALWAYS if sync is None else sync,
        )
    else:
        signal.signal(signal.SIGHUP, lambda *_: hup.set())
        ports = None if port == 0 else [port + i for i in range(nodes)]
        running = EmbeddedCluster(
            nodes, store_dir, ports=ports, sync_always=True if sync is None else sync
        )
    try:
        running.start()
    except ServerError as exc:
        click.echo(f"naq server: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    try:
        _announce(running)
        if isinstance(running, EmbeddedCluster):
            _watch_cluster(running, stop, hup)
        else:
            while not stop.wait(0.5):
                if not running.running:
                    click.echo("nats-server exited", err=True)
                    sys.exit(EXIT_FAILURE)
    finally:
        running.stop()


def _watch_cluster(cluster: EmbeddedCluster, stop: threading.Event, hup: threading.Event) -> None:
    """Until ``stop``: say when a node dies (the others go on: that is what a cluster is
    for, and what someone trying it wants to see), start the dead ones again on
    SIGHUP, and give up (exit 1) only when every node is gone."""
    told: set[str] = set()
    while not stop.wait(0.5):
        down = [node for node in cluster.nodes if not node.running]
        for node in down:
            if node.name not in told:
                told.add(node.name)
                click.echo(
                    f"node {node.name} exited; the others go on "
                    f"(SIGHUP to pid {os.getpid()} starts it again)",
                    err=True,
                )
        if len(down) == len(cluster.nodes):
            click.echo("every node exited", err=True)
            sys.exit(EXIT_FAILURE)
        if hup.is_set():
            hup.clear()
            for node in down:
                try:
                    cluster.restart(node.name)
                except ServerError as exc:
                    click.echo(f"node {node.name} did not come back: {exc}", err=True)
                    continue
                told.discard(node.name)
                pid = node.process.pid if node.process else "-"
                click.echo(f"node {node.name} restarted (pid {pid})", err=True)


def _announce(running: EmbeddedServer | EmbeddedCluster) -> None:
    """What runs where, and how to point naq at it."""
    version = binary_version()
    if isinstance(running, EmbeddedServer):
        sync = ", sync_interval: always" if running.sync_always else ""
        click.echo(
            f"nats-server {version} on {running.url} (store {running.store_dir}{sync}); "
            "Ctrl-C stops it"
        )
        return
    first = running.nodes[0]
    sync = "sync_interval: always" if first.sync_always else "default sync_interval"
    click.echo(
        f"nats-server {version}: a {len(running.nodes)}-node JetStream cluster on "
        f"{first.host} ({sync}); Ctrl-C stops every node"
    )
    for node in running.nodes:
        click.echo(
            f"  {node.name}  {node.url}  pid {node.process.pid if node.process else '-'}  "
            f"routes {node.host}:{node.route_port}  "
            f"monitoring http://{node.host}:{node.http_port}  store {node.store_dir}"
        )
    click.echo(f"client URLs: {running.url}")
    click.echo(f"use it: NAQ_NATS_URL={running.url} NAQ_REPLICAS=3 naq-supervise")


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


def _target(settings: Settings) -> dict[str, Any]:
    """The read API builds its settings from these and the same environment."""
    return {"nats_url": settings.nats_url, "namespace": settings.namespace}


@click.command(name="workers")
@settings_options("nats_url", "namespace")
@click.option("--json", "as_json", is_flag=True, help="one JSON record per line")
def workers_cmd(as_json: bool, **params: Any) -> None:
    """List live workers from their heartbeats."""
    settings = settings_from(params)

    async def run() -> None:
        records = await list_workers(**_target(settings))
        now = time.time()
        for record in records:
            click.echo(
                json.dumps(record) if as_json else worker_line(LiveWorker.from_record(record, now))
            )
        if not records:
            click.echo("no live workers")

    run_command(run())


DEFAULT_INTERVAL = 2.0


@click.command(name="info")
@click.argument("queues", nargs=-1)
@settings_options("nats_url", "namespace")
@click.option("--json", "as_json", is_flag=True, help="one JSON object: queues, workers, leader")
@click.option(
    "--watch",
    "-w",
    is_flag=True,
    help="show it again every interval until Ctrl-C: redrawn in place on a terminal, "
    "one block per interval otherwise (one JSON object per line with --json)",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=3600),
    default=None,
    metavar="SECONDS",
    help=f"seconds between two views with --watch  [default: {DEFAULT_INTERVAL:g}]",
)
def info_cmd(
    queues: tuple[str, ...],
    as_json: bool,
    watch: bool,
    interval: float | None,
    **params: Any,
) -> None:
    """Queues, live workers and the scheduler leader at a glance.

    Per queue: jobs waiting, running (or waiting out a retry delay), redelivered,
    failed for good, scheduled (delayed jobs due to move there), and consumers (the
    supervisors asking for its jobs now). Per worker: busy/slots, RSS and the age of
    its heartbeat. QUEUES limits the table to those queues.
    """
    if interval is not None and not watch:
        raise click.UsageError("--interval applies to --watch only")
    settings = settings_from(params)
    wanted = queue_names(queues, settings) if queues else None  # checked before connecting

    async def read() -> Overview:
        return await overview(wanted, **_target(settings))  # QueueNotFound: exit 1

    async def once() -> None:
        view = await read()
        if as_json:
            click.echo(json.dumps(overview_json(view)))
            return
        for line in overview_lines(view):
            click.echo(line)

    if not watch:
        run_command(once())
        return
    run_command(
        watch_view(
            read,
            interval=DEFAULT_INTERVAL if interval is None else interval,
            as_json=as_json,
            redact=settings.redact,
        )
    )
