"""naq: a fast, durable job queue for Python on NATS JetStream.

Producers call :func:`enqueue` (or ``enqueue_sync``); ``naq-supervise`` runs the jobs.
"""

from naq.connection import close_connections, close_sync_connections
from naq.errors import (
    ConfigurationError,
    JobExecutionError,
    JobFailed,
    JobNotFound,
    JobNotFoundError,
    NaqConnectionError,
    NaqError,
    PayloadTooLarge,
    PublishError,
    ResultTimeout,
    SerializationError,
    ServerVersionError,
)
from naq.executors.base import Call, Executor, Outcome, SlotInfo
from naq.job import Job, JobOptions
from naq.queue import (
    Queue,
    enqueue,
    enqueue_many,
    enqueue_many_sync,
    enqueue_sync,
    fetch_job_result,
    fetch_job_result_sync,
    fetch_job_results,
    fetch_job_results_sync,
    purge_queue,
    purge_queue_sync,
)
from naq.settings import DEFAULT_NATS_URL, Settings

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NATS_URL",
    "Call",
    "ConfigurationError",
    "Executor",
    "Job",
    "JobExecutionError",
    "JobFailed",
    "JobNotFound",
    "JobNotFoundError",
    "JobOptions",
    "NaqConnectionError",
    "NaqError",
    "Outcome",
    "PayloadTooLarge",
    "PublishError",
    "Queue",
    "ResultTimeout",
    "SerializationError",
    "ServerVersionError",
    "Settings",
    "SlotInfo",
    "__version__",
    "close_connections",
    "close_sync_connections",
    "enqueue",
    "enqueue_many",
    "enqueue_many_sync",
    "enqueue_sync",
    "fetch_job_result",
    "fetch_job_result_sync",
    "fetch_job_results",
    "fetch_job_results_sync",
    "purge_queue",
    "purge_queue_sync",
]
