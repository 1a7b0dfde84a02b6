"""The image from ``docker/Dockerfile``, run with podman against nats-servers on the host:
it runs jobs enqueued from the host, drains on SIGTERM, retries a job whose child was
killed inside it, and its HEALTHCHECK turns unhealthy when NATS goes away."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js import JetStreamContext

from naq import Queue
from naq.transport.server import EmbeddedServer, free_port
from tests import jobs
from tests.conftest import until
from tests.container import jobs as container_jobs
from tests.container.conftest import RunContainer, podman
from tests.e2e import jobs as e2e_jobs
from tests.e2e.conftest import READY, worker_record

pytestmark = pytest.mark.container


def naq_env(nats_url: str, namespace: str, **more: str) -> dict[str, str]:
    """The container's whole configuration: NAQ_* variables."""
    return {
        "NAQ_NATS_URL": nats_url,
        "NAQ_NAMESPACE": namespace,
        "NAQ_HEARTBEAT_INTERVAL": "0.5",
        **{f"NAQ_{key.upper()}": value for key, value in more.items()},
    }


async def test_the_image_runs_jobs_enqueued_from_the_host(
    run_container: RunContainer, queue: Queue, nats_url: str, namespace: str
) -> None:
    name, proc = run_container(env=naq_env(nats_url, namespace))
    await proc.line(READY)
    user = podman("exec", name, "id", "-un").stdout.strip()
    assert user == "naq", "the supervisor runs without privileges"
    init = podman("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert init[:3] == ["/usr/bin/tini", "--", "naq-supervise"]

    add = await queue.enqueue(jobs.add, 2, 3)
    echo = await queue.enqueue(jobs.echo, "a", key="b")
    assert await queue.fetch_result(add.job_id, timeout=20) == 5
    assert await queue.fetch_result(echo.job_id, timeout=20) == [["a"], {"key": "b"}]


async def test_sigterm_drains_the_running_job_and_the_container_exits_0(
    run_container: RunContainer,
    queue: Queue,
    js: JetStreamContext,
    nats_url: str,
    namespace: str,
) -> None:
    name, proc = run_container(
        env=naq_env(nats_url, namespace, concurrency="1", shutdown_grace="20")
    )
    worker_id = (await proc.line(READY))["id"]
    slow = await queue.enqueue(jobs.sleep, 2)
    await worker_record(js, namespace, worker_id, lambda r: r["busy"] == 1, timeout=20)

    podman("kill", "--signal", "TERM", name)  # to PID 1, tini, which hands it on
    await proc.line(r"stopping: no new jobs; 1 running")
    assert await proc.exit_code(30) == 0, proc.output()
    assert await queue.fetch_result(slow.job_id, timeout=1) == 2, "the running job was lost"
    await proc.line(rf"supervisor {worker_id} stopped: 1 processed, 0 failed")


async def test_a_child_killed_inside_the_container_costs_its_job_one_attempt(
    run_container: RunContainer,
    queue: Queue,
    js: JetStreamContext,
    nats_url: str,
    namespace: str,
) -> None:
    name, proc = run_container(
        env=naq_env(nats_url, namespace, executor="process", concurrency="2")
    )
    worker_id = (await proc.line(READY))["id"]
    job = await queue.enqueue(e2e_jobs.slow_first_run, "/tmp/ran-once", 60, max_retries=1)
    record = await worker_record(
        js,
        namespace,
        worker_id,
        lambda r: any(c["job_id"] == job.job_id for c in r["children"]),
        timeout=20,
    )
    victim = next(c["pid"] for c in record["children"] if c["job_id"] == job.job_id)
    podman("exec", name, "sh", "-c", f"kill -9 {victim}")  # its pid in the container

    assert await queue.fetch_result(job.job_id, timeout=30) == "second run"
    await proc.line(r"attempt 1: worker process killed by signal SIGKILL")
    podman("kill", "--signal", "TERM", name)
    assert await proc.exit_code(30) == 0, proc.output()
    status = podman("ps", "--all", "--filter", f"name={name}", "--format", "{{.Status}}")
    assert status.stdout.startswith("Exited (0)"), status.stdout


async def test_tini_reaps_a_process_whose_parent_is_gone(
    run_container: RunContainer, queue: Queue, nats_url: str, namespace: str
) -> None:
    """Without an init as PID 1 an orphan that exits stays a zombie for good (with
    ``--entrypoint naq-supervise`` this test times out)."""
    name, proc = run_container(env=naq_env(nats_url, namespace))
    await proc.line(READY)
    job = await queue.enqueue(container_jobs.orphan, 0.5)
    pid = await queue.fetch_result(job.job_id, timeout=20)

    async def reaped() -> bool:
        stat = podman("exec", name, "cat", f"/proc/{pid}/stat", check=False)
        return stat.returncode != 0  # gone from /proc: reaped, not a zombie

    await until(reaped, 15, f"the orphan {pid} reaped")


async def test_health_turns_unhealthy_when_nats_goes_away(
    run_container: RunContainer, namespace: str, tmp_path: Path
) -> None:
    server = EmbeddedServer(free_port(), tmp_path / "js").start()
    try:
        name, proc = run_container(env=naq_env(server.url, namespace))
        await proc.line(READY)
        healthy = podman("healthcheck", "run", name, check=False)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        said = podman("exec", name, "naq", "health")
        assert said.stdout.startswith("healthy: worker "), said.stdout

        server.stop()
        unhealthy = podman("healthcheck", "run", name, check=False)
        assert unhealthy.returncode == 1, unhealthy.stdout + unhealthy.stderr
        said = podman("exec", name, "naq", "health", check=False)
        assert said.returncode == 1
        assert said.stderr.startswith("unhealthy: cannot reach NATS"), said.stderr
    finally:
        server.stop()
