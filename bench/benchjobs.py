"""Job functions for the benchmark, in their own module so a supervisor can import them.

The job does nothing: the benchmark measures what naq costs per job, not the job.
"""

from __future__ import annotations


async def noop() -> None:
    return None
