"""``naq health``: is the supervisor beside this command alive and able to work?

What a container's ``HEALTHCHECK``, a Kubernetes probe or a monitoring script runs.
It judges by what the supervisor itself publishes, through the same NATS a job
would travel: its heartbeat record in ``{ns}_workers`` must exist (it expires three
heartbeat intervals after the last beat), be fresh (``heartbeat_at`` no older than
those three intervals), and not say that the executor broke. Reaching NATS is part
of the check: a supervisor cut off from NATS does no work, however alive its
process looks.

Which record is "the supervisor beside this command": the one whose id the
supervisor wrote to ``worker_id_file`` (``NAQ_WORKER_ID_FILE``; the image sets it),
which works wherever the two share a file system; without that setting, every
supervisor record whose host is this host name (in a container, the container's),
and there must be at least one.

Exit 0 when healthy, 1 with a one-line reason otherwise (Docker reserves 2 and
treats any other code as unhealthy anyway).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from typing import Any

import click
from nats.js.errors import NotFoundError

from naq.cli.common import CONTEXT, settings_from, settings_options
from naq.errors import EXIT_FAILURE, EXIT_OK, NaqError
from naq.heartbeat import read_id_file
from naq.redact import redact
from naq.settings import Settings
from naq.state.workers import get_worker, list_workers
from naq.transport.connect import Client, connect
from naq.transport.names import Layout
from naq.transport.pool import new_event_loop

STALE_BEATS = 3
"""Heartbeat intervals after which a record counts as stale: its TTL, so a record the
server has not yet expired (its clock, a slow purge) is judged the same way."""


class Unhealthy(Exception):
    """Why the supervisor is not healthy, in one line."""


def judge(record: dict[str, Any], settings: Settings, now: float) -> str:
    """One supervisor record's verdict: a line saying it is healthy, or ``Unhealthy``."""
    worker = record.get("id", "?")
    if record.get("state") == "broken":
        raise Unhealthy(f"worker {worker}: executor broken: {record.get('broken')}")
    age = now - float(record.get("heartbeat_at", 0.0))
    limit = STALE_BEATS * settings.heartbeat_interval
    if age > limit:
        raise Unhealthy(f"worker {worker}: last heartbeat {age:.1f}s ago (limit {limit:g}s)")
    state = record.get("state", "running")
    return f"worker {worker}: {state}, heartbeat {max(age, 0.0):.1f}s ago"


async def _records(client: Client, layout: Layout, settings: Settings) -> list[dict[str, Any]]:
    """The records this command judges (see the module's docstring)."""
    if settings.worker_id_file:
        try:
            worker_id = read_id_file(settings.worker_id_file)
        except FileNotFoundError:
            raise Unhealthy(
                f"no worker id in {settings.worker_id_file}: the supervisor is not running "
                "(not started yet, or stopped)"
            ) from None
        except OSError as exc:
            raise Unhealthy(f"cannot read {settings.worker_id_file}: {exc.strerror}") from None
        record = await get_worker(client, layout, worker_id)
        if record is None:
            raise Unhealthy(
                f"worker {worker_id}: no heartbeat (stopped, or silent for "
                f"{STALE_BEATS} heartbeat intervals)"
            )
        return [record]
    host = socket.gethostname()
    records = [
        r
        for r in await list_workers(client, layout)
        if r.get("host") == host and r.get("role") != "scheduler"
    ]
    if not records:
        raise Unhealthy(f"no supervisor heartbeat from host {host}")
    return records


async def check(settings: Settings) -> list[str]:
    """Connect, read and judge; one line per healthy supervisor, or ``Unhealthy``."""
    try:
        nc = await connect(settings, name="naq health")
    except NaqError as exc:
        raise Unhealthy(f"cannot reach NATS: {redact(str(exc))}") from None
    try:
        client = Client(nc, settings)
        layout = Layout(settings.namespace)
        try:
            await client.kv(layout.workers_bucket)
        except NotFoundError:
            raise Unhealthy(
                f"namespace {settings.namespace} has no workers bucket on this server: "
                "no supervisor has started there"
            ) from None
        records = await _records(client, layout, settings)
        now = time.time()
        return [judge(record, settings, now) for record in records]
    finally:
        await nc.close()


def run_check(settings: Settings, timeout: float) -> tuple[int, str]:
    """The exit code and the line to print."""

    async def bounded() -> list[str]:
        async with asyncio.timeout(timeout):
            return await check(settings)

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            lines = runner.run(bounded())
    except Unhealthy as exc:
        return EXIT_FAILURE, f"unhealthy: {exc}"
    except TimeoutError:
        return EXIT_FAILURE, f"unhealthy: no answer from NATS within {timeout:g}s"
    except NaqError as exc:  # a read that failed (JetStream unavailable, say)
        return EXIT_FAILURE, f"unhealthy: {settings.redact(str(exc))}"
    return EXIT_OK, "healthy: " + "; ".join(lines)


@click.command(context_settings=CONTEXT)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="seconds the whole check may take (a frozen server counts as unhealthy)",
)
@settings_options("nats_url", "namespace", "heartbeat_interval", "worker_id_file")
def health(timeout: float, **params: Any) -> None:
    """Exit 0 if this host's supervisor is healthy: NATS reachable, its heartbeat
    fresh, its executor not broken; else exit 1 with the reason. For HEALTHCHECK."""
    settings = settings_from(params)
    # One line is the answer; each failed connection attempt is summed up in it.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    code, line = run_check(settings, timeout)
    click.echo(line, err=code != EXIT_OK)
    sys.exit(code)
