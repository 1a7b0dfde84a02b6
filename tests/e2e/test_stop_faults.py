"""``naq-supervise`` stopping under faults, as a real process with real signals: the
exit is bounded whatever NATS does, and a SIGTERM sent to the whole process group
(systemd's control-group kill, ``kill 0``) leaves the drain to the supervisor."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from naq import Queue, Settings
from naq.errors import EXIT_STOP_CUT
from naq.transport.server import EmbeddedServer, free_port
from tests import jobs
from tests.e2e.conftest import NAQ_SUPERVISE, READY, Spawn, SuperviseFn, worker_record

pytestmark = pytest.mark.e2e

GRACE = 3.0


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    """A server of this test's own, which it may freeze; thawed and stopped at the end."""
    server = EmbeddedServer(free_port(), tmp_path / "store").start()
    try:
        yield server
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


async def test_the_exit_is_bounded_by_the_grace_whatever_nats_does(
    own_server: EmbeddedServer, spawn: Spawn, namespace: str, tmp_path: Path
) -> None:
    """The server freezes (SIGSTOP) while a job runs; the job ends within the grace,
    but its result cannot be stored, nor the heartbeat removed, nor the connection
    drained: each of those used to wait out its own timeouts and retries, about 50 s."""
    settings = Settings(nats_url=own_server.url, namespace=namespace)
    nc = await nats.connect(own_server.url)
    js = nc.jetstream()
    async with Queue(settings=settings) as queue:
        proc = spawn(
            NAQ_SUPERVISE,
            "--nats-url", own_server.url,
            "--namespace", namespace,
            "--heartbeat-interval", "0.2",
            "--concurrency", "1",
            "--shutdown-grace", str(GRACE),
        )  # fmt: skip
        worker_id = (await proc.line(READY))["id"]
        job = await queue.enqueue(jobs.sleep, 1.0)
        await worker_record(js, namespace, worker_id, lambda r: r["busy"] == 1)
        assert own_server.process is not None
        os.kill(own_server.process.pid, signal.SIGSTOP)
        proc.send(signal.SIGTERM)
        code = await proc.exit_code(GRACE + 5)
        assert code == EXIT_STOP_CUT, proc.output()
        assert proc.matching(r"stop deadline .*1 job\(s\) not settled"), proc.output()
        os.kill(own_server.process.pid, signal.SIGCONT)
        # Nothing is lost: the job is still in the stream, for redelivery.
        info = await js.consumer_info(queue.layout.stream, "default")
        assert info.num_ack_pending + info.num_pending == 1, job.job_id
    await nc.close()


async def test_sigterm_to_the_whole_process_group_lets_the_drain_decide(
    queue: Queue, supervise: SuperviseFn, js: JetStreamContext, namespace: str
) -> None:
    """systemd (KillMode=control-group) and ``kill 0`` send SIGTERM to the children
    too: they ignore it, so the running job finishes and its result is stored."""
    proc = supervise("--executor", "process", "--concurrency", "2", "--shutdown-grace", "20")
    worker_id = (await proc.line(READY))["id"]
    job = await queue.enqueue(jobs.sleep, 2.0)
    await worker_record(js, namespace, worker_id, lambda r: r["busy"] == 1)
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: only processes this test started
    assert await proc.exit_code(30) == 0, proc.output()
    assert await queue.fetch_result(job.job_id, timeout=1) == 2.0, proc.output()
