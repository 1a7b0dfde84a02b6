"""Pipelined JetStream publishing where every publish is checked.

Why not nats-py's ``publish_async``: when the server rejects a message, its future
never resolves (nats.py#985), so a rejected job would hang the producer; and plain
``js.publish`` waits one round trip per message. This publisher sends many
messages with their own reply subjects under one wildcard inbox and matches the
acks as they come, so a window of thousands is in flight and each one is checked.
A message not acknowledged in time, or met by trouble that passes, is sent again
with the same ``Nats-Msg-Id`` for the connection's retry window, so a retry can never
store a job twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, MaxPayloadError

from naq.errors import NaqError, PayloadTooLarge, PublishError, ServerFull
from naq.transport import commands
from naq.transport.retry import Rejected, Transient, is_transient, ride_through

log = logging.getLogger(__name__)

WINDOW = 2048
"""Messages in flight at once; above ~2k the server's ack latency only grows."""
SWEEPS = 4
"""Looks per publish timeout at the single publishes still unanswered: one timer per
publisher instead of one per publish, so a lost ack is noticed between one and
1 + 1/SWEEPS timeouts after its publish."""
_ACK = re.compile(rb'\{"stream":"[^"\\]*","seq":(\d+)\}')
"""The ack of a stored message in its usual shape, read without a JSON parse."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    subject: str
    payload: bytes
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    duplicate: bool


class NoStream(Transient):
    """No stream listens on the subject (503 no responders): during a leader election or
    a restart, or for a stream deleted behind the connection's back."""


