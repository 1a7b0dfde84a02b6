"""Recurring jobs: schedules in KV, and the leader-elected role that fires them.

``current_leader`` reads the lease (``naq.state.workers``); it is re-exported here
because it was importable from this package before it moved.
"""

from naq.scheduler.leader import Lease
from naq.scheduler.scheduler import Scheduler, run_job_id
from naq.state.schedules import Schedule, ScheduleNotFound
from naq.state.workers import current_leader

__all__ = ["Lease", "Schedule", "ScheduleNotFound", "Scheduler", "current_leader", "run_job_id"]
