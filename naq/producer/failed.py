"""The failed-job registry's public calls: list, get, requeue and purge failed jobs.

Each takes ``nats_url=`` and ``namespace=`` like the rest of the producer API and
runs on its shared connection; ``*_sync`` twins run on naq's sync loop thread. The
registry itself (reading and changing the failed stream) is ``naq.state.failed``.
"""

from __future__ import annotations

from collections.abc import Iterable

from naq.job import validate_job_id
from naq.producer.api import connected
from naq.state import failed as registry
from naq.state.failed import FailedJob as FailedJob  # the type these calls return
from naq.transport.pool import run_sync
from naq.transport.streams import Page as Page  # what failed_page returns


async def list_failed(
    queue: str | None = None,
    limit: int | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> list[FailedJob]:
    """Failed jobs, oldest first: all of them, or one queue's; at most ``limit``."""
    registry.check_queue(queue)  # bad input fails before anything connects
    registry.check_limit(limit)
    return await registry.list_failed(*await connected(nats_url, namespace), queue, limit)


def list_failed_sync(
    queue: str | None = None,
    limit: int | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> list[FailedJob]:
    return run_sync(list_failed(queue, limit, nats_url, namespace))


async def failed_page(
    queue: str | None = None,
    function: str | None = None,
    before: int | None = None,
    limit: int = 50,
    job_id: str | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> Page[FailedJob]:
    """One page of failed jobs, newest first, below stream sequence ``before`` (the
    previous page's ``older``); see ``naq.state.failed.page_failed``."""
    registry.check_queue(queue)  # bad input fails before anything connects
    if job_id is not None:
        validate_job_id(job_id)
    return await registry.page_failed(
        *await connected(nats_url, namespace), queue, function, before, limit, job_id
    )


async def failed_at(
    seq: int, nats_url: str | None = None, namespace: str | None = None
) -> FailedJob:
    """The failed stream's entry at sequence ``seq``; ``JobNotFound`` when it is gone."""
    return await registry.failed_at(*await connected(nats_url, namespace), seq)


async def get_failed(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> FailedJob:
    """The failed stream's entry for ``job_id``; the newest if it failed more than once.

    Raises ``JobNotFound`` when the job is not there: it never failed for good, was
    requeued or purged, or its entry aged out of the stream.
    """
    validate_job_id(job_id)  # bad input fails before anything connects
    return await registry.get_failed(*await connected(nats_url, namespace), job_id)


def get_failed_sync(
    job_id: str, nats_url: str | None = None, namespace: str | None = None
) -> FailedJob:
    return run_sync(get_failed(job_id, nats_url, namespace))


async def requeue_failed(
    job_ids: Iterable[str] | None = None,
    *,
    all: bool = False,
    queue: str | None = None,
    function: str | None = None,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> list[str]:
    """Put failed jobs back on their queues to run again; returns the job ids, in order.

    Each job keeps its id, so its new result replaces the old failure under that id.
    With ``all=True``, ``queue`` and ``function`` narrow it to the matching entries.
    See ``naq.state.failed.requeue_failed`` for what ``all=True`` refuses.
    """
    registry.requeue_ids(job_ids, all)  # bad input fails before anything connects
    registry.check_queue(queue)
    client, layout = await connected(nats_url, namespace)
    return await registry.requeue_failed(
        client, layout, job_ids, all=all, queue=queue, function=function
    )


def requeue_failed_sync(
    job_ids: Iterable[str] | None = None,
    *,
    all: bool = False,
    nats_url: str | None = None,
    namespace: str | None = None,
) -> list[str]:
    return run_sync(requeue_failed(job_ids, all=all, nats_url=nats_url, namespace=namespace))


async def purge_failed(
    queue: str | None = None, nats_url: str | None = None, namespace: str | None = None
) -> int:
    """Remove every failed entry, or one queue's; returns how many were removed.

    The jobs' failed results stay in the results KV until they expire: the jobs did
    fail, and their producers may still ask.
    """
    registry.check_queue(queue)  # bad input fails before anything connects
    return await registry.purge_failed(*await connected(nats_url, namespace), queue)


def purge_failed_sync(
    queue: str | None = None, nats_url: str | None = None, namespace: str | None = None
) -> int:
    return run_sync(purge_failed(queue, nats_url, namespace))
