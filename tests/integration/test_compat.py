"""Every private nats-py member naq reaches (``naq.transport.compat``) still does what
naq relies on, against a real server: a nats-py release that renames or changes one
fails here, not in a supervisor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import (
    ConnectionClosedError,
    MsgAlreadyAckdError,
    NotJSMessageError,
)

from naq import Settings
from naq.transport import compat
from naq.transport.connect import Client, connect, flush
from naq.transport.names import Layout, kv_stream
from naq.transport.pool import new_event_loop
from naq.transport.server import EmbeddedServer, free_port
from tests.conftest import until


async def test_server_info_is_the_servers_info(nc: NATS) -> None:
    info = compat.server_info(nc)
    assert str(info["version"]).startswith("2.")
    assert info["jetstream"] is True
    assert int(info["max_payload"]) == nc.max_payload


async def test_flush_pending_writes_the_buffer_so_a_sub_is_in_place_before_the_pong(
    nc: NATS, settings: Settings
) -> None:
    """The barrier ``flush`` builds on: after it, another client's publish is heard."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def heard(msg: Any) -> None:
        await got.put(msg.data)

    subject = f"{settings.namespace}.compat.flush"
    await nc.subscribe(subject, cb=heard)
    await flush(nc)
    other = await connect(settings, jetstream=False)
    try:
        await other.publish(subject, b"after the barrier")
        await other.flush()
        assert await asyncio.wait_for(got.get(), 5) == b"after the barrier"
    finally:
        await other.close()


async def test_send_unsubscribe_stops_delivery_once_flushed(nc: NATS, settings: Settings) -> None:
    subject = f"{settings.namespace}.compat.unsub"
    sub = await nc.subscribe(subject)
    await compat.send_unsubscribe(nc, sub)
    await flush(nc)
    other = await connect(settings, jetstream=False)
    try:
        await other.publish(subject, b"too late")
        await other.flush()
        await flush(nc)  # anything the server still routed to us would be here by now
    finally:
        await other.close()
    assert sub.pending_msgs == 0


async def test_watch_consumer_names_the_consumer_behind_a_kv_watch(
    nc: NATS, settings: Settings
) -> None:
    client = Client(nc, settings)
    layout = await client.layout(settings.namespace)
    kv = await client.kv(layout.workers_bucket)
    watcher = await kv.watch(">")
    try:
        behind = compat.watch_consumer(watcher)
        assert behind is not None
        js, stream, consumer = behind
        info = await js.consumer_info(stream, consumer)
        assert info.name == consumer
        assert stream == kv_stream(Layout(settings.namespace).workers_bucket)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


async def test_js_and_kv_connection_name_the_connection_they_work_on(
    nc: NATS, settings: Settings
) -> None:
    """The retry window is found from these (``naq.transport.retry``)."""
    client = Client(nc, settings)
    layout = await client.layout(settings.namespace)
    kv = await client.kv(layout.workers_bucket)
    assert compat.js_connection(client.js) is nc
    assert compat.kv_connection(kv) is nc


def test_drop_pending_lets_a_client_close_while_the_server_is_gone(tmp_path: Path) -> None:
    """What nats-py buffers while reconnecting is dropped, so the close completes on
    uvloop (naq's loop), which refuses the write to the old socket that close makes."""
    server = EmbeddedServer(free_port(), tmp_path / "store").start()
    settings = Settings(nats_url=server.url)

    async def main() -> None:
        client = Client(await connect(settings), settings)

        async def reconnecting() -> bool:
            return client.nc.is_reconnecting

        server.stop()
        await until(reconnecting, 10, "the client to notice the server is gone")
        await client.nc.publish("compat.pending", b"buffered while reconnecting")
        assert client.nc.pending_data_size > 0
        await client.close()  # drops the buffer: see compat.drop_pending
        assert client.nc.is_closed
        assert client.nc.pending_data_size == 0

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(asyncio.wait_for(main(), 30))
    finally:
        server.stop()


async def _listen(nc: NATS, subject: str) -> asyncio.Queue[Msg]:
    """Every message on ``subject`` from now on (the subscription is in place)."""
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def heard(msg: Msg) -> None:
        await got.put(msg)

    await nc.subscribe(subject, cb=heard)
    await flush(nc)
    return got


async def test_send_command_buffers_a_command_that_the_flusher_sends(
    nc: NATS, settings: Settings
) -> None:
    """What ``naq.transport.commands`` builds goes out through nats-py's own buffer and
    flusher: not past its limit, it asks for no forced flush and still arrives."""
    subject = f"{settings.namespace}.compat.command"
    got = await _listen(nc, subject)
    sent = nc.stats["out_msgs"]
    assert compat.send_command(nc, b"PUB %s 5\r\nhello\r\n" % subject.encode()) is False
    assert nc.stats["out_msgs"] == sent + 1
    msg = await asyncio.wait_for(got.get(), 5)  # no flush asked: the flusher was kicked
    assert msg.data == b"hello"


async def test_send_command_asks_for_a_flush_past_pending_size(nats_url: str) -> None:
    small = await nats.connect(nats_url, pending_size=64)
    try:
        command = b"PUB compat.full 40\r\n" + b"x" * 40 + b"\r\n"
        assert compat.send_command(small, command) is False
        assert compat.send_command(small, command) is True  # 2 x 62 bytes > 64
        await compat.flush_pending(small)
        assert small.pending_data_size == 0
    finally:
        await small.close()


async def test_send_command_refuses_a_closed_connection(nats_url: str) -> None:
    closed = await nats.connect(nats_url)
    await closed.close()
    with pytest.raises(ConnectionClosedError):
        compat.send_command(closed, b"PUB compat.closed 0\r\n\r\n")


async def test_msg_client_and_answer_checks_follow_msg_ack(nc: NATS, settings: Settings) -> None:
    """``check_answerable`` raises as ``Msg.ack`` would; ``mark_answered`` makes
    nats-py's own ``ack`` refuse the message too; ``msg_client`` is the connection it
    came on."""
    subject = f"{settings.namespace}.compat.answer"
    got = await _listen(nc, subject)
    await nc.publish(subject, b"no reply")
    await nc.publish(subject, b"with reply", reply=f"{settings.namespace}.compat.answered")
    plain, answerable = await asyncio.wait_for(got.get(), 5), await asyncio.wait_for(got.get(), 5)
    assert compat.msg_client(plain) is nc
    with pytest.raises(NotJSMessageError):
        compat.check_answerable(plain)
    compat.check_answerable(answerable)  # a reply subject and not answered: fine
    compat.mark_answered(answerable)
    with pytest.raises(MsgAlreadyAckdError):
        compat.check_answerable(answerable)
    with pytest.raises(MsgAlreadyAckdError):
        await answerable.ack()
