"""Reading the workers KV: which supervisors are alive, and what they run.

Apart from the supervisor package on purpose: producers, the CLI and job status read
it without importing the supervisor.
"""

from __future__ import annotations

import json
from typing import Any

from naq.transport.connect import Client
from naq.transport.kv import current_values
from naq.transport.names import Layout


async def list_workers(client: Client, layout: Layout) -> list[dict[str, Any]]:
    """Live worker records (expired ones are gone by TTL)."""
    return [json.loads(value) for value in await current_values(client, layout.workers_bucket)]
