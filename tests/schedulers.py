"""Real ``naq scheduler`` processes for tests: starting several with short leases, and
reading what they did from the server (the lease key, the fired jobs in the stream).

Leases are short (TTL 2 s, renewed every 0.5 s), so a takeover is quick to see.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from naq.producer.schedules import list_schedules, schedule
from naq.transport.names import LEASE_KEY, Layout
from tests.conftest import first_json, until
from tests.jobs import add
from tests.procs import NAQ, Proc, Spawn


def stream_name(namespace: str) -> str:
    return Layout(namespace).stream


TTL = 2.0
RENEW = 0.5
MARGIN = 1.0
TAKEOVER_BOUND = TTL + RENEW + MARGIN
LEADS = r"scheduler (?P<id>\S+) is the leader"
FIRED = r"fired (?P<job>\S+) \(schedule"
STEPPED_DOWN = r"lost its lease|lease not certain, stepping down"


StartSchedulers = Callable[..., Awaitable[list[Proc]]]


def start_schedulers(
    spawn: Spawn, js: JetStreamContext, nats_url: str, namespace: str
) -> StartSchedulers:
    """Start ``n`` ``naq scheduler`` processes; return once every one watches the lease."""

    async def start(n: int, via_env: bool = False) -> list[Proc]:
        if via_env:
            lease_args: list[str] = []
            env = {
                "NAQ_SCHEDULER_LOCK_TTL": str(TTL),
                "NAQ_SCHEDULER_LOCK_RENEW_INTERVAL": str(RENEW),
            }
        else:
            lease_args = [
                "--scheduler-lock-ttl", str(TTL),
                "--scheduler-lock-renew-interval", str(RENEW),
            ]  # fmt: skip
            env = {}
        args = [
            NAQ, "scheduler",
            "--nats-url", nats_url,
            "--namespace", namespace,
            "--log-level", "DEBUG",
            *lease_args,
        ]  # fmt: skip
        procs = [spawn(*args, **env) for _ in range(n)]
        # Each process watches the lease key before it contends: one consumer each.
        leader_stream = f"KV_{Layout(namespace).leader_bucket}"
        await until(
            lambda: consumers(js, leader_stream, n), 15, f"{n} schedulers watching the lease"
        )
        return procs

    return start


async def consumers(js: JetStreamContext, stream: str, n: int) -> bool:
    info = await js.stream_info(stream)
    return info.state.consumer_count >= n


async def lease_kv(js: JetStreamContext, namespace: str) -> KeyValue:
    return await js.key_value(Layout(namespace).leader_bucket)


async def leader_other_than(
    js: JetStreamContext,
    namespace: str,
    pids: set[int],
    timeout: float,
    procs: list[Proc] | None = None,
) -> dict[str, Any]:
    """The first lease record (through a watch) held by a process not in ``pids``."""
    kv = await lease_kv(js, namespace)
    record = await first_json(kv, LEASE_KEY, lambda r: r["pid"] not in pids, timeout)
    if record is not None:
        return record
    outputs = "\n".join(p.output() for p in procs or [])
    raise AssertionError(f"no leader other than {pids} within {timeout}s\n{outputs}")


async def holders_during(js: JetStreamContext, namespace: str, seconds: float) -> set[str]:
    """Every holder id written to the lease key while watching it for ``seconds``."""
    watcher = await (await lease_kv(js, namespace)).watch(LEASE_KEY)
    deadline = time.monotonic() + seconds
    seen: set[str] = set()
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                entry = await watcher.updates(timeout=remaining)
            except TimeoutError:
                break
            if entry is not None and entry.value:
                seen.add(json.loads(entry.value)["id"])
    finally:
        await watcher.stop()
    return seen


def by_pid(procs: list[Proc], pid: int) -> Proc:
    [proc] = [p for p in procs if p.pid == pid]
    return proc


async def job_subjects(js: JetStreamContext, namespace: str) -> dict[str, int]:
    """Messages per job subject in the job stream (nothing consumes them here)."""
    info = await js.stream_info(stream_name(namespace), subjects_filter=f"{namespace}.jobs.>")
    return dict(info.state.subjects or {})


async def job_count(js: JetStreamContext, namespace: str) -> int:
    info = await js.stream_info(stream_name(namespace), subjects_filter=f"{namespace}.jobs.>")
    return info.state.messages


async def make_schedules(n: int, target: dict[str, str], **spec: Any) -> dict[str, float]:
    """``n`` schedules of ``add``; their ids and first fire times."""
    ids = await asyncio.gather(
        *(schedule(add, i, i, schedule_id=f"s{i:03d}", **spec, **target) for i in range(n))
    )
    first = {s.schedule_id: s.next_run for s in await list_schedules(**target)}
    assert set(first) == set(ids)
    return first


def runs_by_schedule(subjects: dict[str, int], namespace: str) -> dict[str, list[int]]:
    """Fire times per schedule id, from subjects ``{ns}.jobs.default.{sid}-{fire}``."""
    prefix = f"{namespace}.jobs.default."
    runs: dict[str, list[int]] = {}
    for subject in subjects:
        assert subject.startswith(prefix), subject
        sid, _, fire = subject.removeprefix(prefix).rpartition("-")
        runs.setdefault(sid, []).append(int(fire))
    return {sid: sorted(fires) for sid, fires in runs.items()}
