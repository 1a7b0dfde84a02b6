"""Ending a KV watch without leaving its consumer on the server.

nats-py's ``KeyWatcher.stop()`` only unsubscribes. The watch's ordered consumer then
stays on the server until its inactivity threshold (five minutes) runs out, and since
nats-server 2.15 a stream takes 1,000 consumers at most: a supervisor or scheduler
restarting in a loop, or a scheduler changing leaders, would pile them up. This
deletes it as well; if the delete cannot be made (a lost connection), the threshold
still removes it. (Waiting for results uses no watch at all: ``naq.results``.)
"""

from __future__ import annotations

import logging

from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


async def stop_watch(watcher: KeyValue.KeyWatcher) -> None:
    await watcher.stop()  # type: ignore[no-untyped-call]
    # nats-py keeps the consumer's current name here, and updates it when the
    # ordered consumer is recreated after a gap.
    sub = watcher._sub
    if sub is None:
        return
    try:
        await sub._js.delete_consumer(sub._stream, sub._consumer)
    except Exception as exc:  # gone already, or the connection is: it idles out
        log.debug("watch consumer %s not deleted: %s", sub._consumer, exc)
