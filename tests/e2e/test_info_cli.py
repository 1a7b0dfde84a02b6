"""``naq info`` as a real process: the queues' counts, the live workers and the
scheduler leader, as text and as one JSON object."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.js import JetStreamContext

from naq import Queue, Settings
from naq.scheduler import Scheduler
from tests import jobs
from tests.conftest import StartSupervisor
from tests.e2e.conftest import COLUMNS, RunNaq, table, worker_record

pytestmark = pytest.mark.e2e


async def test_info_shows_queues_workers_and_the_leader(
    settings: Settings,
    start_supervisor: StartSupervisor,
    leader: Scheduler,
    naq: RunNaq,
    js: JetStreamContext,
    namespace: str,
    nats_url: str,
) -> None:
    sup = await start_supervisor(["default", "other"], executor="thread", concurrency=2)
    async with Queue(settings=settings) as default, Queue("parked", settings=settings) as parked:
        before = sup.counters.failed
        await default.enqueue(jobs.fail, "boom", max_retries=0)
        await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), 10)
        await default.enqueue_in(3600, jobs.add, 1, 2)
        await parked.enqueue(jobs.add, 1, 2)  # no supervisor serves "parked"
        await parked.enqueue(jobs.add, 2, 3)
    await worker_record(js, namespace, sup.worker_id, lambda r: r["failed"] == 1)
    await worker_record(js, namespace, leader.heartbeat_key, lambda r: r["leader"])

    text = (await naq("info")).lines["stdout"]
    assert text[0] == f"namespace {namespace}"
    rows = table(text)
    assert list(rows) == ["default", "other"]  # served queues; "parked" only by name
    waiting, _, redelivered, failed, scheduled, _ = rows["default"]
    assert (waiting, redelivered, failed, scheduled) == (0, 0, 1, 1)
    assert rows["other"][:5] == [0, 0, 0, 0, 0]
    assert "2 live workers" in text
    [worker] = [line for line in text if line.strip().startswith(sup.worker_id)]
    assert f"{sup.worker_id}  thread 0/2 busy  queues=default,other" in worker
    assert "processed=0 failed=1" in worker
    assert any(f"{leader.heartbeat_key}  scheduler LEADER" in line for line in text)
    assert text[-1].startswith(f"scheduler leader: {leader.scheduler_id} (host ")
    assert all(nats_url not in line for line in text)

    as_json = await naq("info", "--json")
    [line] = as_json.lines["stdout"]
    state = json.loads(line)
    assert set(state) == {"namespace", "queues", "workers", "leader"}
    assert state["namespace"] == namespace
    assert [q["name"] for q in state["queues"]] == ["default", "other"]
    assert set(state["queues"][0]) == set(COLUMNS[1:]) | {"name"}
    assert state["queues"][0]["failed"] == 1
    assert {w["id"] for w in state["workers"]} == {sup.worker_id, leader.heartbeat_key}
    assert state["leader"]["id"] == leader.scheduler_id

    only = (await naq("info", "parked", "other")).lines["stdout"]
    assert table(only) == {"parked": [2, 0, 0, 0, 0, 0], "other": table(only)["other"]}
    assert list(table(only)) == ["parked", "other"]


async def test_info_errors(naq: RunNaq) -> None:
    """An unknown queue is the user's error (exit 1); a bad name is a usage error
    (exit 2) found before anything connects: nothing listens at port 1."""
    unknown = await naq("info", "nope", code=1)
    assert any("no queue 'nope' in namespace" in line for line in unknown.lines["stderr"])
    bad = await naq("info", "bad.name", code=2, url="nats://127.0.0.1:1")
    assert any("invalid queue name 'bad.name'" in line for line in bad.lines["stderr"])


async def test_info_on_an_empty_namespace(naq: RunNaq) -> None:
    text = (await naq("info")).lines["stdout"]
    assert text[1:] == ["", "no queues", "", "no live workers", "", "scheduler leader: none"]
    state = json.loads((await naq("info", "--json")).lines["stdout"][0])
    assert state["queues"] == state["workers"] == []
    assert state["leader"] is None
