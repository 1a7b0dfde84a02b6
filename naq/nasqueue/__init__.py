"""NASQueue: the second seed's push/pop queue over NATS, with namespaces.

The API is the seed's, name for name. By default it behaves as the seed describes:
messages are collected in this process's memory (:mod:`naq.nasqueue.local`).
``NASQueue(..., durable=True)`` keeps the same calls but stores messages in a
JetStream stream of the namespace (:mod:`naq.nasqueue.durable`), which lifts the
seed's listed limitations: messages survive disconnects and restarts, several
processes share one queue, memory stays bounded, and ``push`` takes ``priority``
and ``msg_id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any, Self

from naq.errors import ConfigurationError, NaqConnectionError
from naq.nasqueue.durable import DurableQueue
from naq.nasqueue.local import LocalQueue
from naq.nasqueue.messages import QueueMessage, check_headers, encode
from naq.nasqueue.names import validate_namespace, validate_subject
from naq.redact import redact
from naq.settings import Settings
from naq.transport.connect import connect as nats_connect

__all__ = ["NASQueue", "QueueMessage"]

log = logging.getLogger(__name__)

RETRY_EVERY = 0.25
"""Seconds between connection attempts in :meth:`NASQueue.wait_connected`."""


def server_url(host: str, port: int) -> str:
    if "://" in host:
        return host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"nats://{host}:{int(port)}"


class NASQueue:
    """A push/pop queue in ``namespace`` on the NATS server at ``host``:``port``.

    ``settings`` (naq's :class:`~naq.settings.Settings`) is read from ``NAQ_*`` when
    not given; the durable mode takes its ``replicas`` and ``duplicate_window`` from it.
    The connection keywords (``user``, ``password``, ``token``, ``nkey_file``,
    ``creds_file``, ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file``,
    ``tls_hostname``, ``tls_handshake_first``) are the settings' fields of those names
    and override them; the host and port always win over ``nats_url``. ``host`` may
    also be a URL, or a comma-separated list of them (a cluster's nodes: a dead one is
    skipped), as ``NAQ_NATS_URL`` takes; ``port`` is then unused.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 4222,
        namespace: str = "default",
        *,
        durable: bool = False,
        settings: Settings | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        nkey_file: str | None = None,
        creds_file: str | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_hostname: str | None = None,
        tls_handshake_first: bool | None = None,
    ) -> None:
        self._namespace = validate_namespace(namespace, durable=durable)
        self._url = server_url(host, port)
        self._durable = durable
        self._settings = settings
        self._connection: dict[str, Any] = {
            "user": user,
            "password": password,
            "token": token,
            "nkey_file": nkey_file,
            "creds_file": creds_file,
            "tls_ca_file": tls_ca_file,
            "tls_cert_file": tls_cert_file,
            "tls_key_file": tls_key_file,
            "tls_hostname": tls_hostname,
            "tls_handshake_first": tls_handshake_first,
        }
        self._nc: Any = None
        self._backend: LocalQueue | DurableQueue | None = None
        self._connecting = asyncio.Lock()
        self.connect_error: str | None = None
        """Why the last :meth:`connect` returned False."""

    def __repr__(self) -> str:
        mode = "durable" if self._durable else "local"
        return f"<NASQueue {self._namespace} ({mode}) at {redact(self._url)}>"

    async def connect(self) -> bool:
        """Connect (and, when durable, declare the namespace's stream).

        Returns False instead of raising when the server cannot be reached or cannot
        serve the mode; :attr:`connect_error` says why.
        """
        async with self._connecting:  # concurrent calls make one connection
            if self.is_connected():
                return True
            try:
                await self._connect()
            except NaqConnectionError as exc:
                self.connect_error = str(exc)
                log.warning("NASQueue %s: %s", self._namespace, exc)
                return False
            self.connect_error = None
            return True

    def _resolved_settings(self) -> Settings:
        """The settings to connect with: given or from ``NAQ_*``, with this queue's URL
        and connection keywords. Built at connect time, so a wrong combination (a
        password in the URL and another as a keyword) is a ``ConfigurationError`` there."""
        given = {"nats_url": self._url, **self._connection}
        if self._settings is None:
            return Settings.from_env(**given)
        return self._settings.replace(**given)

    async def _connect(self) -> None:
        settings = self._settings = self._resolved_settings()
        nc = await nats_connect(
            settings,
            name=f"nasqueue:{self._namespace}",
            jetstream=self._durable,
            reconnected_cb=self._reconnected,
        )
        backend: LocalQueue | DurableQueue
        try:
            if self._durable:
                backend = DurableQueue(nc, self._namespace, settings)
                await backend.start()
            else:  # what was received before a disconnect is still popped first
                kept = self._backend.items if isinstance(self._backend, LocalQueue) else None
                backend = LocalQueue(nc, self._namespace, kept)
        except BaseException:
            await nc.close()
            raise
        self._nc, self._backend = nc, backend

    async def _reconnected(self) -> None:
        if isinstance(self._backend, DurableQueue):
            self._backend.recheck_all()

    async def wait_connected(self, timeout: float = 5.0) -> bool:
        """True once connected, trying every 0.25 s (say, while the server starts) up to
        ``timeout`` seconds; False if it never connects."""
        deadline = time.monotonic() + timeout
        while not self.is_connected():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._nc is None or self._nc.is_closed:
                try:
                    if await asyncio.wait_for(self.connect(), remaining):
                        return True
                except TimeoutError:
                    return False
            await asyncio.sleep(min(RETRY_EVERY, max(0.0, deadline - time.monotonic())))
        return True

    async def disconnect(self) -> None:
        """Close the connection. Messages already received stay poppable (in memory)."""
        nc, self._nc = self._nc, None
        if self._backend is not None:
            await self._backend.close()
        if isinstance(self._backend, DurableQueue):
            self._backend = None
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception as exc:  # reconnecting: nothing to drain, just close
                log.debug("NASQueue %s: drain: %s", self._namespace, exc)
                try:
                    await nc.close()
                except Exception as exc:  # nats-py can fail closing mid-reconnect
                    log.debug("NASQueue %s: close: %s", self._namespace, exc)

    def is_connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    def _live(self) -> LocalQueue | DurableQueue:
        if self._backend is None or self._nc is None or self._nc.is_closed:
            raise NaqConnectionError(
                f"NASQueue {self._namespace!r} is not connected: call connect() first"
            )
        return self._backend

    async def push(
        self,
        subject: str,
        message: Any,
        headers: dict[str, str] | None = None,
        *,
        priority: int | None = None,
        msg_id: str | None = None,
    ) -> bool:
        """Publish ``message`` on ``subject`` in the namespace.

        Bytes are sent as they are, strings UTF-8 encoded, anything else as JSON.
        ``priority`` (0-9, higher popped first) and ``msg_id`` (duplicates within the
        window are dropped; returns False for one) need ``durable=True``.
        """
        validate_subject(subject)
        data = encode(message)
        checked = check_headers(headers)
        backend = self._live()
        if isinstance(backend, DurableQueue):
            return await backend.push(subject, data, checked, priority or 0, msg_id)
        if priority is not None or msg_id is not None:
            raise ConfigurationError(
                "priority and msg_id need a stored queue: NASQueue(..., durable=True)"
            )
        return await backend.push(subject, data, checked)

    async def pop(self, timeout: float | None = None) -> QueueMessage | None:
        """The next message, or None if none comes within ``timeout`` seconds (None:
        do not wait)."""
        if self._backend is None:
            raise NaqConnectionError(f"NASQueue {self._namespace!r} was never connected")
        backend = self._backend if isinstance(self._backend, LocalQueue) else self._live()
        return await backend.pop(timeout)

    async def subscribe_and_queue(self, subject: str, queue_group: str = "") -> int:
        """Queue what is published on ``subject`` in the namespace; returns its id.

        Subscribers sharing a ``queue_group`` split the messages between them. In
        durable mode the messages are stored in the namespace's queue (once, however
        many durable clients subscribe).
        """
        validate_subject(subject, wildcards=True)
        if queue_group and any(c in queue_group for c in " \t\r\n*>"):
            raise ConfigurationError(f"invalid queue group {queue_group!r}")
        return await self._live().subscribe(subject, queue_group)

    async def unsubscribe(self, sid: int | None = None) -> bool:
        """End subscription ``sid``, or all of them; False if there was none."""
        if self._backend is None:
            return False
        return await self._backend.unsubscribe(sid)

    def queue_size(self) -> int:
        """Messages waiting: this client's, or in durable mode the namespace's backlog
        shared by every client (asked of the server)."""
        if self._backend is None:
            return 0
        return self._backend.size()

    def clear_queue(self) -> int:
        """Drop every waiting message (durable: the namespace's); returns how many."""
        if self._backend is None:
            return 0
        return self._backend.clear()

    def get_namespace(self) -> str:
        return self._namespace

    async def __aenter__(self) -> Self:
        if not await self.connect():
            raise NaqConnectionError(f"cannot connect to {redact(self._url)}: {self.connect_error}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()
