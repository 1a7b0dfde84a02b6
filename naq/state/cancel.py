"""``cancel_job``: a queued job never runs; a running one is stopped by its executor.

Order matters. The ``cancelled`` record is written first, never over a final one
(the write expects the record read at the start; one that turned final meanwhile
stays, and the job is not cancelled), so a supervisor that picks
the job up from now on (a redelivery, a race with the purge) sees it. Then the job's
message is purged from its queue (and its schedule), and the job id is broadcast to
every supervisor: one running it asks its executor to stop it (task cancel, child
kill; threads are cooperative), and one about to start it skips it. Jobs that depend
on it are cancelled too.
"""

from __future__ import annotations

from naq.errors import JobNotFound
from naq.state import record as records
from naq.state.dependencies import (
    CANCELLED_TTL,
    cancel_held,
    dependency_ended,
    held_dependents,
)
from naq.state.record import RunFacts
from naq.state.status import job_status
from naq.state.store import read_record_seq, store_unless_final
from naq.transport.connect import Client, flush
from naq.transport.names import Layout
from naq.transport.streams import purge_subject


async def cancel(client: Client, layout: Layout, job_id: str, reason: str = "cancelled") -> bool:
    """True if the job was stopped or will never run; False if unknown or already over."""
    record, seq = await read_record_seq(client, layout, job_id)
    if record is not None and record.final:
        return False
    if await cancel_held(client, layout, job_id, reason):
        return True
    try:
        status = await job_status(client, layout, job_id)
    except JobNotFound:
        return False
    if status.status not in ("queued", "scheduled", "running"):
        return False
    facts = RunFacts(
        queue=status.queue or "",
        enqueued_at=status.enqueued_at or 0.0,
        attempt=status.attempt,
        started_at=status.started_at or 0.0,
    )
    # Expecting the record read above: a job that finished or failed meanwhile keeps
    # its outcome (and its dependents theirs), and nothing below is done.
    _, kept = await store_unless_final(
        client, layout, records.cancelled(job_id, facts, reason), CANCELLED_TTL, seq
    )
    if kept is not None:
        return False
    await purge_subject(client, layout.stream, layout.any_queue_subject(job_id))
    await purge_subject(client, layout.stream, layout.sched_subject(job_id))
    await purge_subject(client, layout.stream, layout.held_subject(job_id))
    await client.nc.publish(layout.cancel_subject, job_id.encode())
    await flush(client.nc)
    await dependency_ended(client, layout, job_id, "cancelled", reason)
    # Dependents no supervisor has taken in yet are not waiters in the deps bucket:
    # cancel them here too, so the chain is cancelled now rather than at their intake.
    for dependent in await held_dependents(client, layout, job_id):
        await cancel(client, layout, dependent, f"dependency {job_id} cancelled: {reason}")
    return True
