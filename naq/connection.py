"""Connections: one NATS client per (event loop, URL), and one loop thread for the sync API.

Why a pool keyed by loop: a nats-py client belongs to the loop it was made on, and
the original naq broke by reusing a connection across ``anyio.run`` loops. Why a
single loop thread for the sync API: ``enqueue_sync`` from any thread hands its
coroutine to that loop, so a process keeps one connection however many threads
enqueue, and 100,000 calls cost no new loop or connection each.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from naq.errors import NaqConnectionError, ServerVersionError
from naq.layout import Layout, declare
from naq.publish import Publisher
from naq.settings import Settings

log = logging.getLogger(__name__)

MIN_SERVER = (2, 12)
INITIAL_ATTEMPTS = 2


async def _log_error(exc: Exception) -> None:
    """nats-py logs a traceback per failed attempt by default; one line says enough."""
    log.warning("nats: %s", exc or type(exc).__name__)


def check_server_version(version: str, url: str) -> None:
    """Refuse servers older than 2.12: naq's delayed jobs need message schedules."""
    core = version.lstrip("v").split("-")[0].split("+")[0]
    try:
        major, minor = (int(p) for p in core.split(".")[:2])
    except ValueError:
        raise ServerVersionError(
            f"cannot read the version {version!r} of the server at {url}"
        ) from None
    if (major, minor) < MIN_SERVER:
        raise ServerVersionError(
            f"naq needs nats-server 2.12 or newer; the server at {url} is {version}"
        )


async def connect(
    settings: Settings, name: str = "naq", *, jetstream: bool = True, **options: Any
) -> NATS:
    """Connect, check the server version, and keep reconnecting for ever on loss.

    ``jetstream=False`` (NASQueue's in-memory mode) skips the version and JetStream
    checks: plain NATS, even a server started without ``-js``, serves it.
    """
    try:
        nc = await nats.connect(
            servers=settings.servers,
            name=name,
            max_reconnect_attempts=INITIAL_ATTEMPTS,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            connect_timeout=5,
            error_cb=_log_error,
            **options,
        )
    except Exception as exc:
        raise NaqConnectionError(f"cannot connect to NATS at {settings.url}: {exc}") from exc
    # nats-py applies max_reconnect_attempts to the first connect too: a wrong URL must
    # fail at once, a connection once made must never give up.
    nc.options["max_reconnect_attempts"] = -1
    if not jetstream:
        return nc
    try:
        info = nc._server_info  # the server's INFO; nats-py exposes no public accessor
        check_server_version(str(info.get("version", "")), settings.url)
        if not info.get("jetstream"):
            raise NaqConnectionError(f"the NATS server at {settings.url} has JetStream disabled")
    except BaseException:
        await nc.close()
        raise
    return nc


async def flush(nc: NATS) -> None:
    """Return once the server has processed everything this client sent so far.

    nats-py's own ``flush()`` is not that barrier: it writes its PING straight to the
    socket, ahead of commands still in its pending buffer (a SUB, a PUB), so the PONG
    can come back before the server has seen them. Measured (nats-py 2.16, nats-server
    2.15.1): another client's publishes right after ``subscribe`` + ``flush()`` missed
    the subscription in 25 of 300 tries; after this barrier, in none of 300. Writing
    the buffer out first makes the PONG follow everything before it.
    """
    await nc._flush_pending(force_flush=True)
    await nc.flush()


async def drain(nc: NATS, sub: Any) -> None:
    """``sub.drain()`` made true: every message the server sent before it dropped
    interest is still handed to the subscription.

    nats-py's drain buffers the UNSUB, then flushes with the same PING-first flaw as
    ``flush``: the PONG can come back before the server saw the UNSUB, and what the
    server sends in between arrives after the subscription is gone (a job pulled by a
    draining supervisor then sat unanswered until ``ack_wait``). Sending the UNSUB
    behind a real barrier first means all of it has arrived before nats-py's drain
    (whose own UNSUB the server ignores) waits for the queue to empty.
    """
    await nc._send_unsubscribe(sub._id)
    await flush(nc)
    await sub.drain()


