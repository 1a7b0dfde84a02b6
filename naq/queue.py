"""The first seed's import path for the producer API (``from naq.queue import Queue,
enqueue_sync, close_sync_connections``), kept so its examples run as written.

The code lives in ``naq.producer``; this module only re-exports it.
"""

from naq.producer.api import (
    cancel_job,
    cancel_job_sync,
    close_connections,
    close_sync_connections,
    enqueue,
    enqueue_at,
    enqueue_at_sync,
    enqueue_in,
    enqueue_in_sync,
    enqueue_many,
    enqueue_many_sync,
    enqueue_sync,
    fetch_job_result,
    fetch_job_result_sync,
    fetch_job_results,
    fetch_job_results_sync,
    fetch_job_status,
    fetch_job_status_sync,
    purge_queue,
    purge_queue_sync,
)
from naq.producer.queue import Queue
from naq.producer.schedules import cancel_scheduled_job, cancel_scheduled_job_sync

__all__ = [
    "Queue",
    "cancel_job",
    "cancel_job_sync",
    "cancel_scheduled_job",
    "cancel_scheduled_job_sync",
    "close_connections",
    "close_sync_connections",
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
]
