"""The embedded nats-server through the CLI: ``naq server``, and ``naq-supervise``'s auto-start."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import nats
import pytest

from naq import Queue
from naq.settings import DEFAULT_NATS_URL
from naq.transport.server import free_port, port_in_use
from tests import jobs
from tests.e2e.conftest import NAQ, NAQ_SUPERVISE, READY, Spawn

pytestmark = pytest.mark.e2e


async def test_supervise_starts_an_embedded_server_when_none_runs(
    spawn: Spawn, namespace: str, tmp_path: Path
) -> None:
    if port_in_use(4222):
        pytest.fail(
            "127.0.0.1:4222 is in use by another program: this test needs it free to check "
            "that naq-supervise starts its own server there; stop that program and rerun"
        )
    proc = spawn(NAQ_SUPERVISE, NAQ_NAMESPACE=namespace, XDG_DATA_HOME=str(tmp_path))
    await proc.line(READY, timeout=30)
    started = proc.matching("embedded nats-server")
    assert len(started) == 1, proc.output()
    store = tmp_path / "naq" / "jetstream"
    assert str(store) in started[0], started[0]
    assert any(store.iterdir()), "the embedded server's store is not under XDG_DATA_HOME"

    async with Queue(nats_url=DEFAULT_NATS_URL, namespace=namespace) as queue:
        job = await queue.enqueue(jobs.add, 1, 2)
        assert await queue.fetch_result(job.job_id, timeout=10) == 3

    proc.send(signal.SIGTERM)
    assert await proc.exit_code(15) == 0, proc.output()
    assert not port_in_use(4222), "the embedded server outlived its supervisor"


async def test_supervise_never_starts_a_server_for_an_explicit_url(
    spawn: Spawn, namespace: str, tmp_path: Path
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    proc = spawn(
        NAQ_SUPERVISE, "--nats-url", url, NAQ_NAMESPACE=namespace, XDG_DATA_HOME=str(tmp_path)
    )
    code = await proc.exit_code(12)
    assert code > 0, proc.output()
    assert proc.matching(f"cannot connect to NATS at {url}"), proc.output()
    assert not proc.matching("embedded nats-server"), proc.output()
    assert not (tmp_path / "naq").exists(), "a store was created for a server never asked for"


async def test_naq_server_serves_jetstream_until_sigterm(spawn: Spawn, tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "store"
    proc = spawn(NAQ, "server", "--port", str(port), "--store-dir", str(store))
    url = f"nats://127.0.0.1:{port}"
    ready = rf"^nats-server \S+ on {re.escape(url)} \(store {re.escape(str(store))}\)"
    await proc.line(ready, stream="stdout", timeout=30)

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="E2E", subjects=["e2e.>"])
        ack = await js.publish("e2e.hello", b"world")
        assert (await js.get_msg("E2E", ack.seq)).data == b"world"
    finally:
        await nc.close()
    assert any(store.iterdir()), "JetStream did not write to --store-dir"

    proc.send(signal.SIGTERM)
    assert await proc.exit_code(15) == 0, proc.output()
    assert not port_in_use(port), "nats-server outlived naq server"
