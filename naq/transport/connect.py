"""Connecting to NATS: the version check, a real flush barrier, and the ``Client`` bundle.

A ``Client`` is one nats-py connection with what naq hangs on it: the JetStream
context, the pipelined publisher, the namespaces declared on it, and bucket handles.
Pooling clients per event loop is ``naq.transport.pool``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoServersError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from naq.errors import ConfigurationError, NaqConnectionError, ServerVersionError
from naq.settings import Settings
from naq.signing import Signer
from naq.transport import compat
from naq.transport.declare import declare
from naq.transport.names import Layout
from naq.transport.publish import Publisher
from naq.transport.retry import set_window

log = logging.getLogger(__name__)

MIN_SERVER = (2, 12)
INITIAL_ATTEMPTS = 2
MAX_OUTSTANDING_PINGS = 2
"""Unanswered pings after which the connection is taken as lost and reconnected."""


class _ErrorLog:
    """nats-py's error callback: one line per failed attempt (its default logs a
    traceback each), with the settings' secrets masked, since nats-py's own exception
    text can hold the URL it tried. It keeps each distinct error: nats-py ends a
    failed first connect with "no servers available", and the reasons (a wrong
    password on one server, a refused connection on another) are the errors before
    it. A failed TLS handshake is remembered apart (see :func:`_first_connect`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.seen: list[str] = []
        self.tls_error: ssl.SSLError | None = None
        self.tls_failed = asyncio.Event()

    def describe(self, exc: BaseException) -> str:
        return self.settings.redact(str(exc) or type(exc).__name__)

    async def log(self, exc: Exception) -> None:
        text = self.describe(exc)
        if text not in self.seen:
            self.seen.append(text)
        log.warning("nats: %s", text)
        if isinstance(exc, ssl.SSLError):
            self.tls_error = exc
            self.tls_failed.set()


async def _first_connect(errors: _ErrorLog, **options: Any) -> NATS:
    """``nats.connect``, except that a failed TLS handshake ends it at once.

    After a handshake fails, nats-py 2.16 closes the plain socket it upgraded and
    waits for ever for it to close (nats-io/nats.py#718): the connect would hang
    instead of failing. A handshake that failed (an unknown CA, a name the
    certificate does not hold) fails again on retry, so the attempt is cancelled
    and the TLS error raised.
    """
    attempt = asyncio.create_task(nats.connect(**options))
    failed = asyncio.create_task(errors.tls_failed.wait())
    try:
        await asyncio.wait([attempt, failed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        if not attempt.done():
            attempt.cancel()
            await asyncio.wait([attempt])  # its cancellation is not ours to raise
    if attempt.cancelled() and errors.tls_error is not None:
        raise errors.tls_error
    return attempt.result()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for a custom CA or a client certificate; None for nats-py's
    default (the system's CAs), which a ``tls://`` URL alone gets.

    ``ssl.create_default_context`` keeps certificate and hostname checks on: a custom
    CA adds trust, it never turns verification off.
    """
    if settings.tls_ca_file is None and settings.tls_cert_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file)
        if settings.tls_cert_file is not None:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:  # unreadable or not PEM: which files, not why
        raise ConfigurationError(
            f"cannot load the TLS files (tls_ca_file, tls_cert_file, tls_key_file): {exc}"
        ) from None
    return context


def auth_options(settings: Settings) -> dict[str, Any]:
    """nats-py's connect arguments for the settings' credentials and TLS; only those
    that are set, so a plain ``nats://host`` connects exactly as before."""
    given: dict[str, Any] = {
        "user": settings.user,
        "password": settings.password,
        "token": settings.token,
        "nkeys_seed": settings.nkey_file,
        "user_credentials": settings.creds_file,
        "tls": tls_context(settings),
        "tls_hostname": settings.tls_hostname,
    }
    options = {key: value for key, value in given.items() if value is not None}
    if settings.tls_handshake_first:
        options["tls_handshake_first"] = True
    return options


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
    checks: plain NATS, even a server started without ``-js``, serves it. Credentials
    and TLS come from ``settings`` (:func:`auth_options`). An error names the URL with
    its secrets masked, and does not chain nats-py's exception, whose text may hold
    them.
    """
    auth = auth_options(settings)  # a bad TLS file is the user's error, not the server's
    errors = _ErrorLog(settings)
    try:
        nc = await _first_connect(
            errors,
            servers=settings.servers,
            name=name,
            max_reconnect_attempts=INITIAL_ATTEMPTS,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            connect_timeout=5,
            # nats-py's default is a ping every 2 minutes, so a silent partition (a
            # frozen server, a dropped route) went unnoticed for about 4 minutes.
            ping_interval=settings.ping_interval,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            error_cb=errors.log,  # nats-py takes coroutine functions only
            **auth,
            **options,
        )
    except Exception as exc:
        reason = errors.describe(exc)
        if isinstance(exc, NoServersError | ssl.SSLError) and errors.seen:
            reason = "; ".join(errors.seen)
        raise NaqConnectionError(
            f"cannot connect to NATS at {settings.safe_url}: {reason}"
        ) from None
    # nats-py applies max_reconnect_attempts to the first connect too: a wrong URL must
    # fail at once, a connection once made must never give up.
    nc.options["max_reconnect_attempts"] = -1
    if not jetstream:
        return nc
    try:
        info = compat.server_info(nc)
        check_server_version(str(info.get("version", "")), settings.safe_url)
        if not info.get("jetstream"):
            raise NaqConnectionError(
                f"the NATS server at {settings.safe_url} has JetStream disabled"
            )
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
    await compat.flush_pending(nc)
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
    await compat.send_unsubscribe(nc, sub)
    await flush(nc)
    await sub.drain()


class Client:
    """A connection with its JetStream context, publisher, and declared namespaces."""

    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        set_window(nc, settings.retry_window)  # what this connection's operations ride out
        self.publisher = Publisher(nc, on_no_stream=self.declare_again)
        self.settings = settings
        self.signer: Signer | None = settings.signer
        """Signs what this client writes (jobs, results) and checks what it reads."""
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

    async def declare_again(self) -> None:
        """Declare the namespaces used here again, now: a publish found no stream (one
        deleted behind our back is made again; one in a leader election is left as it
        is). Called by the publisher once per run of trouble."""
        async with self._declare_lock:
            for namespace in sorted(self._declared):
                await declare(self.js, Layout(namespace), self.settings)

    async def close(self) -> None:
        await self.publisher.close()
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # reconnecting (nothing to drain through), or a failed drain
                if not self.nc.is_connected:
                    compat.drop_pending(self.nc)  # see there: close() would fail on it
                await self.nc.close()
