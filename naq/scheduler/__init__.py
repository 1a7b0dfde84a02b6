"""Recurring jobs: schedules in KV, and the leader-elected role that fires them."""

from naq.scheduler.leader import Lease, current_leader
from naq.scheduler.scheduler import Scheduler, run_job_id
from naq.state.schedules import Schedule, ScheduleNotFound

__all__ = ["Lease", "Schedule", "ScheduleNotFound", "Scheduler", "current_leader", "run_job_id"]
