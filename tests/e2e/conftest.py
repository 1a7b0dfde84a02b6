"""The real CLI in subprocesses: output read line by line, every process killed at teardown.

Waiting is driven by what the processes say (their log lines) and by the workers KV,
never by fixed sleeps, so a slow machine makes the tests slower, not flaky.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nats.js import JetStreamContext

from naq import Settings, close_connections
from naq.producer.schedules import list_schedules
from naq.scheduler import Scheduler
from naq.transport.names import Layout
from tests.conftest import first_json
from tests.procs import NAQ, NAQ_SUPERVISE, READY, Proc, Spawn

__all__ = ["NAQ", "NAQ_SUPERVISE", "READY", "Proc", "Spawn"]


SuperviseFn = Callable[..., Proc]


@pytest.fixture
def supervise(spawn: Spawn, nats_url: str, namespace: str) -> SuperviseFn:
    """``naq-supervise`` on the session server and the test's namespace, fast heartbeats."""

    def start(*args: str, **env: str) -> Proc:
        return spawn(
            NAQ_SUPERVISE,
            "--nats-url", nats_url,
            "--namespace", namespace,
            "--heartbeat-interval", "0.2",
            "--pull-expires", "2",
            *args,
            **env,
        )  # fmt: skip

    return start


def stream_name(namespace: str) -> str:
    return Layout(namespace).stream


async def worker_record(
    js: JetStreamContext,
    namespace: str,
    worker_id: str,
    predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """The first heartbeat of ``worker_id`` that satisfies ``predicate``, through a KV watch."""
    kv = await js.key_value(f"{namespace}_workers")
    seen: list[dict[str, Any]] = []
    record = await first_json(kv, worker_id, predicate, timeout, seen)
    if record is not None:
        return record
    raise AssertionError(f"no matching heartbeat of {worker_id} in {timeout}s; saw {seen[-3:]}")


@pytest.fixture
async def target(nats_url: str, namespace: str) -> AsyncIterator[dict[str, str]]:
    """Connection arguments for naq's module-level functions; declares the layout."""
    conn = {"nats_url": nats_url, "namespace": namespace}
    await list_schedules(**conn)  # connects, and so declares every stream and bucket
    yield conn
    await close_connections()


COLUMNS = ["queue", "waiting", "running", "redelivered", "failed", "scheduled", "consumers"]
"""The header of ``naq info``'s queue table."""

RunNaq = Callable[..., Awaitable[Proc]]


@pytest.fixture
def naq(spawn: Spawn, nats_url: str, namespace: str) -> RunNaq:
    """Run ``naq ARGS`` on the test's namespace to its end; check its exit code."""

    async def run(*args: str, code: int = 0, url: str = nats_url) -> Proc:
        proc = spawn(NAQ, *args, "--nats-url", url, "--namespace", namespace)
        assert await proc.exit_code(30) == code, proc.output()
        return proc

    return run


@pytest.fixture
async def leader(settings: Settings) -> AsyncIterator[Scheduler]:
    """A scheduler role in this process, leading; it releases the lease at the end."""
    sched = Scheduler(settings, "info-e2e")
    task = asyncio.create_task(sched.run())
    await asyncio.wait_for(sched.leading.wait(), 10)
    yield sched
    sched.request_stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)


def table(lines: list[str]) -> dict[str, list[int]]:
    """The queue table of ``naq info``'s text: counts by queue name."""
    start = next(i for i, line in enumerate(lines) if line.split() == COLUMNS)
    rows: dict[str, list[int]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        name, *counts = line.split()
        rows[name] = [int(count) for count in counts]
    return rows