class Client:
    """A connection with its JetStream context, publisher, and declared namespaces."""

    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.publisher = Publisher(nc)
        self.settings = settings
        self._declared: set[str] = set()
        self._declare_lock = asyncio.Lock()
        self._buckets: dict[str, KeyValue] = {}

    async def layout(self, namespace: str) -> Layout:
        """The namespace's names, its streams declared once per connection."""
        if namespace not in self._declared:
            async with self._declare_lock:
                if namespace not in self._declared:
                    await declare(self.js, Layout(namespace), self.settings)
                    self._declared.add(namespace)
        return Layout(namespace)

    async def kv(self, bucket: str) -> KeyValue:
        """The bucket's handle, looked up once per connection: nats-py's lookup asks the
        server for the stream's info each time, a round trip per read otherwise. The
        handle holds only names, so it stays good if the bucket is made again."""
        handle = self._buckets.get(bucket)
        if handle is None:
            handle = self._buckets[bucket] = await self.js.key_value(bucket)
        return handle

    def forget_declared(self) -> None:
        """Declare again on next use (a stream was deleted behind our back)."""
        self._declared.clear()

    async def close(self) -> None:
        await self.publisher.close()
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:
                await self.nc.close()


class _Entry:
    __slots__ = ("client", "refs", "sticky")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.refs = 0
        self.sticky = False


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Entry]] = (
    weakref.WeakKeyDictionary()
)
_pool_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def acquire(settings: Settings, *, sticky: bool = False) -> Client:
    """The pooled client for this loop and URL.

    ``sticky`` (the module-level functions) keeps it open until
    :func:`close_connections`; otherwise (a ``Queue``) it is counted and closed
    when the last holder calls :func:`release`.
    """
    loop = asyncio.get_running_loop()
    pool = _pools.setdefault(loop, {})
    entry = pool.get(settings.url)
    if entry is None or entry.client.nc.is_closed:
        lock = _pool_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            entry = pool.get(settings.url)
            if entry is None or entry.client.nc.is_closed:
                entry = _Entry(Client(await connect(settings), settings))
                pool[settings.url] = entry
    if sticky:
        entry.sticky = True
    else:
        entry.refs += 1
    return entry.client


async def release(client: Client) -> None:
    pool = _pools.get(asyncio.get_running_loop(), {})
    entry = pool.get(client.settings.url)
    if entry is None or entry.client is not client:
        return
    entry.refs -= 1
    if entry.refs <= 0 and not entry.sticky:
        del pool[client.settings.url]
        await client.close()


async def close_connection(url: str) -> None:
    """Close this loop's pooled client for ``url``; its holders reconnect on next use."""
    entry = _pools.get(asyncio.get_running_loop(), {}).pop(url, None)
    if entry is not None:
        await entry.client.close()


async def close_connections() -> None:
    """Close every pooled connection of the running loop."""
    pool = _pools.pop(asyncio.get_running_loop(), {})
    for entry in pool.values():
        await entry.client.close()


class SyncRunner:
    """A daemon thread running one event loop, where every ``*_sync`` call is executed."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._pid = os.getpid()
                loop = new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="naq-sync-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run[R](self, coro: Coroutine[Any, Any, R]) -> R:
        loop = self._start()
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("a naq *_sync function was called from inside naq's sync loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or self._pid != os.getpid():
            return
        try:
            asyncio.run_coroutine_threadsafe(close_connections(), loop).result(timeout=5)
        except Exception as exc:  # the process is exiting; say why, do not raise
            log.debug("closing sync connections failed: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed: about 10-50% more throughput per the benchmarks."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


sync_runner = SyncRunner()
atexit.register(sync_runner.stop)


def run_sync[R](coro: Coroutine[Any, Any, R]) -> R:
    return sync_runner.run(coro)


def close_sync_connections(nats_url: str | None = None) -> None:
    """Close the sync API's connections; the next ``*_sync`` call reconnects.

    ``nats_url`` is accepted for the original naq's signature; all are closed.
    """
    del nats_url
    if sync_runner._loop is not None:
        run_sync(close_connections())