class Unacknowledged(Transient):
    """The publish's ack did not come in time."""


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
    """One per connection; safe to share between tasks on the connection's loop.

    A publish that meets trouble (no ack in time, no stream answering, JetStream not
    ready) is sent again with backoff for the connection's retry window
    (``naq.transport.retry``), with the same headers: where a ``Nats-Msg-Id`` is set, a
    message stored before its ack was lost is not stored twice. ``on_no_stream`` is
    called once per run of trouble in which no stream answered: the client declares its
    namespaces again, for a stream that was deleted.
    """

    def __init__(
        self,
        nc: NATS,
        timeout: float = 5.0,
        on_no_stream: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._nc = nc
        self._timeout = timeout
        self._on_no_stream = on_no_stream
        self._prefix = nc.new_inbox()
        self._sub: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._deadlines: dict[str, float] = {}
        """When each single publish still unanswered times out (loop time), oldest first."""
        self._sweep: asyncio.TimerHandle | None = None
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
        """One message: the supervisor's path for every result, kept lean (the retry
        loop is entered only when the first try fails)."""
        self.check_size(subject, payload, headers)
        await self._ensure_sub()
        try:
            return await self._publish_once(subject, payload, headers)
        except Exception as exc:
            return await ride_through(
                self._recovering(lambda: self._publish_once(subject, payload, headers), exc),
                exc,
                what=f"publishing to {subject}",
                nc=self._nc,
            )

    async def _publish_once(
        self, subject: str, payload: bytes, headers: dict[str, str] | None
    ) -> Ack:
        token = str(self._next)
        self._next += 1
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = fut
        self._deadlines[token] = loop.time() + self._timeout
        if self._sweep is None:
            self._sweep = loop.call_later(self._timeout / SWEEPS, self._expire)
        try:
            await commands.publish(self._nc, subject, payload, f"{self._prefix}.{token}", headers)
            reply = await fut
        except TimeoutError:
            raise Unacknowledged(
                f"a publish to {subject} was not acknowledged within {self._timeout}s"
            ) from None
        except (MaxPayloadError, ConnectionClosedError) as exc:
            raise self._send_failed(exc, payload) from exc
        finally:
            self._waiting.pop(token, None)
            self._deadlines.pop(token, None)
        ack = _parse_ack(reply, subject)
        if isinstance(ack, Ack):
            return ack
        raise ack

    def _expire(self) -> None:
        """Fail the single publishes whose ack is overdue (``TimeoutError``, which the
        publish turns into :class:`Unacknowledged`); looks again while any wait. The
        timeout is the same for all, so the oldest come first and the look stops at the
        first one not yet due."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        overdue = []
        for token, deadline in self._deadlines.items():
            if deadline > now:
                break
            overdue.append(token)
        for token in overdue:
            del self._deadlines[token]
            fut = self._waiting.get(token)
            if fut is not None and not fut.done():
                fut.set_exception(TimeoutError())
        self._sweep = (
            loop.call_later(self._timeout / SWEEPS, self._expire) if self._deadlines else None
        )

    def _recovering[T](
        self, attempt: Callable[[], Awaitable[T]], first: BaseException
    ) -> Callable[[], Awaitable[T]]:
        """``attempt`` for the retry loop: before the first try that follows a "no
        stream" answer, let the client declare its streams again (once per run)."""
        hook = self._on_no_stream
        if hook is None:
            return attempt
        due, done = isinstance(first, NoStream), False

        async def again() -> T:
            nonlocal due, done
            if due and not done:
                done = True
                await _best_effort(hook, self._timeout)
            try:
                return await attempt()
            except NoStream:
                due = True
                raise

        return again

    async def publish_many(self, items: Sequence[Outgoing]) -> list[Ack]:
        """Publish all ``items``; returns their acks in order or raises on the first
        failure that is final, or when the retry window is spent."""
        for item in items:
            self.check_size(item.subject, item.payload, item.headers)
        await self._ensure_sub()
        acks: list[Ack | None] = [None] * len(items)
        for start in range(0, len(items), WINDOW):
            todo = list(range(start, min(start + WINDOW, len(items))))
            try:
                todo = await self._send_window(items, todo, acks)
            except Exception as exc:  # a closed connection, say: final or not, decided below
                first: BaseException = exc
            else:
                if not todo:
                    continue
                first = self._unacknowledged(items, todo)
            pending = todo

            async def rest() -> None:
                nonlocal pending
                pending = await self._send_window(items, pending, acks)
                if pending:
                    raise self._unacknowledged(items, pending)

            await ride_through(
                self._recovering(rest, first), first, what="publishing a batch", nc=self._nc
            )
        return [a for a in acks if a is not None]

    @staticmethod
    def _unacknowledged(items: Sequence[Outgoing], todo: list[int]) -> Exception:
        return Unacknowledged(
            f"{len(todo)} publishes to {items[todo[0]].subject} (and others) were not "
            "acknowledged, or no stream answered them"
        )

    async def _send_window(
        self, items: Sequence[Outgoing], todo: list[int], acks: list[Ack | None]
    ) -> list[int]:
        """Send ``todo``, fill in ``acks``; the indexes to send again (no ack in time, or
        trouble that passes). A final refusal is raised."""
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
                await commands.publish(
                    self._nc, item.subject, item.payload, f"{self._prefix}.{token}", item.headers
                )
        except (MaxPayloadError, ConnectionClosedError) as exc:
            self._forget(tokens)
            raise self._send_failed(exc, items[i].payload) from exc
        except Exception:  # reconnecting, the buffer full: what was not sent goes again
            self._forget(tokens)
            raise
        if futures:
            await asyncio.wait(futures.values(), timeout=self._timeout)
        retry: list[int] = []
        no_stream: NoStream | None = None
        try:
            for i, fut in futures.items():
                if not fut.done():
                    fut.cancel()
                    retry.append(i)
                    continue
                ack = _parse_ack(fut.result(), items[i].subject)
                if isinstance(ack, Ack):
                    acks[i] = ack
                elif is_transient(ack):
                    retry.append(i)
                    if isinstance(ack, NoStream):
                        no_stream = ack
                else:
                    raise ack
        finally:
            self._forget(tokens)
        if no_stream is not None and len(retry) == len(futures):
            raise no_stream  # nothing got through: say why (and let the stream be declared)
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
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
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
    if usual := _ACK.fullmatch(msg.data):
        return Ack(seq=int(usual[1]), duplicate=False)
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
            err.get("code"),
            code,
        )
    return Ack(seq=int(data.get("seq", 0)), duplicate=bool(data.get("duplicate", False)))


async def _best_effort(action: Callable[[], Awaitable[None]], timeout: float) -> None:
    """Run a recovery step, within ``timeout``, whose failure must not end the retry it
    helps (the retry's window is what bounds the whole)."""
    try:
        async with asyncio.timeout(timeout):
            await action()
    except Exception as exc:
        log.debug("recovery step failed (the retry goes on): %s", exc)
