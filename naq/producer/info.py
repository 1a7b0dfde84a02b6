"""The public read API: live workers, the scheduler leader, the queues and their counts,
and all three at once as one typed ``Overview`` (what ``naq info`` prints).

Each call takes ``nats_url=`` and ``namespace=`` like the rest of the producer API
and runs on its shared connection (``naq.producer.api.shared_queue``), so a
monitoring loop calling them opens one connection, not one per call; ``*_sync``
twins run on naq's sync loop thread. They only read: what they return is read from
the server when asked (``naq.state.workers``, ``naq.state.queues``), and ``naq info``
prints the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from naq.errors import ConfigurationError
from naq.producer.api import connected
from naq.settings import validate_name
from naq.state import (
    overview as state_overview,
    queues as state_queues,
    workers as state_workers,
)
from naq.state.overview import (  # the types these calls return
    LeaderInfo as LeaderInfo,
    LiveWorker as LiveWorker,
    Overview as Overview,
)
from naq.state.queues import QueueInfo as QueueInfo
from naq.transport.pool import run_sync


async def list_workers(
    nats_url: str | None = None, namespace: str | None = None
) -> list[dict[str, Any]]:
    """The heartbeat records of the live supervisors and schedulers (the original naq's
    ``list_workers``): id, host, pid, queues, executor, slots, busy, processed,
    failed, rss, ... for a supervisor; ``role: "scheduler"`` and ``leader`` for a
    scheduler. A process that stopped heartbeating drops out within three intervals."""
    return await state_workers.list_workers(*await connected(nats_url, namespace))


def list_workers_sync(
    nats_url: str | None = None, namespace: str | None = None
) -> list[dict[str, Any]]:
    return run_sync(list_workers(nats_url, namespace))


async def current_leader(
    nats_url: str | None = None, namespace: str | None = None
) -> dict[str, Any] | None:
    """The scheduler leader's lease record (id, host, pid, since, renewed_at), or None
    when no ``naq scheduler`` leads (none runs, or the lease lapsed)."""
    return await state_workers.current_leader(*await connected(nats_url, namespace))


def current_leader_sync(
    nats_url: str | None = None, namespace: str | None = None
) -> dict[str, Any] | None:
    return run_sync(current_leader(nats_url, namespace))


async def list_queues(nats_url: str | None = None, namespace: str | None = None) -> list[str]:
    """The namespace's queues (those a supervisor has served), sorted."""
    return await state_queues.list_queues(*await connected(nats_url, namespace))


def list_queues_sync(nats_url: str | None = None, namespace: str | None = None) -> list[str]:
    return run_sync(list_queues(nats_url, namespace))


async def queue_info(
    name: str, nats_url: str | None = None, namespace: str | None = None
) -> QueueInfo:
    """Waiting, running, redelivered, failed and delayed jobs of one queue, and how many
    supervisors ask for its jobs. Raises ``QueueNotFound`` for a queue the namespace
    knows nothing of, ``ConfigurationError`` for a bad name (before connecting).

    Reads every delayed job of the namespace to count this queue's: see
    ``naq.state.queues.scheduled_counts``.
    """
    validate_name("queue", name)  # bad input fails before anything connects
    return await state_queues.queue_info(*await connected(nats_url, namespace), name)


def queue_info_sync(
    name: str, nats_url: str | None = None, namespace: str | None = None
) -> QueueInfo:
    return run_sync(queue_info(name, nats_url, namespace))


async def queues_info(
    names: Iterable[str] | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> list[QueueInfo]:
    """:func:`queue_info` of several queues (every queue with None), reading what they
    share once: the delayed jobs are read once in all, not once per queue."""
    wanted = _queue_names(names, "queues_info")
    return await state_queues.queues_info(*await connected(nats_url, namespace), wanted)


def queues_info_sync(
    names: Iterable[str] | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> list[QueueInfo]:
    return run_sync(queues_info(names, nats_url, namespace))


def _queue_names(names: Iterable[str] | None, call: str) -> list[str] | None:
    """Checked queue names (None: every queue), before anything connects."""
    if isinstance(names, str):  # a lone name would be read as its letters
        raise ConfigurationError(f"{call} takes a list of queue names, got {names!r}")
    return None if names is None else [validate_name("queue", name) for name in names]


async def overview(
    names: Iterable[str] | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> Overview:
    """The namespace at one moment, typed: :func:`queues_info` of ``names`` (every
    queue with None), the live workers (id, role, busy/slots, RSS, heartbeat age,
    and the whole record) and the scheduler leader. ``naq info`` prints it, ``naq
    info --watch`` prints it again every interval, and a dashboard can show it as it
    is. Raises what :func:`queues_info` raises."""
    wanted = _queue_names(names, "overview")
    return await state_overview.overview(*await connected(nats_url, namespace), wanted)


def overview_sync(
    names: Iterable[str] | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> Overview:
    return run_sync(overview(names, nats_url, namespace))
