"""Every access naq makes to nats-py's private members, in one place.

nats-py offers no public way to do these things, and naq needs them (see each
function for why). Keeping them here means an upgrade of nats-py is checked in one
file, and the pin (``nats-py>=2.16,<3``) is kept honest: each was checked against
the version named in ``CHECKED_WITH``, and ``tests/unit/test_compat.py`` fails on a
nats-py release where one of the members is gone.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, ConnectionDrainingError, OutboundBufferLimitError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

CHECKED_WITH = "2.16.0"
"""The nats-py release every accessor below was read against."""


def server_info(nc: NATS) -> dict[str, Any]:
    """The server's INFO (version, JetStream, max_payload, ...): no public accessor."""
    info: dict[str, Any] = nc._server_info
    return info


async def flush_pending(nc: NATS) -> None:
    """Write the client's pending buffer to the socket now (``naq.transport.connect.flush``
    needs it ahead of its PING)."""
    await nc._flush_pending(force_flush=True)


async def send_unsubscribe(nc: NATS, sub: Subscription) -> None:
    """Put the subscription's UNSUB in the pending buffer without draining it."""
    await nc._send_unsubscribe(sub._id)


def drop_pending(nc: NATS) -> int:
    """Forget what the client buffered while it was disconnected; the bytes dropped.

    While reconnecting, nats-py keeps commands in its pending buffer to send after the
    reconnect; ``close()`` then writes that buffer to the old, closed socket, which
    uvloop refuses with a ``RuntimeError`` (the plain asyncio loop ignores it), so a
    process closing while the server is gone failed in ``close()`` instead of exiting.
    A closing client will never send the buffer anyway.
    """
    dropped: int = nc.pending_data_size
    nc._pending = []
    nc._pending_data_size = 0
    return dropped


def watch_consumer(watcher: KeyValue.KeyWatcher) -> tuple[Any, str, str] | None:
    """The JetStream context, stream and current consumer name behind a KV watch.

    nats-py updates them when the watch's ordered consumer is recreated after a gap;
    ``None`` when the watch never subscribed.
    """
    sub = watcher._sub
    if sub is None:
        return None
    return sub._js, sub._stream, sub._consumer


def js_connection(js: JetStreamContext) -> NATS:
    """The connection a JetStream context works on: naq's retry window belongs to it
    (``naq.transport.retry``), and helpers handed only a context need it."""
    nc: NATS = js._nc
    return nc


def kv_connection(kv: KeyValue) -> NATS:
    """The connection a KV handle works on (see :func:`js_connection`)."""
    return js_connection(kv._js)


def kv_bucket(kv: KeyValue) -> tuple[JetStreamContext, str]:
    """The JetStream context and bucket name behind a ``KeyValue``: no public accessor,
    and a delete marker with a TTL (``naq.transport.kv.delete``) is published there."""
    return kv._js, kv._name


_KICKS: weakref.WeakKeyDictionary[NATS, asyncio.TimerHandle] = weakref.WeakKeyDictionary()
"""Per connection, the timer that will kick its flusher for commands sent ``within``."""


def send_command(nc: NATS, command: bytes, within: float = 0.0) -> bool:
    """Put one protocol command (``PUB``/``HPUB``, built by ``naq.transport.commands``)
    in the client's pending buffer, as ``Client.publish`` would, and kick its flusher.

    Why: ``Client.publish`` runs four coroutines per message (publish, send, command,
    flush) to do what this does in one plain call; on the supervisor's hot path (a
    result, an ack, per job) that overhead was a tenth of its CPU. The same checks
    and errors as nats-py's: closed, draining, or a reconnect's buffer full. Returns
    True when the buffer is over ``pending_size`` while connected: the caller must
    then ``await flush_pending(nc)`` (nats-py's forced flush), so a producer far
    ahead of its socket waits instead of growing the buffer without bound.

    ``within`` > 0: the command may wait that many seconds for others to share its
    write (an ack: nats-server pays per read far more than per command, and acks
    that leave one by one, as a process executor's jobs end, cost it more CPU than
    the jobs); anything sent meanwhile without a delay takes it along at once.
    """
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining_pubs:
        raise ConnectionDrainingError
    size = len(command)
    connected = nc.is_connected
    if not connected and (
        nc._max_pending_size <= 0 or size + nc._pending_data_size > nc._max_pending_size
    ):
        raise OutboundBufferLimitError
    nc._pending.append(command)
    nc._pending_data_size += size
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += size
    if not connected:
        return False  # sent by the reconnect, as nats-py's own buffer is
    if nc._max_pending_size > 0 and nc._pending_data_size > nc._max_pending_size:
        return True
    if within > 0:
        if nc not in _KICKS:
            _KICKS[nc] = asyncio.get_running_loop().call_later(within, _kick, nc)
    else:
        _kick(nc)
    return False


def _kick(nc: NATS) -> None:
    """Wake the client's flusher (it writes everything pending), unless it is awake."""
    timer = _KICKS.pop(nc, None)
    if timer is not None:
        timer.cancel()
    queue = nc._flush_queue
    if queue is not None and queue.empty() and nc.is_connected:
        queue.put_nowait(asyncio.get_running_loop().create_future())


def msg_client(msg: Msg) -> NATS:
    """The connection a message came on: its ack goes back there
    (``naq.transport.commands``)."""
    nc: NATS = msg._client
    return nc


def check_answerable(msg: Msg) -> None:
    """Raise as ``Msg.ack`` would for a message with no ack subject, or one already
    acked or nak'd (nats-py's ``NotJSMessageError``, ``MsgAlreadyAckdError``)."""
    msg._check_reply()


def mark_answered(msg: Msg) -> None:
    """Note the message as acked or nak'd, as ``Msg.ack`` does, so a second answer is
    refused by nats-py's own checks too."""
    msg._ackd = True
