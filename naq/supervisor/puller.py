"""Pulling one queue's jobs: at most as many as can start, delivered the moment they exist.

Why not nats-py's ``fetch``: with ``batch > 1`` it waits for the whole batch until
its timeout, so a lone job on an idle queue would wait seconds to start. The
puller instead keeps one pull request open on the server (``batch`` = free slots,
``expires`` = ``pull_expires``) and hands every message on as it arrives. When the
request ends (filled, expired, or lost with a restarted server) it opens the next,
sized to the room free then: free slots and the supervisor's look-ahead places
(``Jobs.lookahead``: jobs asked for while the slots are still busy, each started the
moment one frees). Credits not yet delivered count as taken, so the supervisor never
holds more than it can start soon; a message that arrives with no credit left (a
request that outlived a reconnect) is handed back at once.

An idle queue (its last request expired without a job) asks for one job only, so
with several queues an idle one holds one slot, not all of them, while the busy
ones use the rest; its first job makes it ask for every free slot again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from naq.supervised import backoff
from naq.transport.connect import drain

log = logging.getLogger(__name__)

LOST_AFTER = 2.0
"""Seconds past ``expires`` after which a silent request is taken as lost."""
BACKOFF_BASE = 0.25
BACKOFF_CAP = 5.0
"""The wait before asking again after a pull ended in trouble (``naq.supervised.backoff``):
a leader election answers pulls with 503 for seconds, and asking again at once spun."""


class Puller:
    def __init__(
        self,
        nc: NATS,
        queue: str,
        pull_subject: str,
        expires: float,
        free: Callable[[], int],
        slots_changed: asyncio.Event,
        deliver: Callable[[str, Msg], None],
        on_consumer_gone: Callable[[str], object],
        hand_back: Callable[[str, Msg], None],
    ) -> None:
        self.queue = queue
        self.credits = 0
        """Jobs asked for and not yet delivered."""
        self._nc = nc
        self._pull_subject = pull_subject
        self._expires = expires
        self._free = free
        self._slots_changed = slots_changed
        self._deliver = deliver
        self._on_consumer_gone = on_consumer_gone
        self._hand_back = hand_back
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._request_done = asyncio.Event()
        self._stopping = False
        self._delivered = 0
        """Jobs delivered for the open request."""
        self._failures = 0
        """Pull requests in a row that ended in trouble (a 503 during a leader election,
        a failed send); back to 0 once one delivers a job or ends normally."""
        self._back_off_due = False
        """The next request waits ``backoff(failures)`` first."""
        self._wake = asyncio.Event()
        """Cuts a backoff short: a stop, or a reconnect."""
        self.idle = asyncio.Event()
        """Set while the queue is idle (its last request expired empty)."""

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    def reset(self) -> None:
        """Forget the open request (after a reconnect): the next one is sent at once.

        The old request may still be open on the server (a short blip, the same
        server), so both may deliver: a message is accepted only against a credit,
        and one that finds none is handed back at once (``hand_back``: a nak that does
        not count as a run), never given to a full executor."""
        self._failures, self._back_off_due = 0, False
        self._wake.set()
        self._release()

    async def withdraw(self) -> None:
        """End the open request now: move to a new inbox, so the server, finding no
        interest in the old one, delivers nothing more to it. Jobs already on their way
        still arrive: run against a new request's credits, else handed back at once."""
        old, self._inbox = self._sub, self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        self._release()
        if old is not None:
            with contextlib.suppress(Exception):
                await drain(self._nc, old)

    def _release(self) -> None:
        """The open request is over: its undelivered credits are free for any queue."""
        self.credits = 0
        self._request_done.set()
        self._slots_changed.set()

    async def run(self) -> None:
        """Keep one pull request open while there is room; returns when stopped."""
        while not self._stopping:
            if self._back_off_due:
                await self._back_off()
                continue
            want = min(self._free(), 1) if self.idle.is_set() else self._free()
            if want <= 0:
                self._slots_changed.clear()
                await self._slots_changed.wait()
                continue
            self.credits = want
            self._delivered = 0
            self._request_done.clear()
            request = {"batch": want, "expires": int(self._expires * 1e9)}
            try:
                await self._nc.publish(
                    self._pull_subject, json.dumps(request).encode(), reply=self._inbox
                )
            except Exception as exc:  # disconnected: back off until the reconnect resets us
                log.warning("pull request for queue %s failed: %s", self.queue, exc)
                self.credits = 0
                self._trouble()
                continue
            started = time.monotonic()
            try:
                await asyncio.wait_for(self._request_done.wait(), self._expires + LOST_AFTER)
            except TimeoutError:
                log.debug(
                    "pull request for %s lost after %.1fs", self.queue, time.monotonic() - started
                )
                self._release()

    async def _back_off(self) -> None:
        """Wait before the next request after trouble, so a consumer in a leader election
        is not asked again at once, again and again; a stop or a reconnect ends it."""
        self._back_off_due = False
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._wake.wait(), backoff(self._failures, BACKOFF_BASE, BACKOFF_CAP)
            )

    def _trouble(self) -> None:
        self._failures += 1
        self._back_off_due = True

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            self._failures = 0
            self.idle.clear()
            if self.credits <= 0:  # beyond what was asked: see ``reset``
                self._hand_back(self.queue, msg)
                return
            self._delivered += 1
            self.credits = max(0, self.credits - 1)
            if self.credits == 0:
                self._request_done.set()
            self._deliver(self.queue, msg)
            return
        if status == "100":  # idle heartbeat
            return
        description = headers.get("Description", "")
        if status == "409" and "Consumer Deleted" in description:
            self._on_consumer_gone(self.queue)
        elif status in ("404", "408"):  # the consumer answers as it should
            self._failures = 0
            if status == "408" and self._delivered == 0:
                self.idle.set()  # expired with nothing delivered
        else:  # a 503 in a leader election, say: ask again after a backoff, not at once
            self._trouble()
            log.log(
                logging.WARNING if self._failures == 1 else logging.DEBUG,
                "pull on queue %s ended: %s %s; asking again after a backoff",
                self.queue,
                status,
                description,
            )
        self._release()

    async def stop(self) -> None:
        """Stop asking, and drop interest so the server delivers nothing more here.

        ``drain`` rather than ``unsubscribe``: jobs already on their way still reach
        the supervisor, which hands them back (nak) at once instead of leaving them
        unanswered until ``ack_wait``.
        """
        self._stopping = True
        self._wake.set()
        self._request_done.set()
        if self._sub is not None:
            try:
                await drain(self._nc, self._sub)
            except Exception as exc:
                log.debug("unsubscribing the puller of %s: %s", self.queue, exc)
            self._sub = None
        self.credits = 0
