"""``docker/compose.yaml`` brought up with podman-compose on images built here (naq's
from ``docker/Dockerfile``, nats-server's from ``docker/nats.Dockerfile``) and named
through the file's variables: three NATS nodes form one JetStream cluster (the layout
the cluster tests run), two supervisors (``--scale supervisor=2``) run a job enqueued
from the host on R3 streams, and one of two schedulers fires a recurring job."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from naq import Queue
from naq.producer.info import list_workers
from naq.producer.schedules import list_schedules, schedule
from naq.scheduler.scheduler import run_job_id
from naq.settings import Settings
from naq.transport.names import Layout
from naq.transport.server import free_ports
from tests import jobs
from tests.conftest import ROOT, subprocess_env, until
from tests.container.conftest import build_args, podman

pytestmark = pytest.mark.container

NATS_IMAGE = "localhost/nats-test:latest"
COMPOSE = [str(Path(sys.executable).parent / "podman-compose")]


@pytest.fixture(scope="session")
def nats_image(base_image: str) -> str:
    podman(*build_args(), "-f", "docker/nats.Dockerfile", "-t", NATS_IMAGE, str(ROOT), timeout=900)
    return NATS_IMAGE


class Project:
    """One compose project: its name, variables and published ports."""

    def __init__(self, image: str, nats_image: str) -> None:
        self.name = f"naqtest{uuid.uuid4().hex[:8]}"
        self.port, self.monitor_port, self.dashboard_port = free_ports(3)
        self.namespace = self.name
        self.token = uuid.uuid4().hex
        self.env = subprocess_env(
            NAQ_IMAGE=image,
            NATS_IMAGE=nats_image,
            NATS_PORT=str(self.port),
            NATS_MONITOR_PORT=str(self.monitor_port),
            NAQ_NAMESPACE=self.namespace,
            NAQ_TESTS_DIR=str(ROOT / "tests"),
            DASHBOARD_PORT=str(self.dashboard_port),
            NAQ_DASHBOARD_TOKEN=self.token,
        )

    def compose(self, *args: str, timeout: float = 300) -> str:
        files = ["-f", "docker/compose.yaml", "-f", "tests/container/compose.test.yaml"]
        done = subprocess.run(
            [*COMPOSE, "--profile", "dashboard", "-p", self.name, *files, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)}: {done.stdout}\n{done.stderr}")
        return done.stdout

    def monitor(self, path: str) -> dict[str, Any] | None:
        """The first node's monitoring endpoint, or None while it does not answer."""
        url = f"http://127.0.0.1:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                result: dict[str, Any] = json.load(answer)
                return result
        except OSError:
            return None

    def dashboard(self, path: str, token: str | None) -> tuple[int, str] | None:
        """The dashboard's answer (status, body), or None while it does not answer."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.dashboard_port}{path}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, ""
        except OSError:
            return None

    def logs(self) -> str:
        """Every container's output, each line named by its container."""
        names = self.containers()
        if not names:
            return ""
        done = podman("logs", "--names", *names, check=False)
        return done.stdout + done.stderr

    def containers(self) -> list[str]:
        listed = podman("ps", "--all", "--filter", f"label=io.podman.compose.project={self.name}",
                        "--format", "{{.Names}}")  # fmt: skip
        return listed.stdout.split()


@pytest.fixture
def project(image: str, nats_image: str, tmp_path: Path) -> Iterator[Project]:
    """The project up; at the end its containers' logs are kept in the test's
    ``compose.log`` (pytest keeps the last runs' temporary folders), then it is taken
    down with its volumes."""
    up = Project(image, nats_image)
    try:
        up.compose("up", "-d", "--scale", "supervisor=2")
        yield up
    finally:
        (tmp_path / "compose.log").write_text(up.logs())
        # podman-compose's down knows only the first container of a scaled service, and
        # the others depend on the nats containers, which it then cannot remove: those
        # go first, while NATS is still up for their drain.
        scaled = [name for name in up.containers() if not name.endswith("_1")]
        if scaled:
            podman("rm", "--force", *scaled)
        up.compose("down", "--volumes", "--timeout", "10")
        left = up.containers()
        if left:
            podman("rm", "--force", *left)
        assert not up.containers(), "the project's containers outlived the test"


