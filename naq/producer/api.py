"""The module-level producer API of the first seed: ``enqueue``, ``fetch_job_result``, ...

Names follow the first seed's README so its examples run as written. Every function
takes ``nats_url=`` and otherwise uses ``NAQ_NATS_URL``; ``*_sync`` twins run the
async version on naq's one sync loop thread (``naq.transport.pool``). This is the only
module-level connection cache: a ``Queue`` per arguments, on the pooled connection,
kept open until ``close_connections()``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from naq.job import Job
from naq.producer.queue import CallSpec, Queue
from naq.settings import env_snapshot
from naq.state.status import JobStatus
from naq.transport.connect import Client
from naq.transport.names import Layout
from naq.transport.pool import close_connections, close_sync_connections, run_sync

__all__ = [
    "cancel_job",
    "cancel_job_sync",
    "close_connections",
    "close_sync_connections",
    "connected",
    "enqueue",
    "enqueue_at",
    "enqueue_at_sync",
    "enqueue_in",
    "enqueue_in_sync",
    "enqueue_many",
    "enqueue_many_sync",
    "enqueue_sync",
    "fetch_job_result",
    "fetch_job_result_sync",
    "fetch_job_results",
    "fetch_job_results_sync",
    "fetch_job_status",
    "fetch_job_status_sync",
    "purge_queue",
    "purge_queue_sync",
    "shared_queue",
]

_shared: dict[tuple[Any, ...], Queue] = {}


def shared_queue(
    queue_name: str | None = None, nats_url: str | None = None, namespace: str | None = None
) -> Queue:
    """A Queue on the pooled connection, kept open between calls.

    Cached by its arguments and the ``NAQ_*`` environment, so a loop of module-level
    calls builds its settings once, yet a changed environment is still seen.
    """
    key = (queue_name, nats_url, namespace, env_snapshot())
    queue = _shared.get(key)
    if queue is None:
        queue = Queue.pooled(queue_name, nats_url, namespace=namespace)
        if len(_shared) > 256:
            _shared.clear()
        _shared[key] = queue
    return queue


async def connected(
    nats_url: str | None = None, namespace: str | None = None
) -> tuple[Client, Layout]:
    """The shared connection and the namespace's names, for the producer API's modules
    that act on a namespace rather than a queue (schedules, the failed registry, the
    read API)."""
    queue = shared_queue(None, nats_url, namespace)
    return await queue.connection(), queue.layout


async def enqueue(
    func: Callable[..., Any],
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **kwargs: Any,
) -> Job:
    return await shared_queue(queue_name, nats_url).enqueue(func, *args, **kwargs)


def enqueue_sync(
    func: Callable[..., Any],
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **kwargs: Any,
) -> Job:
    return run_sync(enqueue(func, *args, queue_name=queue_name, nats_url=nats_url, **kwargs))


async def enqueue_many(
    calls: Iterable[CallSpec],
    *,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **options: Any,
) -> list[Job]:
    return await shared_queue(queue_name, nats_url).enqueue_many(calls, **options)


def enqueue_many_sync(
    calls: Iterable[CallSpec],
    *,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **options: Any,
) -> list[Job]:
    return run_sync(enqueue_many(calls, queue_name=queue_name, nats_url=nats_url, **options))


async def purge_queue(
    queue_name: str | None = None, nats_url: str | None = None, namespace: str | None = None
) -> int:
    """Remove every waiting job from the queue; returns how many were removed."""
    return await shared_queue(queue_name, nats_url, namespace).purge()


def purge_queue_sync(
    queue_name: str | None = None, nats_url: str | None = None, namespace: str | None = None
) -> int:
    return run_sync(purge_queue(queue_name, nats_url, namespace))


async def fetch_job_result(
    job_id: str,
    timeout: float | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> Any:
    """The job's return value; raises ``JobFailed``, ``JobNotFound`` or ``ResultTimeout``."""
    return await shared_queue(None, nats_url, namespace).fetch_result(job_id, timeout)


def fetch_job_result_sync(
    job_id: str,
    timeout: float | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> Any:
    return run_sync(fetch_job_result(job_id, timeout, nats_url, namespace))


async def fetch_job_results(
    job_ids: Iterable[str],
    timeout: float,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Results of many jobs through one watch: value or ``JobFailed`` per job id."""
    return await shared_queue(None, nats_url, namespace).fetch_results(job_ids, timeout)


def fetch_job_results_sync(
    job_ids: Iterable[str],
    timeout: float,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    return run_sync(fetch_job_results(job_ids, timeout, nats_url, namespace))


async def fetch_job_status(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> JobStatus:
    """Status, attempt count and timestamps of a job; ``JobNotFound`` if unknown."""
    return await shared_queue(None, nats_url, namespace).status(job_id)


def fetch_job_status_sync(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> JobStatus:
    return run_sync(fetch_job_status(job_id, nats_url, namespace))


async def cancel_job(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> bool:
    """A queued job never runs; a running one is stopped; its dependents are cancelled."""
    return await shared_queue(None, nats_url, namespace).cancel(job_id)


def cancel_job_sync(job_id: str, nats_url: str | None = None, namespace: str | None = None) -> bool:
    return run_sync(cancel_job(job_id, nats_url, namespace))


async def enqueue_at(
    when: datetime.datetime,
    func: Callable[..., Any],
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **kwargs: Any,
) -> Job:
    return await shared_queue(queue_name, nats_url).enqueue_at(when, func, *args, **kwargs)


def enqueue_at_sync(
    when: datetime.datetime,
    func: Callable[..., Any],
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **kwargs: Any,
) -> Job:
    return run_sync(
        enqueue_at(when, func, *args, queue_name=queue_name, nats_url=nats_url, **kwargs)
    )


async def enqueue_in(
    delay: datetime.timedelta | float,
    func: Callable[..., Any],
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **kwargs: Any,
) -> Job:
    return await shared_queue(queue_name, nats_url).enqueue_in(delay, func, *args, **kwargs)


def enqueue_in_sync(
    delay: datetime.timedelta | float,
    func: Callable[..., Any],
    *args: Any,
    queue_name: str | None = None,
    nats_url: str | None = None,
    **kwargs: Any,
) -> Job:
    return run_sync(
        enqueue_in(delay, func, *args, queue_name=queue_name, nats_url=nats_url, **kwargs)
    )
