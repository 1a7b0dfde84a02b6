"""Pipelined JetStream publishing where every publish is checked.

Why not nats-py's ``publish_async``: when the server rejects a message, its future
never resolves (nats.py#985), so a rejected job would hang the producer; and plain
``js.publish`` waits one round trip per message. This publisher sends many
messages with their own reply subjects under one wildcard inbox and matches the
acks as they come, so a window of thousands is in flight and each one is checked.
A message not acknowledged in time is sent again with the same ``Nats-Msg-Id``, so a
retry can never store a job twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, MaxPayloadError

from naq.errors import NaqError, PayloadTooLarge, PublishError, ServerFull

log = logging.getLogger(__name__)

WINDOW = 2048
"""Messages in flight at once; above ~2k the server's ack latency only grows."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    subject: str
    payload: bytes
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    duplicate: bool


class NoStream(PublishError):
    """No stream listens on the subject (503 no responders)."""


class Rejected(PublishError):
    """JetStream answered the publish with an error; ``code`` is its ``err_code``
    (10071: the subject's last sequence is not the one the publish expected)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


STORAGE_FULL = (10023, 10047)
"""JetStream's error codes for a store out of space ("insufficient resources",
"insufficient storage resources available")."""
MESSAGE_TOO_BIG = 10054
"""JetStream's error code for a message over the stream's ``max_msg_size``."""
_HEADER_LINE = len(b"NATS/1.0\r\n") + len(b"\r\n")


def message_size(payload: bytes, headers: dict[str, str] | None) -> int:
    """The bytes the server counts against ``max_payload``: the payload and the
    headers block as nats-py encodes it (``NATS/1.0``, ``key: value`` lines, a blank
    line). nats-py itself checks only the payload, and a message over the limit makes
    the server drop the connection."""
    if not headers:
        return len(payload)
    return (
        len(payload)
        + _HEADER_LINE
        + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    )


class Publisher:
    """One per connection; safe to share between tasks on the connection's loop."""

    def __init__(self, nc: NATS, timeout: float = 5.0, attempts: int = 4) -> None:
        self._nc = nc
        self._timeout = timeout
        self._attempts = attempts
        self._prefix = nc.new_inbox()
        self._sub: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._next = 0
        self._lock = asyncio.Lock()

    async def _ensure_sub(self) -> None:
        if self._sub is None:
            async with self._lock:
                if self._sub is None:
                    self._sub = await self._nc.subscribe(self._prefix + ".*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._waiting.pop(msg.subject[len(self._prefix) + 1 :], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> Ack:
        """One message: the supervisor's path for every result, kept lean."""
        self.check_size(subject, payload, headers)
        await self._ensure_sub()
        loop = asyncio.get_running_loop()
        for attempt in range(1, self._attempts + 1):
            token = str(self._next)
            self._next += 1
            fut: asyncio.Future[Msg] = loop.create_future()
            self._waiting[token] = fut
            try:
                await self._nc.publish(
                    subject, payload, reply=f"{self._prefix}.{token}", headers=headers
                )
                async with asyncio.timeout(self._timeout):
                    reply = await fut
            except TimeoutError:
                continue
            except (MaxPayloadError, ConnectionClosedError) as exc:
                raise self._send_failed(exc, payload) from exc
            finally:
                self._waiting.pop(token, None)
            ack = _parse_ack(reply, subject)
            if isinstance(ack, Ack):
                return ack
            if not isinstance(ack, NoStream) or attempt == self._attempts:
                raise ack
        raise PublishError(
            f"a publish to {subject} was not acknowledged after {self._attempts} attempts"
        )

    async def publish_many(self, items: Sequence[Outgoing]) -> list[Ack]:
        """Publish all ``items``; returns their acks in order or raises on the first failure."""
        for item in items:
            self.check_size(item.subject, item.payload, item.headers)
        await self._ensure_sub()
        acks: list[Ack | None] = [None] * len(items)
        for start in range(0, len(items), WINDOW):
            todo = list(range(start, min(start + WINDOW, len(items))))
            for attempt in range(1, self._attempts + 1):
                todo = await self._send_window(items, todo, acks, last=attempt == self._attempts)
                if not todo:
                    break
                log.warning("retrying %d unacknowledged publishes (attempt %d)", len(todo), attempt)
        return [a for a in acks if a is not None]

    async def _send_window(
        self, items: Sequence[Outgoing], todo: list[int], acks: list[Ack | None], last: bool
    ) -> list[int]:
        loop = asyncio.get_running_loop()
        futures: dict[int, asyncio.Future[Msg]] = {}
        tokens: list[str] = []
        try:
            for i in todo:
                item = items[i]
                token = str(self._next)
                self._next += 1
                fut: asyncio.Future[Msg] = loop.create_future()
                self._waiting[token] = fut
                tokens.append(token)
                futures[i] = fut
                await self._nc.publish(
                    item.subject,
                    item.payload,
                    reply=f"{self._prefix}.{token}",
                    headers=item.headers,
                )
        except (MaxPayloadError, ConnectionClosedError) as exc:
            self._forget(tokens)
            raise self._send_failed(exc, items[i].payload) from exc
        if futures:
            await asyncio.wait(futures.values(), timeout=self._timeout)
        retry: list[int] = []
        for i, fut in futures.items():
            if not fut.done():
                fut.cancel()
                retry.append(i)
                continue
            ack = _parse_ack(fut.result(), items[i].subject)
            if isinstance(ack, NoStream) and not last:
                retry.append(i)
            elif isinstance(ack, Exception):
                self._forget(tokens)
                raise ack
            else:
                acks[i] = ack
        self._forget(tokens)
        if retry and last:
            raise PublishError(
                f"{len(retry)} publishes to {items[retry[0]].subject} were not acknowledged "
                f"after {self._attempts} attempts"
            )
        return retry

    def check_size(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
        """Raise :class:`PayloadTooLarge` for a message the server would refuse by
        dropping the connection (payload and headers over its ``max_payload``)."""
        size = message_size(payload, headers)
        if size > self._nc.max_payload:
            raise PayloadTooLarge(
                f"a message of {size} bytes (payload and headers) to {subject} exceeds the "
                f"server's max_payload of {self._nc.max_payload} bytes: not sent"
            )

    def _send_failed(self, exc: Exception, payload: bytes) -> NaqError:
        if isinstance(exc, MaxPayloadError):
            return PayloadTooLarge(
                f"message of {len(payload)} bytes exceeds the server's max_payload "
                f"of {self._nc.max_payload} bytes"
            )
        return PublishError(f"connection closed while publishing: {exc}")

    def _forget(self, tokens: list[str]) -> None:
        for token in tokens:
            self._waiting.pop(token, None)

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()


def _parse_ack(msg: Msg, subject: str) -> Ack | NaqError:
    if msg.headers and msg.headers.get("Status") == "503":
        return NoStream(f"no JetStream stream accepts {subject} (no responders)")
    try:
        data = json.loads(msg.data)
    except ValueError:
        return PublishError(f"unreadable publish ack for {subject}: {msg.data[:200]!r}")
    if "error" in data:
        err = data["error"]
        code = err.get("err_code")
        if code in STORAGE_FULL:
            return ServerFull(
                f"the server's JetStream storage is full ({err.get('description')}): "
                f"nothing could be stored on {subject}"
            )
        if code == MESSAGE_TOO_BIG:
            return PayloadTooLarge(
                f"a message to {subject} is over its stream's max_msg_size "
                f"({err.get('description')})"
            )
        return Rejected(
            f"JetStream rejected a publish to {subject}: {err.get('description')} (code {code})",
            code,
        )
    return Ack(seq=int(data.get("seq", 0)), duplicate=bool(data.get("duplicate", False)))
