"""Who is alive: the supervisors' and schedulers' heartbeats, and the scheduler leader.

Apart from the supervisor and scheduler packages on purpose: producers, the CLI and
job status read these without importing the roles that write them. The heartbeats
are the ``{ns}_workers`` bucket (``naq.heartbeat`` writes them); the leader is the
one key of the ``{ns}_leader`` bucket (``naq.scheduler.leader.Lease`` writes it).
"""

from __future__ import annotations

import json
from typing import Any

from naq.transport.connect import Client
from naq.transport.kv import current_values, get_value
from naq.transport.names import LEASE_KEY, Layout


async def list_workers(client: Client, layout: Layout) -> list[dict[str, Any]]:
    """Live worker records (expired ones are gone by TTL)."""
    return [json.loads(value) for value in await current_values(client, layout.workers_bucket)]


async def current_leader(client: Client, layout: Layout) -> dict[str, Any] | None:
    """The leader's lease record (id, host, pid, since, renewed_at), or None when no
    scheduler leads.

    A lease that was released (a delete marker), expired by its TTL, or never taken
    reads as None alike: each means that nobody leads now, and a reader must not fail
    for it.
    """
    value = await get_value(await client.kv(layout.leader_bucket), LEASE_KEY)
    if not value:
        return None
    record: dict[str, Any] = json.loads(value)
    return record


async def get_worker(client: Client, layout: Layout, worker_id: str) -> dict[str, Any] | None:
    """One worker's live record, or None when it has none (never written, removed at a
    clean exit, or expired by its TTL)."""
    value = await get_value(await client.kv(layout.workers_bucket), worker_id)
    if not value:
        return None
    record: dict[str, Any] = json.loads(value)
    return record
