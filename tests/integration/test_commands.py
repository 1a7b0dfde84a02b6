"""The protocol commands naq builds itself (``naq.transport.commands``) do what
nats-py's ``publish``, ``Msg.ack`` and ``Msg.nak`` do, against a real server: the
same headers arrive, the same errors are raised, and JetStream takes the acks and
naks as its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import (
    BadHeaderError,
    BadSubjectError,
    ConnectionClosedError,
    MaxPayloadError,
    MsgAlreadyAckdError,
    NotJSMessageError,
)
from nats.js.api import ConsumerConfig, StreamConfig

from naq import Settings
from naq.transport import commands, compat
from naq.transport.connect import flush
from tests.conftest import until

HEADERS = {
    "Nats-Msg-Id": "job-1",
    "naq-attempt": "3",
    "  padded-key  ": "  padded value  ",
    "": "an empty key is skipped",
    "x.y_z~|": "token characters",
    "Empty": "",
    "unicode": "é ✓",
}


class Heard:
    """A subscriber's messages, each awaited as it arrives."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Msg] = asyncio.Queue()

    async def cb(self, msg: Msg) -> None:
        await self.messages.put(msg)

    async def next(self, timeout: float = 5.0) -> Msg:
        return await asyncio.wait_for(self.messages.get(), timeout)


async def _listen(nc: NATS, subject: str) -> Heard:
    heard = Heard()
    await nc.subscribe(subject, cb=heard.cb)
    await flush(nc)
    return heard


async def test_encoded_headers_arrive_as_nats_py_sends_them(nc: NATS, settings: Settings) -> None:
    subject = f"{settings.namespace}.commands.headers"
    heard = await _listen(nc, subject)
    await nc.publish(subject, b"by nats-py", headers=HEADERS)
    await commands.publish(nc, subject, b"by naq", headers=HEADERS)
    theirs, ours = await heard.next(), await heard.next()
    assert (theirs.data, ours.data) == (b"by nats-py", b"by naq")
    assert theirs.headers is not None
    assert ours.headers == theirs.headers
    assert ours.headers["padded-key"] == "padded value"
    assert "" not in ours.headers


async def test_a_header_value_with_cr_or_lf_arrives_with_spaces(
    nc: NATS, settings: Settings
) -> None:
    """A line break in a value would end the header there and start another (a header
    a caller could inject); it arrives as spaces, as nats-py sends it."""
    subject = f"{settings.namespace}.commands.newlines"
    heard = await _listen(nc, subject)
    headers = {"note": "one\r\nInjected: yes\rtwo\nthree"}
    await commands.publish(nc, subject, b"", headers=headers)
    await nc.publish(subject, b"", headers=headers)
    ours, theirs = await heard.next(), await heard.next()
    assert ours.headers == {"note": "one  Injected: yes two three"}
    assert ours.headers == theirs.headers