async def test_compose_runs_a_three_node_cluster_a_supervisor_and_a_scheduler(
    project: Project,
) -> None:
    async def formed() -> bool:
        """n1 routes to n2 and n3, and JetStream's meta group has all three with a leader
        (n1 sees only the leader's "current" flag when it follows: not judged)."""
        routez = project.monitor("/routez") or {}
        routes = {route.get("remote_name") for route in routez.get("routes") or []}
        meta = (project.monitor("/jsz") or {}).get("meta_cluster", {})
        peers = {p["name"] for p in meta.get("replicas") or []}
        return routes == {"n2", "n3"} and peers == {"n2", "n3"} and bool(meta.get("leader"))

    await until(formed, 90, "three nodes forming one JetStream cluster")
    varz = project.monitor("/varz") or {}
    assert varz["server_name"] == "n1"
    assert varz["cluster"]["name"] == "naq"
    assert varz["jetstream"]["config"]["sync_always"] is True
    assert (project.monitor("/jsz") or {})["meta_cluster"]["cluster_size"] == 3

    settings = Settings(
        nats_url=f"nats://127.0.0.1:{project.port}", namespace=project.namespace, replicas=3
    )
    async with Queue(settings=settings) as queue:
        job = await queue.enqueue(jobs.add, 2, 3)  # declares the streams, R3
        assert await queue.fetch_result(job.job_id, timeout=120) == 5
        jsz = project.monitor("/jsz?acc=$G&streams=true&config=true") or {}
        streams = {
            detail["name"]: detail
            for account in jsz.get("account_details") or []
            for detail in account.get("stream_detail") or []
        }
        jobs_stream = streams[Layout(project.namespace).stream]
        assert jobs_stream["config"]["num_replicas"] == 3

        target = {"nats_url": settings.nats_url, "namespace": settings.namespace}
        sid = await schedule(jobs.add, 20, 22, interval=1, **target)
        fires: list[float] = []

        async def fired() -> bool:
            records = await list_schedules(schedule_id=sid, **target)
            fires.extend(r.last_run for r in records if r.last_run is not None)
            return bool(fires)

        await until(fired, 60, "the scheduler firing the recurring job")
        run = run_job_id(sid, fires[0])
        assert await queue.fetch_result(run, timeout=30) == 42

        # Every role up: podman-compose (podman < 4.6) does not wait for the nodes'
        # health, so a supervisor or scheduler that started first exits and is restarted.
        records: list[dict[str, Any]] = []

        async def all_up() -> bool:
            records[:] = await list_workers(**target)
            roles = [r.get("role") for r in records]
            return roles.count("scheduler") == 2 and len(roles) == 4

        await until(all_up, 90, "two supervisors and two schedulers alive")
        schedulers = [r for r in records if r.get("role") == "scheduler"]
        assert sorted(r["leader"] for r in schedulers) == [False, True], "one leads"
        states = [r["state"] for r in records if r.get("role") != "scheduler"]
        assert states == ["running", "running"], "two supervisors (--scale supervisor=2)"

        # The dashboard (the compose file's "dashboard" profile) on the same cluster:
        # refused without the token, the overview with it, naming the queue used above.
        async def answers() -> bool:
            return project.dashboard("/", project.token) is not None

        await until(answers, 60, "the dashboard answering")
        refused = project.dashboard("/", None)
        assert refused is not None
        assert refused[0] in (401, 403)
        assert project.dashboard("/", "not-the-token") != project.dashboard("/", project.token)
        status, page = project.dashboard("/", project.token) or (0, "")
        assert status == 200
        assert "default" in page
        assert project.namespace in page
