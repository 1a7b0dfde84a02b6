"""NASQueue's durable mode: one work-queue stream per namespace, popped by priority.

::

    push(subject, priority=p) --js.publish--> stream NASQ_{ns}, subject {ns}.nasq.{p}.{subject}
            |  once stored: an empty core message on {ns}.nasq-stored.{p}
            v
    every popping client: "level p has a message" (wakes a waiting pop)
    pop(): for p = 9..0, if level p may hold one: pull 1 (no_wait) from consumer p{p},
           double-ack it (so it is popped once), return it

Why a consumer per priority level: JetStream delivers a consumer's messages in stream
order only, so priority comes from asking the highest non-empty level first. Which
levels may be non-empty is known without asking: after each stored push the pusher
announces its level with an empty core message, so a popping client hears of each
new message (and a waiting ``pop`` wakes) without polling or receiving the payload.
A pull answered "no messages" marks a level empty, unless a new message was announced
meanwhile. Only clients that pop listen: a producer pays nothing for announcements.
(The stream's own republish was measured first: its headers-only copies carry seven
headers each, whose parsing in nats-py cost a third of a durable push.)

Memory stays bounded whatever the backlog: a client holds at most the one message it
is popping. Messages survive client and server restarts (file storage); ``push``
retries with the same ``Nats-Msg-Id`` through a reconnect, so a retried push is
stored once; a popped message is acknowledged with a double ack before ``pop``
returns it, and one whose ack is not confirmed is not returned (JetStream delivers it
again after ``ack_wait``, ``Settings.ack_wait``), so no message is popped twice, and
one pulled by a process that dies before its pop returns is offered again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from naq.errors import ConfigurationError, NaqConnectionError, PublishError
from naq.nasqueue.messages import QueueMessage, received, too_large
from naq.settings import Settings
from naq.transport.connect import flush
from naq.transport.declare import ensure_stream, stream_limits
from naq.transport.names import NASQ_CAPTURE_GROUP, NasqLayout, namespaced
from naq.transport.pool import acquire, close_connection, run_sync
from naq.transport.streams import purge_subject

log = logging.getLogger(__name__)

PRIORITIES = range(10)
"""Priority levels: 0 (the default) to 9, higher popped first."""
REQUEST_TIMEOUT = 2.0
PUSH_PATIENCE = 60.0
"""Seconds ``push`` keeps retrying through a lost connection before it raises."""
RECHECK = 5.0
"""A waiting ``pop`` re-asks every level this often, in case an announcement was lost
(they travel on core NATS, at most once)."""
AUTO_ID = "nasq:"
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    TimeoutError,
)


class DurableQueue:
    def __init__(self, nc: NATS, namespace: str, settings: Settings) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._settings = settings
        self._ns = namespace
        self._names = NasqLayout(namespace)
        self._stream = self._names.stream
        self._base = self._names.base
        self._maybe = [True] * len(PRIORITIES)
        """Levels that may hold a message; all of them until asked."""
        self._announced = [0] * len(PRIORITIES)
        self._arrived = asyncio.Event()
        self._pop_lock = asyncio.Lock()
        self._inbox = ""
        self._pull_sub: Subscription | None = None
        self._note_sub: Subscription | None = None
        self._captures: dict[int, Subscription] = {}
        self._asked_sync = False

    async def start(self) -> None:
        """Declare the stream and its consumers (idempotent), then listen for news."""
        try:
            await ensure_stream(self._js, self._stream_config())
            for level in PRIORITIES:
                await self._js.add_consumer(self._stream, self._consumer_config(level))
        except nats.js.errors.APIError as exc:
            raise NaqConnectionError(
                f"cannot set up the durable queue {self._ns!r}: {exc.description}"
            ) from exc
        await self._new_inbox()

    def _stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self._stream,
            subjects=self._names.stream_subjects,
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=self._settings.replicas,
            duplicate_window=self._settings.duplicate_window,
            **stream_limits(self._settings),
        )

    def _consumer_config(self, level: int) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self._names.consumer(level),
            filter_subject=self._names.level_subjects(level),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            # a message pulled by a pop that never completed (its process died) is
            # offered again after this; the consumer is updated by each client that
            # connects, so the last one's setting holds
            ack_wait=self._settings.ack_wait,
        )

    async def _new_inbox(self) -> None:
        """A fresh reply subject for pulls: a late answer to an abandoned pull goes
        nowhere (a message in it is simply offered again after ``ack_wait``)."""
        old = self._pull_sub
        self._inbox = self._nc.new_inbox()
        self._pull_sub = await self._nc.subscribe(self._inbox)
        if old is not None:
            try:
                await old.unsubscribe()
            except Exception as exc:
                log.debug("dropping the old pull inbox: %s", exc)

    async def _listen(self) -> None:
        """Start hearing announcements (at the first pop); until now nothing was known."""
        self._note_sub = await self._nc.subscribe(
            self._names.stored_subject(None), cb=self._on_stored
        )
        self.recheck_all()

    async def _on_stored(self, msg: Msg) -> None:
        level = msg.subject.rsplit(".", 1)[1]
        if level.isdigit() and int(level) in PRIORITIES:
            self._heard(int(level))

    def _heard(self, level: int) -> None:
        self._announced[level] += 1
        self._maybe[level] = True
        self._arrived.set()

    def recheck_all(self) -> None:
        """Ask every level again: after a reconnect (announcements may have been missed),
        at the first pop, when a wait re-checks, or when the server counted a backlog."""
        self._maybe = [True] * len(PRIORITIES)
        self._arrived.set()

    async def push(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        priority: int,
        msg_id: str | None,
    ) -> bool:
        """Store one message; False when ``msg_id`` was already stored in the window."""
        if priority not in PRIORITIES:
            raise ConfigurationError(
                f"invalid priority {priority!r}: use an integer from 0 to {PRIORITIES[-1]}"
            )
        all_headers = dict(headers or {})
        all_headers["Nats-Msg-Id"] = msg_id or f"{AUTO_ID}{uuid.uuid4().hex}"
        target = self._names.message_subject(priority, subject)
        deadline = time.monotonic() + PUSH_PATIENCE
        attempt = 0
        while True:
            attempt += 1
            try:
                ack = await self._js.publish(
                    target, data, timeout=REQUEST_TIMEOUT, headers=all_headers
                )
            except nats.errors.MaxPayloadError as exc:
                raise too_large(len(data), self._nc.max_payload) from exc
            except nats.js.errors.APIError as exc:
                raise PublishError(f"the durable queue refused the message: {exc}") from exc
            except _TRANSIENT as exc:
                if time.monotonic() > deadline or self._nc.is_closed:
                    raise PublishError(
                        f"no confirmation that the message was stored after {attempt} "
                        f"attempts: {exc or type(exc).__name__}"
                    ) from exc
                await asyncio.sleep(min(0.1 * attempt, 1.0))
                continue
            self._heard(priority)  # this client's own pops need no announcement
            try:
                await self._nc.publish(self._names.stored_subject(priority), b"")
            except Exception as exc:  # stored all the same; pops re-check every RECHECK s
                log.debug("announcing a stored message: %s", exc)
            # A retry of a push that did land is reported as a duplicate of itself.
            return not ack.duplicate or attempt > 1

    async def pop(self, timeout: float | None) -> QueueMessage | None:
        deadline = time.monotonic() + (timeout or 0.0)
        async with self._pop_lock:
            if self._note_sub is None:
                await self._listen()
            while True:
                self._arrived.clear()
                message = await self._take()
                if message is not None:
                    return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await asyncio.sleep(0)  # a `while True: pop()` loop lets others run
                    return None
                try:
                    await asyncio.wait_for(self._arrived.wait(), min(remaining, RECHECK))
                except TimeoutError:
                    self.recheck_all()

    async def _take(self) -> QueueMessage | None:
        for level in reversed(PRIORITIES):
            if not self._maybe[level]:
                continue
            announced = self._announced[level]
            msg = await self._pull(level)
            drained = msg is None or msg.metadata.num_pending == 0
            if drained and self._announced[level] == announced:
                self._maybe[level] = False  # unless a new message was announced meanwhile
            if msg is None:
                continue
            try:
                await msg.ack_sync(timeout=REQUEST_TIMEOUT)
            except Exception as exc:
                log.warning("pop not confirmed (%s); the message will be offered again", exc)
                self._maybe[level] = True
                continue
            return self._message(msg, level)
        return None

    async def _pull(self, level: int) -> Msg | None:
        assert self._pull_sub is not None
        request = json.dumps({"batch": 1, "no_wait": True}).encode()
        subject = self._names.pull_subject(level)
        try:
            await self._nc.publish(subject, request, reply=self._inbox)
            msg = await self._pull_sub.next_msg(timeout=REQUEST_TIMEOUT)
        except _TRANSIENT as exc:
            log.debug("pull from level %d failed: %s", level, exc)
            if not self._nc.is_closed:
                await self._new_inbox()
            self._maybe[level] = True
            return None
        status = (msg.headers or {}).get("Status")
        if status is None:
            return msg
        if status not in ("404", "408"):
            log.warning("pull from level %d: %s %s", level, status, msg.headers)
        return None

    def _message(self, msg: Msg, level: int) -> QueueMessage:
        headers = dict(msg.headers or {})
        if headers.get("Nats-Msg-Id", "").startswith(AUTO_ID):
            del headers["Nats-Msg-Id"]
        stamp: datetime = msg.metadata.timestamp
        return received(
            msg.subject[len(self._base) + len(str(level)) + 1 :],
            msg.data,
            headers,
            timestamp=stamp.astimezone().replace(tzinfo=None),
        )

    async def subscribe(self, subject: str, queue_group: str) -> int:
        """Store what anyone publishes on ``{ns}.{subject}`` in the durable queue.

        The subscription always joins a queue group ("nasq-durable" unless named), so
        several durable clients store each message once.
        """
        ns_subject = namespaced(self._ns, subject)

        async def store(msg: Msg) -> None:
            headers = dict(msg.headers or {})
            msg_id = headers.pop("Nats-Msg-Id", None)
            try:
                await self.push(
                    msg.subject[len(self._ns) + 1 :], msg.data, headers or None, 0, msg_id
                )
            except Exception as exc:
                log.error("could not store a message from %s: %s", msg.subject, exc)

        sub = await self._nc.subscribe(
            ns_subject, queue=queue_group or NASQ_CAPTURE_GROUP, cb=store
        )
        await flush(self._nc)
        sid = max(self._captures, default=0) + 1
        self._captures[sid] = sub
        return sid

    async def unsubscribe(self, sid: int | None) -> bool:
        sids = list(self._captures) if sid is None else [sid] if sid in self._captures else []
        for s in sids:
            try:
                await self._captures.pop(s).drain()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.debug("unsubscribing: %s", exc)
        return bool(sids)

    def size(self) -> int:
        """The shared backlog, asked of the server: one round trip that blocks the caller.

        The seed's ``queue_size()`` is not a coroutine, so the question goes over naq's
        sync-API connection (its own loop thread) rather than this client's.
        """
        self._asked_sync = True
        backlog = run_sync(_backlog(self._settings, self._stream))
        if backlog:  # what the server just counted, the next pop must find
            self.recheck_all()
        return backlog

    def clear(self) -> int:
        self._asked_sync = True
        return run_sync(_purge(self._settings, self._stream, self._names.all_messages))

    async def close(self) -> None:
        if self._asked_sync:  # do not leave that connection reconnecting for ever
            await asyncio.to_thread(run_sync, close_connection(self._settings))
        await self.unsubscribe(None)
        for sub in (self._note_sub, self._pull_sub):
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    log.debug("closing: %s", exc)


async def _backlog(settings: Settings, stream: str) -> int:
    client = await acquire(settings, sticky=True)
    info = await client.js.stream_info(stream)
    return int(info.state.messages)


async def _purge(settings: Settings, stream: str, subject: str) -> int:
    return await purge_subject(await acquire(settings, sticky=True), stream, subject)
