"""The real CLI in subprocesses: output read line by line, every process killed at teardown.

Waiting is driven by what the processes say (their log lines) and by the workers KV,
never by fixed sleeps, so a slow machine makes the tests slower, not flaky.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from nats.js import JetStreamContext

from naq import close_connections
from naq.producer.schedules import list_schedules
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
