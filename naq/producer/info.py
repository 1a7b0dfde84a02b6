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
from naq.job import validate_job_id
from naq.producer.api import connected
from naq.settings import validate_name
from naq.state import (
    dependencies as state_dependencies,
    overview as state_overview,
    queues as state_queues,
    store,
    workers as state_workers,
)
from naq.state.overview import (  # the types these calls return
    LeaderInfo as LeaderInfo,
    LiveWorker as LiveWorker,
    Overview as Overview,
)
from naq.state.queues import (
    DurableQueueInfo as DurableQueueInfo,
    QueueInfo as QueueInfo,
    StoredJob as StoredJob,
)
from naq.state.record import ResultRecord as ResultRecord
from naq.transport.pool import run_sync
from naq.transport.streams import Page as Page


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


async def failed_counts(
    nats_url: str | None = None, namespace: str | None = None
) -> dict[str, int]:
    """Failed jobs per queue, from the failed stream's per-subject counts only (where
    :func:`queues_info` also reads every delayed job)."""
    return dict(await state_queues.failed_counts(*await connected(nats_url, namespace)))


async def delivered_counts(
    nats_url: str | None = None, namespace: str | None = None
) -> dict[str, int]:
    """Per queue, the jobs delivered so far (a server-kept counter: its change over time
    is the queue's rate). See ``naq.state.queues.delivered_counts``."""
    return await state_queues.delivered_counts(*await connected(nats_url, namespace))


async def stored_jobs_page(
    queue: str | None = None,
    *,
    delayed: bool = False,
    function: str | None = None,
    after: int = 0,
    limit: int = 50,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> tuple[list[StoredJob], int | None]:
    """One page of the jobs waiting in the job stream (ready, or delayed), oldest
    first, from stream sequence ``after + 1``; and the ``after`` of the next page.
    See ``naq.state.queues.page_stored_jobs``."""
    if queue is not None:
        validate_name("queue", queue)  # bad input fails before anything connects
    return await state_queues.page_stored_jobs(
        *await connected(nats_url, namespace),
        queue,
        delayed=delayed,
        function=function,
        after=after,
        limit=limit,
    )


async def records_page(
    statuses: Iterable[str] = ("finished", "failed", "cancelled"),
    queue: str | None = None,
    before: int | None = None,
    limit: int = 50,
    function: str | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> Page[ResultRecord]:
    """One page of job records (finished, failed, cancelled, ...), newest first, below
    the results stream's sequence ``before``. See ``naq.state.store.page_records``."""
    if queue is not None:
        validate_name("queue", queue)
    return await store.page_records(
        *await connected(nats_url, namespace), tuple(statuses), queue, before, limit, function
    )


async def job_record(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> ResultRecord | None:
    """The job's record in the results KV (its value left encoded), or None."""
    validate_job_id(job_id)
    return await store.read_record(*await connected(nats_url, namespace), job_id)


async def stored_job(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> StoredJob | None:
    """The job's message while it waits in the job stream (ready, delayed or held for
    its dependencies), or None: for showing a job's arguments before it ran."""
    validate_job_id(job_id)
    return await state_queues.stored_job(*await connected(nats_url, namespace), job_id)


async def durable_queues(
    nats_url: str | None = None, namespace: str | None = None
) -> list[DurableQueueInfo]:
    """Every durable NASQueue namespace on the server: messages, bytes and readers."""
    client, _ = await connected(nats_url, namespace)
    return await state_queues.durable_queues(client)


async def dependents(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> list[str]:
    """The jobs held until ``job_id`` ends (its waiters), or none."""
    validate_job_id(job_id)
    return await state_dependencies.waiters_of(*await connected(nats_url, namespace), job_id)
