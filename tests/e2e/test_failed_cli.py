"""``naq failed list|show|requeue|purge`` as real processes against the session server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from naq import Queue, Settings
from naq.job import Job
from naq.producer.failed import list_failed
from naq.supervisor import Supervisor
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor
from tests.e2e.conftest import NAQ, Proc, Spawn

pytestmark = pytest.mark.e2e

NaqFailed = Callable[..., Awaitable[Proc]]


@pytest.fixture
def naq_failed(spawn: Spawn, nats_url: str, namespace: str) -> NaqFailed:
    """Run ``naq failed ARGS`` on the test's namespace to its end."""

    async def run(*args: str, code: int = 0) -> Proc:
        proc = spawn(NAQ, "failed", *args, "--nats-url", nats_url, "--namespace", namespace)
        assert await proc.exit_code(30) == code, proc.output()
        return proc

    return run


async def _fail(queue: Queue, sup: Supervisor, func: Any, *args: Any) -> Job:
    """Enqueue a job that fails for good; return once its failed entry is stored."""
    before = sup.counters.failed
    job = await queue.enqueue(func, *args)
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), 10)
    return job


async def _garbage(nc: Any, sup: Supervisor, namespace: str) -> None:
    """A message that is not a job: it is dead-lettered without a job id."""
    before = sup.counters.failed
    await nc.jetstream().publish(Layout(namespace).job_subject("default", "junk"), b"garbage")
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), 10)


async def test_list_and_show(
    settings: Settings,
    start_supervisor: StartSupervisor,
    naq_failed: NaqFailed,
    nc: Any,
    namespace: str,
    nats_url: str,
) -> None:
    sup = await start_supervisor(["default", "other"])
    async with Queue(settings=settings) as default, Queue("other", settings=settings) as other:
        first = await _fail(default, sup, jobs.fail, "first problem")
        second = await _fail(other, sup, jobs.fail, "second problem")
    await _garbage(nc, sup, namespace)
    junk = (await list_failed(nats_url=nats_url, namespace=namespace))[-1]

    lines = (await naq_failed("list")).lines["stdout"]
    assert [line.split()[0] for line in lines] == [first.job_id, second.job_id, f"#{junk.seq}"]
    assert lines[0].split()[1:4] == ["default", "tests.jobs:fail", "attempts=1"]
    assert " ago " in lines[0]
    assert lines[0].endswith("first problem")
    assert lines[1].split()[1] == "other"
    assert lines[2].split()[1:3] == ["default", "-"]
    assert "not a naq message" in lines[2]

    only_other = (await naq_failed("list", "--queue", "other")).lines["stdout"]
    assert [line.split()[0] for line in only_other] == [second.job_id]
    oldest = (await naq_failed("list", "--limit", "1")).lines["stdout"]
    assert [line.split()[0] for line in oldest] == [first.job_id]

    shown = (await naq_failed("show", first.job_id)).lines["stdout"]
    text = "\n".join(shown)
    for expected in (
        f"job id:    {first.job_id}",
        "queue:     default",
        "function:  tests.jobs:fail",
        "attempts:  1",
        f"worker:    {sup.worker_id}",
        "first problem",
        "traceback:",
        "raise ValueError(message)",
    ):
        assert expected in text, text
    unreadable = "\n".join((await naq_failed("show", f"#{junk.seq}")).lines["stdout"])
    assert "not a readable job" in unreadable
    assert "not a naq message" in unreadable

    missing = await naq_failed("show", "no-such-job", code=1)
    assert "no failed job no-such-job" in "\n".join(missing.lines["stderr"])


async def test_requeue_by_id(
    queue: Queue, start_supervisor: StartSupervisor, naq_failed: NaqFailed, tmp_path: Path
) -> None:
    sup = await start_supervisor()
    job = await _fail(queue, sup, jobs.flaky, str(tmp_path / "tries"), 1)

    proc = await naq_failed("requeue", job.job_id)
    assert proc.lines["stdout"] == [f"{job.job_id}: requeued", "1 job requeued"]
    assert await queue.fetch_result(job.job_id, timeout=10) == 2
    assert (await naq_failed("list")).lines["stdout"] == ["no failed jobs"]

    gone = await naq_failed("requeue", job.job_id, code=1)
    assert job.job_id in "\n".join(gone.lines["stderr"])
    usage = await naq_failed("requeue", code=2)
    assert "--all" in "\n".join(usage.lines["stderr"])


async def test_requeue_all_skips_what_is_not_a_job(
    queue: Queue,
    start_supervisor: StartSupervisor,
    naq_failed: NaqFailed,
    nc: Any,
    namespace: str,
    nats_url: str,
    tmp_path: Path,
) -> None:
    sup = await start_supervisor()
    one = await _fail(queue, sup, jobs.flaky, str(tmp_path / "one"), 1)
    await _garbage(nc, sup, namespace)
    two = await _fail(queue, sup, jobs.flaky, str(tmp_path / "two"), 1)

    proc = await naq_failed("requeue", "--all")
    assert proc.lines["stdout"] == [
        f"{one.job_id}: requeued",
        f"{two.job_id}: requeued",
        "2 jobs requeued",
    ]
    [skipped] = proc.lines["stderr"]
    assert "not a readable job" in skipped
    results = await queue.fetch_results([one.job_id, two.job_id], timeout=10)
    assert results == {one.job_id: 2, two.job_id: 2}
    [left] = await list_failed(nats_url=nats_url, namespace=namespace)
    assert left.job_id is None
    assert skipped.startswith(f"skipped #{left.seq}:")


async def test_purge(
    settings: Settings, start_supervisor: StartSupervisor, naq_failed: NaqFailed
) -> None:
    sup = await start_supervisor(["default", "other"])
    async with Queue(settings=settings) as default, Queue("other", settings=settings) as other:
        for _ in range(2):
            await _fail(default, sup, jobs.fail)
        await _fail(other, sup, jobs.fail)

    assert (await naq_failed("purge", "--queue", "other")).lines["stdout"] == [
        "1 failed job removed"
    ]
    assert len((await naq_failed("list")).lines["stdout"]) == 2
    assert (await naq_failed("purge")).lines["stdout"] == ["2 failed jobs removed"]
    assert (await naq_failed("list")).lines["stdout"] == ["no failed jobs"]
    bad = await naq_failed("purge", "--queue", "a.b", code=2)
    assert "invalid queue name" in "\n".join(bad.lines["stderr"])
