"""Reading every key of a small KV bucket once (workers, schedules).

One ordered consumer over the bucket, stopped when it has replayed what exists: no
keys() call per key, and no waiting for updates that are not coming.
"""

from __future__ import annotations

from nats.js.kv import KeyValue


async def current_values(kv: KeyValue) -> list[bytes]:
    watcher = await kv.watchall(ignore_deletes=True)
    values: list[bytes] = []
    try:
        async for entry in watcher:
            if entry is None:  # the replay of existing keys is over
                break
            if entry.value:
                values.append(entry.value)
            if entry.delta == 0:
                break
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return values
