"""The seed's queue: messages collected in this process's memory.

When does a push land in the pusher's own queue? The seed's two tests settle it:
``push`` with no subscription is popped at once by the same client, and ``push`` to a
subject the client is subscribed to is popped once, not twice. So the rule is: a push
is published on NATS, and also queued locally *unless* one of this client's own
subscriptions matches its subject; then it arrives once, through that subscription
(for a queue-group subscription, at whichever member the server picks).

Like the seed says, these messages live only here: a process that exits loses what it
has not popped. ``NASQueue(durable=True)`` keeps them in JetStream instead.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from naq.errors import NaqConnectionError
from naq.nasqueue.messages import QueueMessage, received, too_large
from naq.nasqueue.names import matches
from naq.transport.connect import flush
from naq.transport.names import namespaced

log = logging.getLogger(__name__)


class LocalQueue:
    def __init__(
        self, nc: NATS, namespace: str, kept: collections.deque[QueueMessage] | None = None
    ) -> None:
        """``kept``: messages from before a reconnect, still to be popped."""
        self._nc = nc
        self._prefix = namespaced(namespace, "")
        self._items: collections.deque[QueueMessage] = kept or collections.deque()
        self._arrived = asyncio.Event()
        self._subs: dict[int, tuple[str, Subscription]] = {}
        self._sids = itertools.count(1)

    async def push(self, subject: str, data: bytes, headers: dict[str, str] | None) -> bool:
        try:
            await self._nc.publish(self._prefix + subject, data, headers=headers)
        except nats.errors.MaxPayloadError as exc:
            raise too_large(len(data), self._nc.max_payload) from exc
        except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionClosedError) as exc:
            # nats-py buffers publishes while it reconnects, up to a limit
            raise NaqConnectionError(f"cannot publish on {subject!r}: {exc}") from exc
        if not any(matches(pattern, subject) for pattern, _ in self._subs.values()):
            self._append(received(subject, data, headers))
        return True

    def _append(self, message: QueueMessage) -> None:
        self._items.append(message)
        self._arrived.set()

    async def _on_msg(self, msg: Msg) -> None:
        subject = msg.subject.removeprefix(self._prefix)
        self._append(received(subject, msg.data, msg.headers, msg.reply))

    async def pop(self, timeout: float | None) -> QueueMessage | None:
        """Oldest message, waiting up to ``timeout`` seconds for one.

        An empty queue yields to the loop at least once, so ``while True: await
        queue.pop()`` (the seed's log processor) lets the subscriptions it waits for run.
        """
        if self._items:
            return self._items.popleft()
        await asyncio.sleep(0)
        deadline = time.monotonic() + (timeout or 0.0)
        while not self._items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return None
        return self._items.popleft()

    async def subscribe(self, subject: str, queue_group: str) -> int:
        sub = await self._nc.subscribe(self._prefix + subject, queue=queue_group, cb=self._on_msg)
        await flush(self._nc)  # active at the server when this returns
        sid = next(self._sids)
        self._subs[sid] = (subject, sub)
        return sid

    async def unsubscribe(self, sid: int | None) -> bool:
        """Stop one subscription (or all); ``drain`` so messages on their way still land."""
        sids = list(self._subs) if sid is None else [sid] if sid in self._subs else []
        for s in sids:
            _, sub = self._subs.pop(s)
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except Exception as exc:  # the connection is gone: nothing more can arrive
                log.debug("unsubscribing %s: %s", sub.subject, exc)
        return bool(sids)

    def size(self) -> int:
        return len(self._items)

    @property
    def items(self) -> collections.deque[QueueMessage]:
        return self._items

    def clear(self) -> int:
        count = len(self._items)
        self._items.clear()
        return count

    async def close(self) -> None:
        await self.unsubscribe(None)
