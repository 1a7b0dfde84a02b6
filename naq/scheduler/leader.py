"""The scheduler's leader lease: one KV key in ``{ns}_leader`` with a per-key TTL.

- acquire: create-if-absent (``Nats-Expected-Last-Subject-Sequence: 0``), so of two
  contenders exactly one wins, atomically on the server;
- renew: rewrite the key expecting the revision we hold; a stale revision means
  someone else holds it now, and we stop leading;
- expiry: the key's ``Nats-TTL``; a leader that died or froze loses it by itself.

A leader only acts while its lease is certainly its own: :meth:`Lease.valid` counts
the TTL from when the last successful renew was *sent*, by the local monotonic
clock, so a leader frozen past its lease (SIGSTOP, a long GC pause) sees, when it
wakes, that it may no longer fire, before it learns so from the server.

Standbys watch the key and try at once when it is deleted. Expiry by TTL produces
no watch event (the bucket has no limit markers), so a standby also tries when the
last write it saw is one TTL old.

Who leads is read by ``naq.state.workers.current_leader``, beside the workers'
heartbeats: readers need not import the role that writes the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from naq.supervised import finish
from naq.transport.connect import Client
from naq.transport.kv import delete, is_stale_revision, stop_watch
from naq.transport.names import LEASE_KEY, Layout
from naq.transport.retry import retry

log = logging.getLogger(__name__)

RETRY_AFTER_EXPIRY = 0.2
"""The server removes an expired key a little late (0.3 s seen): try again this often."""


class Lease:
    def __init__(
        self, client: Client, layout: Layout, holder_id: str, ttl: float, renew_interval: float
    ) -> None:
        self.client = client
        self.layout = layout
        self.holder_id = holder_id
        self.ttl = max(1, math.ceil(ttl))
        self.renew_interval = renew_interval
        self.revision: int | None = None
        self._expires_at = 0.0
        self._since = 0.0
        self._seen_at = time.monotonic()
        self._freed = asyncio.Event()
        self._kv: KeyValue | None = None
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self.revision is not None

    def valid(self) -> bool:
        """Held, and certainly not expired on the server yet."""
        margin = min(1.0, self.ttl / 10)
        return self.held and time.monotonic() < self._expires_at - margin

    def _value(self) -> bytes:
        return json.dumps(
            {
                "id": self.holder_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": self._since,
                "renewed_at": time.time(),
            }
        ).encode()

    async def kv(self) -> KeyValue:
        """The lease bucket's handle; its lookup rides through a leader election (a
        scheduler started with its cluster, or just after it declared the bucket)."""
        if self._kv is None:
            self._kv = await retry(
                lambda: self.client.kv(self.layout.leader_bucket),
                what="looking up the scheduler lease bucket",
                nc=self.client.nc,
            )
        return self._kv

    async def try_acquire(self) -> bool:
        kv = await self.kv()
        sent = time.monotonic()
        self._since = time.time()
        try:
            # Through no-responders and timeouts while the bucket elects a leader. A try
            # that took the lease and whose answer was lost makes the next one fail as
            # "held by another": this scheduler then waits out its own TTL, and never
            # leads without knowing it.
            revision = await retry(
                lambda: kv.create(LEASE_KEY, self._value(), msg_ttl=self.ttl),
                what="taking the scheduler lease",
                nc=self.client.nc,
            )
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            # Held by another; or it expired between nats-py's refused create and its
            # re-read of the key, which then raises not-found: the next try wins it.
            return False
        self.revision, self._expires_at = revision, sent + self.ttl
        log.info("scheduler %s is the leader", self.holder_id)
        return True

    async def renew(self) -> bool:
        """Extend the lease; False (and no longer held) if it is someone else's now."""
        if self.revision is None:
            return False
        sent = time.monotonic()
        headers = {"Nats-Expected-Last-Subject-Sequence": str(self.revision)}
        try:
            ack = await self.client.js.publish(
                self.layout.kv_subject(self.layout.leader_bucket, LEASE_KEY),
                self._value(),
                headers=headers,
                msg_ttl=self.ttl,
                timeout=max(0.5, min(self.renew_interval, self._expires_at - sent)),
            )
        except APIError as exc:
            if is_stale_revision(exc):
                log.warning("scheduler %s lost its lease", self.holder_id)
                self.revision = None
                return False
            log.warning("renewing the scheduler lease failed: %s", exc)
            return self.valid()
        except Exception as exc:  # timeout, reconnecting: the lease may still be ours
            log.warning("renewing the scheduler lease failed: %s", exc or type(exc).__name__)
            return self.valid()
        self.revision, self._expires_at = ack.seq, sent + self.ttl
        return True

    def step_down(self) -> None:
        self.revision = None

    async def release(self) -> None:
        """Give the lease up at once so a standby need not wait for the TTL."""
        revision, self.revision = self.revision, None
        if revision is None:
            return
        try:
            kv = await self.kv()
            await delete(kv, LEASE_KEY, revision, self.client.settings.marker_ttl)
        except Exception as exc:  # lost already, or disconnected: the TTL frees it
            log.debug("releasing the scheduler lease: %s", exc)

    async def start_watching(self) -> None:
        kv = await self.kv()
        watcher = await kv.watch(LEASE_KEY)

        async def follow() -> None:
            try:
                async for entry in watcher:
                    if entry is None:
                        continue
                    self._seen_at = time.monotonic()
                    if entry.operation in ("DEL", "PURGE"):
                        self._freed.set()
            finally:
                await stop_watch(watcher)

        self._watch_task = asyncio.create_task(follow())

    async def stop_watching(self) -> None:
        if self._watch_task is not None:
            await finish([self._watch_task], cancel=True)
            self._watch_task = None

    async def wait_for_chance(self) -> None:
        """Standby: return when the lease may be free (deleted, or one TTL unrenewed)."""
        deadline = self._seen_at + self.ttl
        timeout = max(RETRY_AFTER_EXPIRY, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), timeout)
        self._freed.clear()

    async def acquire(self) -> None:
        """Wait until this process holds the lease."""
        while not await self.try_acquire():
            await self.wait_for_chance()
