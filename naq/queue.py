"""The first seed's import path for the producer API (``from naq.queue import Queue,
enqueue_sync, close_sync_connections``), kept so its examples run as written.

The code lives in ``naq.producer``; this module only re-exports it.
"""

from naq.producer.api import *  # noqa: F403  (its __all__ is the seed's producer API)
from naq.producer.api import __all__ as _api
from naq.producer.queue import Queue
from naq.producer.schedules import cancel_scheduled_job, cancel_scheduled_job_sync

__all__ = [*_api, "Queue", "cancel_scheduled_job", "cancel_scheduled_job_sync"]
