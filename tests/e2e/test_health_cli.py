"""``naq health``, the image's HEALTHCHECK, against real supervisors and servers: healthy
while a supervisor runs, unhealthy with a reason once it stops, dies, or loses NATS."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from naq.transport.server import EmbeddedServer, free_port
from tests.conftest import until
from tests.e2e.conftest import NAQ, NAQ_SUPERVISE, READY, Spawn, SuperviseFn
from tests.procs import Proc

pytestmark = pytest.mark.e2e


def health(spawn: Spawn, *args: str, **env: str) -> Proc:
    proc = spawn(NAQ, "health", "--heartbeat-interval", "0.2", *args, **env)
    proc.wait_exit(30)
    return proc


def unhealthy_within(spawn: Spawn, timeout: float, *args: str) -> Proc:
    """Run ``naq health`` until it says unhealthy (a record expiring is the server's
    doing: there is no event to wait on from here but the check itself)."""
    deadline = time.monotonic() + timeout
    while True:
        proc = health(spawn, *args)
        if proc.popen.returncode != 0 or time.monotonic() > deadline:
            return proc


async def test_healthy_while_the_supervisor_runs_then_unhealthy_once_it_stopped(
    supervise: SuperviseFn, spawn: Spawn, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    id_file = tmp_path / "worker.id"
    proc = supervise("--worker-id-file", str(id_file))
    worker_id = (await proc.line(READY))["id"]
    assert id_file.read_text().strip() == worker_id

    args = ("--nats-url", nats_url, "--namespace", namespace)
    ok = health(spawn, *args, NAQ_WORKER_ID_FILE=str(id_file))  # the image's way: env
    assert ok.popen.returncode == 0, ok.output()
    assert ok.matching(rf"^healthy: worker {worker_id}: running", "stdout"), ok.output()

    proc.send(signal.SIGTERM)
    assert await proc.exit_code(15) == 0, proc.output()
    assert not id_file.exists(), "a clean stop leaves no id behind"
    gone = health(spawn, *args, "--worker-id-file", str(id_file))
    assert gone.popen.returncode == 1, gone.output()
    assert gone.matching(r"^unhealthy: no worker id in .*: the supervisor is not running"), (
        gone.output()
    )


async def test_unhealthy_once_a_killed_supervisors_heartbeat_expires(
    supervise: SuperviseFn, spawn: Spawn, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """A supervisor killed outright leaves its id file: its expired heartbeat decides."""
    id_file = tmp_path / "worker.id"
    proc = supervise("--worker-id-file", str(id_file))
    worker_id = (await proc.line(READY))["id"]
    args = ("--nats-url", nats_url, "--namespace", namespace, "--worker-id-file", str(id_file))
    assert health(spawn, *args).popen.returncode == 0

    proc.kill()
    assert id_file.read_text().strip() == worker_id
    dead = unhealthy_within(spawn, 15, *args)
    assert dead.popen.returncode == 1, dead.output()
    # Stale before the server expires it (the TTL is at least a second), or gone.
    reason = rf"^unhealthy: worker {worker_id}: (no heartbeat|last heartbeat [\d.]+s ago)"
    assert dead.matching(reason), dead.output()


async def test_without_an_id_file_every_supervisor_of_this_host_counts(
    supervise: SuperviseFn, spawn: Spawn, nats_url: str, namespace: str
) -> None:
    args = ("--nats-url", nats_url, "--namespace", namespace)
    fresh = health(spawn, *args)
    assert fresh.popen.returncode == 1, fresh.output()
    assert fresh.matching(rf"^unhealthy: namespace {namespace} has no workers bucket"), (
        fresh.output()
    )

    first = supervise()
    await first.line(READY)
    first.send(signal.SIGTERM)
    assert await first.exit_code(15) == 0, first.output()
    none = health(spawn, *args)
    assert none.popen.returncode == 1, none.output()
    host = socket.gethostname()
    assert none.matching(rf"^unhealthy: no supervisor heartbeat from host {host}"), none.output()

    worker_id = (await supervise().line(READY))["id"]
    ok = health(spawn, *args)
    assert ok.popen.returncode == 0, ok.output()
    assert ok.matching(rf"^healthy: worker {worker_id}: running", "stdout"), ok.output()


async def test_unhealthy_when_nats_goes_away(spawn: Spawn, namespace: str, tmp_path: Path) -> None:
    server = EmbeddedServer(free_port(), tmp_path / "js").start()
    try:
        id_file = tmp_path / "worker.id"
        sup = spawn(
            NAQ_SUPERVISE, "--nats-url", server.url, "--namespace", namespace,
            "--heartbeat-interval", "0.2", "--worker-id-file", str(id_file),
        )  # fmt: skip
        await sup.line(READY)
        args = ("--nats-url", server.url, "--namespace", namespace, "--worker-id-file")
        assert health(spawn, *args, str(id_file)).popen.returncode == 0
        server.stop()
        down = health(spawn, *args, str(id_file))
        assert down.popen.returncode == 1, down.output()
        assert len(down.lines["stderr"]) == 1, down.output()  # one line, the reason
        assert down.matching(r"^unhealthy: cannot reach NATS: cannot connect to NATS at"), (
            down.output()
        )
    finally:
        server.stop()


async def test_a_scheduler_is_judged_by_its_own_heartbeat(
    spawn: Spawn, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    """The compose file's schedulers run the same image, so the same HEALTHCHECK."""
    id_file = tmp_path / "scheduler.id"
    args = ("--nats-url", nats_url, "--namespace", namespace, "--worker-id-file", str(id_file))
    proc = spawn(NAQ, "scheduler", "--heartbeat-interval", "0.2", *args)

    async def written() -> bool:
        return id_file.exists()

    await until(written, 15, "the scheduler's id file")
    ok = health(spawn, *args)
    assert ok.popen.returncode == 0, ok.output()
    assert ok.matching(r"^healthy: worker scheduler-\S+: running", "stdout"), ok.output()

    proc.send(signal.SIGTERM)
    assert await proc.exit_code(15) == 0, proc.output()
    assert not id_file.exists()
