"""The json-mode boundary and id checks through the real CLI: ``--allow`` and
``NAQ_ALLOW``, the process executor (functions resolved in its children), the first
seed's flow in json mode, and wildcard ids given to the commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from naq import Queue, close_connections, fetch_job_result
from tests.conftest import ROOT
from tests.e2e.conftest import NAQ, NAQ_SUPERVISE, READY, Spawn
from tests.e2e.test_readme import MAIN_PY, SAMPLE, TASKS_PY
from tests.trust import App, assert_hostile_jobs_refused, failed_reasons, publish_raw

pytestmark = pytest.mark.e2e


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path)


def _env(app: App, nats_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """Both of the app's folders on the path: only the allow-list keeps the outside
    module from being imported."""
    return {
        "NAQ_NATS_URL": nats_url,
        "NAQ_NAMESPACE": namespace,
        "PYTHONPATH": os.pathsep.join([*app.paths, str(ROOT)]),
        **extra,
    }


SUBINTERPRETERS = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="the interpreter executor needs Python 3.13"
)


@pytest.mark.parametrize(
    "executor", ["asyncio", "process", pytest.param("interpreter", marks=SUBINTERPRETERS)]
)
async def test_a_json_supervisor_refuses_what_it_was_not_allowed(
    spawn: Spawn,
    app: App,
    queue: Queue,
    nc: Any,
    nats_url: str,
    namespace: str,
    executor: str,
) -> None:
    """Run in the directory of its job module, with no allow-list: that module's
    functions run, nothing else is imported or run, in the supervisor or its children."""
    env = _env(app, nats_url, namespace, NAQ_JOB_SERIALIZER="json")
    proc = spawn(NAQ_SUPERVISE, "--executor", executor, "-c", "2", cwd=app.root, **env)
    await proc.line(READY)
    await assert_hostile_jobs_refused(nc, namespace, app)
    allowed = await publish_raw(nc, namespace, f"{app.tasks}:add", [20, 22])
    assert await queue.fetch_result(allowed, timeout=15) == 42


@pytest.mark.parametrize("how", ["flag", "environment"])
async def test_allow_names_the_modules_that_may_run(
    spawn: Spawn,
    app: App,
    tmp_path: Path,
    queue: Queue,
    nc: Any,
    nats_url: str,
    namespace: str,
    how: str,
) -> None:
    """``--allow`` / ``NAQ_ALLOW``: a module outside the working directory runs, and
    the directory's own modules are no longer implied."""
    env = _env(app, nats_url, namespace, NAQ_JOB_SERIALIZER="json")
    args = ["--allow", f"{app.outside}, tests.*"] if how == "flag" else []
    if how == "environment":
        env["NAQ_ALLOW"] = f"{app.outside},tests.*"
    proc = spawn(NAQ_SUPERVISE, *args, cwd=app.root, **env)
    await proc.line(READY)
    sub = await nc.subscribe(queue.layout.failed_subject(None))
    not_listed = await publish_raw(nc, namespace, f"{app.tasks}:add", [1, 2])
    reasons = await failed_reasons(sub, {not_listed})
    assert "allowed modules" in reasons[not_listed]
    listed = await publish_raw(nc, namespace, f"{app.outside}:run", [])
    assert await queue.fetch_result(listed, timeout=15) == 1
    by_pattern = await publish_raw(nc, namespace, "tests.jobs:add", [3, 4])
    assert await queue.fetch_result(by_pattern, timeout=15) == 7


async def test_a_bad_allow_pattern_is_a_usage_error(spawn: Spawn, nats_url: str) -> None:
    proc = spawn(NAQ_SUPERVISE, "--nats-url", nats_url, "--allow", "..tasks")
    assert await proc.exit_code(15) == 2, proc.output()
    assert "invalid module name or pattern '..tasks'" in proc.output()


async def test_the_seed_flow_in_json_mode(
    spawn: Spawn, tmp_path: Path, nats_url: str, namespace: str
) -> None:
    """The first seed's tasks.py and main.py, with ``naq worker default`` beside them,
    work in json mode with no configuration beyond the serializer."""
    (tmp_path / "tasks.py").write_text(TASKS_PY)
    (tmp_path / "main.py").write_text(MAIN_PY)
    env = {"NAQ_NATS_URL": nats_url, "NAQ_NAMESPACE": namespace, "NAQ_JOB_SERIALIZER": "json"}
    producer = spawn(sys.executable, "main.py", cwd=tmp_path, **env)
    assert await producer.exit_code(30) == 0, producer.output()
    job_id = (await producer.line(r"^Job (\w+) enqueued\.$", stream="stdout"))[1]
    spawn(NAQ, "worker", "default", cwd=tmp_path, **env)
    try:
        result = await fetch_job_result(job_id, timeout=15, nats_url=nats_url, namespace=namespace)
    finally:
        await close_connections()
    assert result == len(SAMPLE.split())


@pytest.mark.parametrize(
    "command",
    [
        ["failed", "show", "*"],
        ["failed", "requeue", ">"],
        ["failed", "requeue", "a.b"],
        ["job-control", ">", "cancel"],
        ["job-control", "*", "pause"],
        ["list-scheduled", "--id", "a b"],
    ],
)
async def test_commands_refuse_wildcard_ids(
    spawn: Spawn, nats_url: str, namespace: str, command: list[str]
) -> None:
    proc = spawn(NAQ, *command, NAQ_NATS_URL=nats_url, NAQ_NAMESPACE=namespace)
    assert await proc.exit_code(15) == 2, proc.output()
    assert "invalid job_id" in proc.output()
