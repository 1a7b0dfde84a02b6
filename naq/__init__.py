"""naq: a fast, durable job queue for Python on NATS JetStream.

Producers call :func:`enqueue` (or ``enqueue_sync``); ``naq-supervise`` runs the jobs.

Names are imported on first use (PEP 562): a process-executor child or a
subinterpreter that imports one naq module does not pay for the whole producer API
and the NATS client with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "naq.errors": [
        "BrokenExecutor",
        "ConfigurationError",
        "JobCancelled",
        "JobExecutionError",
        "JobFailed",
        "JobNotFound",
        "JobNotFoundError",
        "JobPending",
        "NaqConnectionError",
        "NaqError",
        "PayloadTooLarge",
        "PublishError",
        "QueueNotFound",
        "ResultTimeout",
        "Retry",
        "SerializationError",
        "ServerFull",
        "ServerVersionError",
    ],
    "naq.executors.base": [
        "Call",
        "Executor",
        "Outcome",
        "SlotInfo",
    ],
    "naq.job": [
        "Job",
        "JobOptions",
    ],
    "naq.middleware": [
        "JobContext",
        "Middleware",
        "WorkerInfo",
    ],
    "naq.nasqueue": [
        "NASQueue",
    ],
    "naq.producer.api": [
        "cancel_job",
        "cancel_job_sync",
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
    ],
    "naq.producer.failed": [
        "FailedJob",
        "get_failed",
        "get_failed_sync",
        "list_failed",
        "list_failed_sync",
        "purge_failed",
        "purge_failed_sync",
        "requeue_failed",
        "requeue_failed_sync",
    ],
    "naq.producer.info": [
        "LeaderInfo",
        "LiveWorker",
        "Overview",
        "QueueInfo",
        "current_leader",
        "current_leader_sync",
        "list_queues",
        "list_queues_sync",
        "list_workers",
        "list_workers_sync",
        "overview",
        "overview_sync",
        "queue_info",
        "queue_info_sync",
        "queues_info",
        "queues_info_sync",
    ],
    "naq.producer.queue": [
        "Queue",
    ],
    "naq.producer.schedules": [
        "cancel_recurring",
        "cancel_recurring_sync",
        "cancel_scheduled_job",
        "cancel_scheduled_job_sync",
        "list_schedules",
        "list_schedules_sync",
        "modify_scheduled_job",
        "modify_scheduled_job_sync",
        "pause_scheduled_job",
        "pause_scheduled_job_sync",
        "resume_scheduled_job",
        "resume_scheduled_job_sync",
        "schedule",
        "schedule_sync",
    ],
    "naq.settings": [
        "DEFAULT_NATS_URL",
        "Settings",
    ],
    "naq.state.status": [
        "JobStatus",
    ],
    "naq.transport.pool": [
        "close_connections",
        "close_sync_connections",
    ],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'naq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ serves
    from naq.errors import (
        BrokenExecutor as BrokenExecutor,
        ConfigurationError as ConfigurationError,
        JobCancelled as JobCancelled,
        JobExecutionError as JobExecutionError,
        JobFailed as JobFailed,
        JobNotFound as JobNotFound,
        JobNotFoundError as JobNotFoundError,
        JobPending as JobPending,
        NaqConnectionError as NaqConnectionError,
        NaqError as NaqError,
        PayloadTooLarge as PayloadTooLarge,
        PublishError as PublishError,
        QueueNotFound as QueueNotFound,
        ResultTimeout as ResultTimeout,
        Retry as Retry,
        SerializationError as SerializationError,
        ServerFull as ServerFull,
        ServerVersionError as ServerVersionError,
    )
    from naq.executors.base import (
        Call as Call,
        Executor as Executor,
        Outcome as Outcome,
        SlotInfo as SlotInfo,
    )
    from naq.job import (
        Job as Job,
        JobOptions as JobOptions,
    )
    from naq.middleware import (
        JobContext as JobContext,
        Middleware as Middleware,
        WorkerInfo as WorkerInfo,
    )
    from naq.nasqueue import (
        NASQueue as NASQueue,
    )
    from naq.producer.api import (
        cancel_job as cancel_job,
        cancel_job_sync as cancel_job_sync,
        enqueue as enqueue,
        enqueue_at as enqueue_at,
        enqueue_at_sync as enqueue_at_sync,
        enqueue_in as enqueue_in,
        enqueue_in_sync as enqueue_in_sync,
        enqueue_many as enqueue_many,
        enqueue_many_sync as enqueue_many_sync,
        enqueue_sync as enqueue_sync,
        fetch_job_result as fetch_job_result,
        fetch_job_result_sync as fetch_job_result_sync,
        fetch_job_results as fetch_job_results,
        fetch_job_results_sync as fetch_job_results_sync,
        fetch_job_status as fetch_job_status,
        fetch_job_status_sync as fetch_job_status_sync,
        purge_queue as purge_queue,
        purge_queue_sync as purge_queue_sync,
    )
    from naq.producer.failed import (
        FailedJob as FailedJob,
        get_failed as get_failed,
        get_failed_sync as get_failed_sync,
        list_failed as list_failed,
        list_failed_sync as list_failed_sync,
        purge_failed as purge_failed,
        purge_failed_sync as purge_failed_sync,
        requeue_failed as requeue_failed,
        requeue_failed_sync as requeue_failed_sync,
    )
    from naq.producer.info import (
        LeaderInfo as LeaderInfo,
        LiveWorker as LiveWorker,
        Overview as Overview,
        QueueInfo as QueueInfo,
        current_leader as current_leader,
        current_leader_sync as current_leader_sync,
        list_queues as list_queues,
        list_queues_sync as list_queues_sync,
        list_workers as list_workers,
        list_workers_sync as list_workers_sync,
        overview as overview,
        overview_sync as overview_sync,
        queue_info as queue_info,
        queue_info_sync as queue_info_sync,
        queues_info as queues_info,
        queues_info_sync as queues_info_sync,
    )
    from naq.producer.queue import (
        Queue as Queue,
    )
    from naq.producer.schedules import (
        cancel_recurring as cancel_recurring,
        cancel_recurring_sync as cancel_recurring_sync,
        cancel_scheduled_job as cancel_scheduled_job,
        cancel_scheduled_job_sync as cancel_scheduled_job_sync,
        list_schedules as list_schedules,
        list_schedules_sync as list_schedules_sync,
        modify_scheduled_job as modify_scheduled_job,
        modify_scheduled_job_sync as modify_scheduled_job_sync,
        pause_scheduled_job as pause_scheduled_job,
        pause_scheduled_job_sync as pause_scheduled_job_sync,
        resume_scheduled_job as resume_scheduled_job,
        resume_scheduled_job_sync as resume_scheduled_job_sync,
        schedule as schedule,
        schedule_sync as schedule_sync,
    )
    from naq.settings import (
        DEFAULT_NATS_URL as DEFAULT_NATS_URL,
        Settings as Settings,
    )
    from naq.state.status import (
        JobStatus as JobStatus,
    )
    from naq.transport.pool import (
        close_connections as close_connections,
        close_sync_connections as close_sync_connections,
    )