async def _raw_subscriber(
    nats_url: str, subject: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client speaking the protocol itself, to see the header block as the server
    relays it, byte for byte (nats-py's parser trims values on the way in)."""
    host, port = nats_url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    assert (await reader.readline()).startswith(b"INFO ")
    writer.write(
        b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
        b"SUB %s 1\r\nPING\r\n" % subject.encode()
    )
    await writer.drain()
    assert await reader.readline() == b"PONG\r\n"
    return reader, writer


async def _raw_headers(reader: asyncio.StreamReader) -> bytes:
    """The header block of the next ``HMSG``."""
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line.startswith(b"HMSG "), line
    head_size, total = (int(part) for part in line.split()[-2:])
    body = await reader.readexactly(total + 2)
    return body[:head_size]


async def test_encoded_headers_are_byte_for_byte_what_nats_py_sends(
    nats_url: str, nc: NATS, settings: Settings
) -> None:
    subject = f"{settings.namespace}.commands.raw"
    reader, writer = await _raw_subscriber(nats_url, subject)
    try:
        await nc.publish(subject, b"x", headers=HEADERS)
        await commands.publish(nc, subject, b"x", headers=HEADERS)
        await flush(nc)
        theirs, ours = await _raw_headers(reader), await _raw_headers(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert b"padded-key: padded value\r\n" in theirs
    assert ours == theirs == commands.encode_headers(HEADERS)


@pytest.mark.parametrize("key", ["two words", "colon:key", "new\nline", "tab\tkey"])
def test_a_header_key_outside_the_token_characters_is_refused(key: str) -> None:
    with pytest.raises(BadHeaderError):
        commands.encode_headers({key: "value"})


def test_a_refused_key_stays_refused_after_a_valid_one_was_remembered() -> None:
    """The memo of checked keys holds only keys found valid."""
    commands.encode_headers({"good-key": "v"})
    for _ in range(2):
        with pytest.raises(BadHeaderError):
            commands.encode_headers({"good-key": "v", "bad key": "v"})


@pytest.mark.parametrize(
    ("subject", "reply"),
    [("a b", ""), ("a\r\nPUB x 1", ""), ("a\tb", ""), ("", ""), ("ok", "re ply"), ("ok", "r\n")],
)
def test_publish_command_refuses_a_subject_or_reply_with_whitespace(
    subject: str, reply: str
) -> None:
    """Whitespace in a subject would let a caller write protocol commands of its own."""
    with pytest.raises(BadSubjectError):
        commands.publish_command(subject, reply, b"x", None)
    with pytest.raises(BadSubjectError):
        commands.publish_command(subject, reply, b"x", {"k": "v"})


async def test_publish_delivers_payload_headers_and_reply(nc: NATS, settings: Settings) -> None:
    subject = f"{settings.namespace}.commands.publish"
    reply = f"{settings.namespace}.commands.reply"
    heard = await _listen(nc, subject)
    await commands.publish(nc, subject, b"payload\r\nwith CRLF", reply=reply, headers={"k": "v"})
    await commands.publish(nc, subject, b"plain")
    await commands.publish(nc, subject, b"", reply=reply)
    first, second, third = await heard.next(), await heard.next(), await heard.next()
    assert (first.data, first.reply, first.headers) == (b"payload\r\nwith CRLF", reply, {"k": "v"})
    assert (second.data, second.reply, second.headers) == (b"plain", "", None)
    assert (third.data, third.reply, third.headers) == (b"", reply, None)


async def test_a_published_request_is_answered_on_its_reply(nc: NATS, settings: Settings) -> None:
    """The reply subject is a real one: a responder's answer comes back on it."""
    subject = f"{settings.namespace}.commands.request"
    reply = f"{settings.namespace}.commands.answer"

    async def respond(msg: Msg) -> None:
        await msg.respond(msg.data.upper())

    await nc.subscribe(subject, cb=respond)
    answers = await _listen(nc, reply)
    await commands.publish(nc, subject, b"ping", reply=reply)
    assert (await answers.next()).data == b"PING"


async def test_publish_over_max_payload_raises(nc: NATS, settings: Settings) -> None:
    subject = f"{settings.namespace}.commands.big"
    heard = await _listen(nc, subject)
    with pytest.raises(MaxPayloadError):
        await commands.publish(nc, subject, b"x" * (nc.max_payload + 1))
    await commands.publish(nc, subject, b"x" * nc.max_payload)  # the limit itself is fine
    assert len((await heard.next()).data) == nc.max_payload


async def test_publish_on_a_closed_connection_raises(nats_url: str) -> None:
    closed = await nats.connect(nats_url)
    await closed.close()
    with pytest.raises(ConnectionClosedError):
        await commands.publish(closed, "commands.closed", b"x")


async def test_publish_past_the_pending_limit_waits_for_the_socket_and_loses_nothing(
    nats_url: str, nc: NATS, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer far ahead of its socket: past ``pending_size`` each publish forces a
    flush (nats-py's own rule) and every message still arrives, in order."""
    subject = f"{settings.namespace}.commands.flood"
    heard = await _listen(nc, subject)
    forced = 0
    flush_pending = compat.flush_pending

    async def counted(conn: NATS) -> None:
        nonlocal forced
        forced += 1
        await flush_pending(conn)

    monkeypatch.setattr(compat, "flush_pending", counted)
    small = await nats.connect(nats_url, pending_size=2048)
    try:
        count = 2000
        peak = 0
        for index in range(count):
            await commands.publish(small, subject, b"%05d" % index + b"." * 95)
            peak = max(peak, small.pending_data_size)
        assert forced > 0  # the buffer went past its limit: the forced-flush branch ran
        assert peak <= 2048 + 200  # and never grew past it by more than one command
        got = [(await heard.next()).data[:5] for _ in range(count)]
    finally:
        await small.close()
    assert got == [b"%05d" % index for index in range(count)]


# -- acks and naks on a real JetStream consumer -------------------------------------


class Pull:
    """A stream of its own with one durable pull consumer, named for the test."""

    def __init__(self, js: Any, namespace: str) -> None:
        self.js = js
        self.stream = f"{namespace}_COMMANDS"
        self.subject = f"{namespace}.commands.js"
        self.durable = "worker"
        self.sub: Any = None

    async def start(self) -> None:
        await self.js.add_stream(StreamConfig(name=self.stream, subjects=[self.subject]))
        # a long ack_wait: any redelivery the tests see comes from a nak, not a lapse
        self.sub = await self.js.pull_subscribe(
            self.subject,
            durable=self.durable,
            stream=self.stream,
            config=ConsumerConfig(ack_wait=60.0),
        )

    async def stop(self) -> None:
        await self.sub.unsubscribe()
        await self.js.delete_stream(self.stream)

    async def fetch(self, timeout: float) -> Msg:
        (msg,) = await self.sub.fetch(1, timeout=timeout)
        return msg  # type: ignore[no-any-return]

    async def ack_pending(self) -> int:
        info = await self.js.consumer_info(self.stream, self.durable)
        return int(info.num_ack_pending)


@pytest.fixture
async def pull(js: Any, settings: Settings) -> AsyncIterator[Pull]:
    made = Pull(js, settings.namespace)
    await made.start()
    yield made
    await made.stop()


async def test_ack_settles_a_jetstream_message_and_a_second_ack_is_refused(
    nc: NATS, pull: Pull
) -> None:
    await pull.js.publish(pull.subject, b"job")
    msg = await pull.fetch(5)
    assert await pull.ack_pending() == 1
    await commands.ack(msg)
    await flush(nc)

    async def settled() -> bool:
        return await pull.ack_pending() == 0

    await until(settled, 5, "the ack to settle the message")
    info = await pull.js.consumer_info(pull.stream, pull.durable)
    assert (info.num_pending, info.num_redelivered, info.ack_floor.consumer_seq) == (0, 0, 1)
    with pytest.raises(MsgAlreadyAckdError):
        await commands.ack(msg)
    with pytest.raises(MsgAlreadyAckdError):
        await msg.ack()  # nats-py's own check sees it answered too


async def test_a_nak_redelivers_at_once(pull: Pull) -> None:
    """With an ack_wait of a minute, only the nak can bring the message back this soon."""
    await pull.js.publish(pull.subject, b"job")
    first = await pull.fetch(5)
    await commands.nak(first)
    again = await pull.fetch(5)
    assert again.data == b"job"
    assert (first.metadata.num_delivered, again.metadata.num_delivered) == (1, 2)
    with pytest.raises(MsgAlreadyAckdError):
        await commands.nak(first)
    await commands.ack(again)


async def test_a_nak_with_a_delay_redelivers_only_after_the_delay(pull: Pull) -> None:
    delay = 2.0
    await pull.js.publish(pull.subject, b"job")
    first = await pull.fetch(5)
    nakd = time.monotonic()
    await commands.nak(first, delay=delay)
    with pytest.raises(TimeoutError):  # a plain nak would bring it back within this
        await pull.fetch(delay / 2)
    again = await pull.fetch(delay + 10)
    waited = time.monotonic() - nakd
    assert again.data == b"job"
    assert again.metadata.num_delivered == 2
    assert waited >= delay * 0.9, f"redelivered after {waited:.2f}s, asked for {delay}s"
    await commands.ack(again)


async def test_ack_on_a_message_with_no_ack_subject_raises_nats_py_error(
    nc: NATS, settings: Settings
) -> None:
    subject = f"{settings.namespace}.commands.core"
    heard = await _listen(nc, subject)
    await nc.publish(subject, b"core")
    msg = await heard.next()
    with pytest.raises(NotJSMessageError):
        await commands.ack(msg)
    with pytest.raises(NotJSMessageError):
        await commands.nak(msg, delay=1.0)
