"""The records in ``{ns}_workers``: who runs, where, how busy, how big.

Supervisors (the full record below) and schedulers (role, leadership, fires) write
theirs from their own loop every ``heartbeat_interval`` with a TTL of three
intervals, so a process that dies without a word vanishes by itself and one whose
loop is stuck stops looking alive. A module of its own, below both roles, so that
neither imports the other to heartbeat; the CLI and the read API read the records
through ``naq.state.workers``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from naq.errors import ConfigurationError
from naq.executors.base import Executor
from naq.transport.connect import Client
from naq.transport.kv import purge_key
from naq.transport.names import Layout

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Counters:
    processed: int = 0
    failed: int = 0
    retried: int = 0


State = Literal["running", "draining", "broken"]
"""A supervisor's state in its record: serving; stopping on request (its running jobs
finish, it takes no new ones); or stopping because its executor broke."""


@dataclass(slots=True)
class Heartbeat:
    worker_id: str
    queues: list[str]
    executor: str
    slots: int
    started_at: float = field(default_factory=time.time)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def record(
        self,
        executor: Executor,
        busy: int,
        counters: Counters,
        state: State = "running",
        broken: str | None = None,
    ) -> dict[str, Any]:
        """``state`` and ``broken`` (the broken executor's reason) are what ``naq
        health`` judges besides the record's freshness."""
        me = psutil.Process(self.pid)
        children = [asdict(s) for s in executor.slots()]
        rss = me.memory_info().rss + sum(c["rss"] for c in children)
        return {
            "id": self.worker_id,
            "host": self.host,
            "pid": self.pid,
            "queues": self.queues,
            "executor": self.executor,
            "slots": self.slots,
            "busy": busy,
            "processed": counters.processed,
            "failed": counters.failed,
            "retried": counters.retried,
            "rss": rss,
            "children": children,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "state": state,
            "broken": broken,
        }


async def beat(client: Client, layout: Layout, record: dict[str, Any], ttl: float) -> None:
    await client.publisher.publish(
        layout.kv_subject(layout.workers_bucket, record["id"]),
        json.dumps(record).encode(),
        {"Nats-TTL": f"{max(1, round(ttl))}s"},
    )


async def remove(client: Client, layout: Layout, worker_id: str) -> None:
    """Take the record away at a clean exit (its marker expires: see ``purge_key``)."""
    await purge_key(client, layout.workers_bucket, worker_id)


def write_id_file(path: str, worker_id: str) -> None:
    """Say which heartbeat is this supervisor's, for ``naq health`` beside it (in the same
    container, say). Written whole or not at all (a rename), so a reader never sees half
    an id. A file that cannot be written is logged, not fatal: the jobs still run, and
    ``naq health`` says that it finds no id."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        partial.write_text(worker_id + "\n")
        partial.replace(target)
    except OSError as exc:
        log.error("cannot write the worker id file %s (naq health reads it): %s", path, exc)


_WORKER_ID = re.compile(r"[-/_=.a-zA-Z0-9]{1,255}")
"""What a KV key may hold (a host name with dots included)."""


def read_id_file(path: str) -> str:
    """The worker id in ``path``, checked: it becomes a KV key."""
    worker_id = Path(path).read_text().strip()
    if not _WORKER_ID.fullmatch(worker_id):
        raise ConfigurationError(f"{path} holds no worker id: {worker_id[:80]!r}")
    return worker_id


def clear_id_file(path: str, worker_id: str) -> None:
    """Remove the id file at exit if it still names this supervisor (another one may
    have been started with the same file since)."""
    target = Path(path)
    try:
        if target.read_text().strip() == worker_id:
            target.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot remove the worker id file %s: %s", path, exc)
