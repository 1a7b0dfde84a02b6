"""naq needs message schedules (nats-server 2.12); older servers are refused up front."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from naq.errors import NaqConnectionError, ServerVersionError
from naq.settings import Settings
from naq.transport.connect import check_server_version, connect
from naq.transport.server import free_port

URL = "nats://nats.example:4222"


@pytest.mark.parametrize(
    "version", ["2.12.0", "v2.15.1", "2.14.0-beta.1", "2.12.0+build.5", "2.13", "3.0.0"]
)
def test_supported_versions(version: str) -> None:
    check_server_version(version, URL)


@pytest.mark.parametrize("version", ["2.11.9", "2.10.24", "v2.9.0", "1.99.0"])
def test_old_versions_are_refused(version: str) -> None:
    with pytest.raises(ServerVersionError) as info:
        check_server_version(version, URL)
    message = str(info.value)
    assert "2.12" in message
    assert version in message
    assert URL in message


@pytest.mark.parametrize("version", ["", "abc", "2", "x.y.z", "v"])
def test_unreadable_versions_are_refused(version: str) -> None:
    with pytest.raises(ServerVersionError, match="cannot read the version") as info:
        check_server_version(version, URL)
    assert URL in str(info.value)


def test_server_version_error_is_a_connection_error() -> None:
    assert issubclass(ServerVersionError, NaqConnectionError)
    assert issubclass(ServerVersionError, ConnectionError)


@contextlib.asynccontextmanager
async def fake_nats_server(**info_changes: Any) -> AsyncIterator[str]:
    """Just enough of the NATS protocol for a client to connect and read INFO."""
    info = {
        "server_id": "x",
        "version": "2.10.7",
        "proto": 1,
        "headers": True,
        "max_payload": 1048576,
        "jetstream": True,
        **info_changes,
    }

    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
            await writer.drain()
            while line := await reader.readline():
                if line.strip() == b"PING":
                    writer.write(b"PONG\r\n")
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:  # Server.close_clients() exists only from Python 3.13
            writer.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_connect_refuses_an_old_server() -> None:
    async with fake_nats_server(version="2.10.7") as url:
        with pytest.raises(ServerVersionError) as info:
            await asyncio.wait_for(connect(Settings(nats_url=url)), 10)
    message = str(info.value)
    assert "2.10.7" in message
    assert "2.12" in message
    assert url in message


async def test_connect_refuses_a_server_without_jetstream() -> None:
    async with fake_nats_server(version="2.12.1", jetstream=False) as url:
        with pytest.raises(NaqConnectionError, match="JetStream disabled"):
            await asyncio.wait_for(connect(Settings(nats_url=url)), 10)


async def test_connect_to_nothing_fails_promptly() -> None:
    """A wrong URL must fail with a clear error, not retry for ever before the first contact."""
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(NaqConnectionError, match="cannot connect"):
        await asyncio.wait_for(connect(Settings(nats_url=url)), 3)
