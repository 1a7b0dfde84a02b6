"""The one-screen view of a namespace: its queues' counts, the live workers and the
scheduler leader, read together at one moment and typed.

``naq info`` (once, or refreshed by ``--watch``) prints it, and a dashboard can show
the same without reading the buckets again or parsing heartbeat records itself. It
composes the readers of ``naq.state.queues`` and ``naq.state.workers``: nothing here
reads the server another way. The public call, with connection handling and a
``_sync`` twin, is ``naq.producer.info.overview``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from naq.state import queues as state_queues, workers as state_workers
from naq.state.queues import QueueInfo
from naq.transport.connect import Client
from naq.transport.names import Layout

SCHEDULER_ROLE = "scheduler"
SUPERVISOR_ROLE = "supervisor"


def _int(record: dict[str, Any], key: str) -> int:
    """A count of a heartbeat record; 0 where a record (another version's, or one
    written around naq) lacks it, so one odd record does not break the whole view."""
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """One live process of the namespace, from its heartbeat: a supervisor (its load
    and size) or a scheduler (whether it leads)."""

    id: str
    role: str
    """``"supervisor"`` or ``"scheduler"``."""
    host: str
    pid: int
    busy: int
    """Jobs running now (a scheduler: 0)."""
    slots: int
    """Jobs it can run at once (a scheduler: 0)."""
    rss: int
    """Resident memory in bytes, the supervisor's and its children's (a scheduler: 0)."""
    heartbeat_age: float | None
    """Seconds between its last heartbeat and the view's ``taken_at`` (None if the
    record carries no time). Heartbeats come every ``heartbeat_interval`` and vanish
    after three, so a large age is a process whose loop is stuck, not a dead one."""
    record: dict[str, Any]
    """The whole heartbeat record (queues, executor, processed, failed, children, ...),
    as ``list_workers`` returns it."""

    @classmethod
    def from_record(cls, record: dict[str, Any], now: float) -> LiveWorker:
        beat = _float(record, "heartbeat_at")
        return cls(
            id=str(record.get("id", "")),
            role=SCHEDULER_ROLE if record.get("role") == SCHEDULER_ROLE else SUPERVISOR_ROLE,
            host=str(record.get("host", "")),
            pid=_int(record, "pid"),
            busy=_int(record, "busy"),
            slots=_int(record, "slots"),
            rss=_int(record, "rss"),
            heartbeat_age=None if beat is None else max(0.0, now - beat),
            record=record,
        )

    @property
    def leader(self) -> bool:
        """A scheduler that says it holds the lease (the lease itself is
        ``Overview.leader``)."""
        return self.role == SCHEDULER_ROLE and bool(self.record.get("leader"))


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """The scheduler lease's holder."""

    id: str
    host: str
    pid: int
    since: float | None
    """When it took the lease (epoch seconds), if the record says."""
    record: dict[str, Any]
    """The whole lease record, as ``current_leader`` returns it."""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LeaderInfo:
        return cls(
            id=str(record.get("id", "")),
            host=str(record.get("host", "")),
            pid=_int(record, "pid"),
            since=_float(record, "since"),
            record=record,
        )


@dataclass(frozen=True, slots=True)
class Overview:
    """A namespace at one moment: what ``naq info`` shows."""

    namespace: str
    taken_at: float
    """When the reads started (epoch seconds); heartbeat ages count from here."""
    queues: list[QueueInfo]
    workers: list[LiveWorker]
    """Sorted: supervisors first, then schedulers, each by id."""
    leader: LeaderInfo | None
    """None when no scheduler leads."""


async def overview(client: Client, layout: Layout, names: Sequence[str] | None = None) -> Overview:
    """The queues' counts (``names``, or every queue), the live workers and the leader.

    Costs what ``queues_info``, ``list_workers`` and ``current_leader`` cost, read one
    after the other (an error of any, such as ``QueueNotFound``, is raised as it is).
    """
    taken_at = time.time()
    queues = await state_queues.queues_info(client, layout, names)
    records = await state_workers.list_workers(client, layout)
    lease = await state_workers.current_leader(client, layout)
    workers = sorted(
        (LiveWorker.from_record(record, taken_at) for record in records),
        key=lambda worker: (worker.role == SCHEDULER_ROLE, worker.id),
    )
    return Overview(
        namespace=layout.namespace,
        taken_at=taken_at,
        queues=queues,
        workers=workers,
        leader=None if lease is None else LeaderInfo.from_record(lease),
    )
