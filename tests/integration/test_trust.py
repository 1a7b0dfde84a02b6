"""Trust boundaries against a real server: what a json-mode supervisor runs, and what
hostile ids, stored records and broadcasts can make naq do.

Jobs here are published raw (a hand-built job message on its job subject), as anyone
who may publish there could; nothing goes through the producer's own checks.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from naq import (
    ConfigurationError,
    Queue,
    cancel_job,
    cancel_scheduled_job,
    fetch_job_result,
    fetch_job_results,
    fetch_job_status,
    get_failed,
    pause_scheduled_job,
    requeue_failed,
    resume_scheduled_job,
)
from naq.job import DEFAULT_OPTIONS, new_job_id
from naq.producer.schedules import (
    cancel_recurring,
    list_schedules,
    modify_scheduled_job,
    schedule,
)
from naq.transport.names import Layout
from naq.wire import JobMeta, encode_job
from tests import jobs
from tests.conftest import MakeNASQueue, StartSupervisor, first_json
from tests.trust import App, assert_hostile_jobs_refused, failed_reasons, publish_raw


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The test process works in the app directory, as ``naq worker`` would."""
    made = App(tmp_path)
    for path in made.paths:
        monkeypatch.syspath_prepend(path)
    monkeypatch.chdir(made.root)
    importlib.invalidate_caches()
    yield made
    for name in (made.tasks, made.outside):
        sys.modules.pop(name, None)


# -- json mode is a boundary ------------------------------------------------------------


@pytest.mark.parametrize("executor", ["asyncio", "thread"])
async def test_json_mode_runs_only_the_working_directorys_functions(
    app: App,
    start_supervisor: StartSupervisor,
    queue: Queue,
    nc: Any,
    namespace: str,
    executor: str,
) -> None:
    """Refused before dispatch (nothing imported) or, for what only the attribute walk
    shows, where the function is resolved: each one dead-lettered with its reason."""
    await start_supervisor(executor=executor, job_serializer="json")
    await assert_hostile_jobs_refused(nc, namespace, app)

    allowed = await publish_raw(nc, namespace, f"{app.tasks}:add", [20, 22])
    assert await queue.fetch_result(allowed, timeout=10) == 42


async def test_an_allow_list_replaces_the_working_directory(
    app: App, start_supervisor: StartSupervisor, queue: Queue, nc: Any, namespace: str
) -> None:
    """``allow`` names modules anywhere on the path; the directory's own are then not
    implied, and the modules named may still not lead elsewhere."""
    await start_supervisor(job_serializer="json", allow=f"{app.outside},tests.jobs")
    sub = await nc.subscribe(Layout(namespace).failed_subject(None))
    not_listed = await publish_raw(nc, namespace, f"{app.tasks}:add", [1, 2])
    walks_out = await publish_raw(nc, namespace, "tests.jobs:time.sleep", [0])
    reasons = await failed_reasons(sub, {not_listed, walks_out})
    assert "allowed modules" in reasons[not_listed]
    assert "'time' is a module" in reasons[walks_out]
    listed = await publish_raw(nc, namespace, "tests.jobs:add", [2, 3])
    assert await queue.fetch_result(listed, timeout=10) == 5
    outside = await publish_raw(nc, namespace, f"{app.outside}:run", [])
    assert await queue.fetch_result(outside, timeout=10) == 1
    assert app.imported.exists()  # allowed, so imported: the marker works


async def test_pickle_mode_is_unchanged(
    app: App, start_supervisor: StartSupervisor, queue: Queue, nc: Any
) -> None:
    """No allow-list in pickle mode: unpickling runs code by design, so the list would
    protect nothing there (signing and publish permissions do)."""
    await start_supervisor()
    job = await queue.enqueue(jobs.add, 1, 2)
    assert await queue.fetch_result(job.job_id, timeout=10) == 3


# -- no wildcards -----------------------------------------------------------------------


async def _stored(nc: Any, namespace: str) -> int:
    return int((await nc.jetstream().stream_info(Layout(namespace).stream)).state.messages)


async def test_wildcard_and_dotted_ids_are_refused_and_delete_nothing(
    queue: Queue, nc: Any, namespace: str, target: dict[str, str]
) -> None:
    queued = await queue.enqueue(jobs.add, 1, 2)
    delayed = await queue.enqueue_in(3600, jobs.add, 3, 4)
    recurring = await schedule(jobs.add, 5, 6, interval=3600, **target)
    before = await _stored(nc, namespace)
    assert before == 2

    calls = {
        "cancel_job *": cancel_job("*", **target),
        "cancel_job >": cancel_job(">", **target),
        "cancel_job ns.>": cancel_job(f"{queued.job_id}.>", **target),
        "cancel_scheduled_job >": cancel_scheduled_job(">", **target),
        "cancel_scheduled_job *": cancel_scheduled_job("*", **target),
        "Queue.cancel_scheduled >": queue.cancel_scheduled(">"),
        "Queue.cancel *": queue.cancel("*"),
        "fetch_job_status a.b": fetch_job_status("a.b", **target),
        "fetch_job_status >": fetch_job_status(">", **target),
        "fetch_job_result *": fetch_job_result("*", **target),
        "fetch_job_results": fetch_job_results([queued.job_id, ">"], 1, **target),
        "get_failed >": get_failed(">", **target),
        "requeue_failed *": requeue_failed(["*"], **target),
        "cancel_recurring >": cancel_recurring(">", **target),
        "pause *": pause_scheduled_job("*", **target),
        "resume >": resume_scheduled_job(">", **target),
        "modify >": modify_scheduled_job(">", interval=60, **target),
        "list_schedules filter": list_schedules(schedule_id="a b", **target),
        "depends_on >": queue.enqueue(jobs.add, 1, 1, depends_on=">"),
    }
    for name, call in calls.items():
        with pytest.raises(ConfigurationError, match="job_id"):
            await call
        assert await _stored(nc, namespace) == before, f"{name} deleted jobs"

    async def completed() -> None:
        async for _ in queue.as_completed(["*"], 1):
            pass

    with pytest.raises(ConfigurationError):
        await completed()
    assert (await queue.status(queued.job_id)).status == "queued"
    assert (await queue.status(delayed.job_id)).status == "scheduled"
    assert [s.schedule_id for s in await list_schedules(**target)] == [recurring]


# -- no confused deputy -----------------------------------------------------------------


async def test_a_forged_held_record_releases_only_to_its_job_subject(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
) -> None:
    """A held record whose ``subject`` is a JetStream API call, and whose headers ask
    the server for things: the release publishes the job on its own subject, with
    neither, and the supervisor deletes nothing with its credentials."""
    layout = Layout(namespace)
    js = nc.jetstream()
    await start_supervisor()
    await js.stream_info(layout.failed_stream)  # it exists
    api = await nc.subscribe(f"$JS.API.STREAM.DELETE.{layout.failed_stream}")
    await nc.flush()

    dep, victim = new_job_id(), new_job_id()
    meta = JobMeta(victim, "tests.jobs:add", "default", "json", time.time(), DEFAULT_OPTIONS, False)
    head = {
        "waiting": [dep],
        "subject": f"$JS.API.STREAM.DELETE.{layout.failed_stream}",
        "queue": "default",
        "t": time.time(),
        "headers": {"Nats-Expected-Last-Sequence": "999999", "X-Kept": "yes"},
    }
    deps = await js.key_value(layout.deps_bucket)
    body = encode_job(meta, json.dumps([[40, 2], {}]).encode())
    await deps.put(f"held.{victim}", json.dumps(head).encode() + b"\n" + body)
    await deps.put(f"waiters.{dep}", json.dumps([victim]).encode())

    finished = await queue.enqueue(jobs.add, 1, 1, job_id=dep)
    assert await queue.fetch_result(finished.job_id, timeout=10) == 2
    assert await queue.fetch_result(victim, timeout=10) == 42  # released where it belongs

    await js.stream_info(layout.failed_stream)  # still there
    with pytest.raises(TimeoutError):
        await api.next_msg(timeout=0.2)


async def _running_here(nc: Any, namespace: str, worker_id: str, job_ids: set[str]) -> None:
    """Until a heartbeat of ``worker_id`` lists every one of ``job_ids`` as running."""
    kv = await nc.jetstream().key_value(Layout(namespace).workers_bucket)

    def lists_all(record: dict[str, Any]) -> bool:
        return job_ids <= {job["job_id"] for job in record.get("running", ())}

    assert await first_json(kv, worker_id, lists_all, 10) is not None


async def test_a_bare_cancel_broadcast_stops_nothing(
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    target: dict[str, str],
    tmp_path: Path,
) -> None:
    """Without a ``cancelled`` record the broadcast is a hint that leads nowhere: the
    running job finishes, and a job arriving after a hint for its id runs. A real
    cancel, broadcast after the hints, shows they were heard (the subscription handles
    its messages in order)."""
    sup = await start_supervisor(concurrency=3)
    gate, started = tmp_path / "gate", tmp_path / "started"
    running = await queue.enqueue(jobs.wait_for_file, str(gate), str(started), 30)
    other = await queue.enqueue(jobs.async_sleep, 30)
    await _running_here(nc, namespace, sup.worker_id, {running.job_id, other.job_id})
    arriving = new_job_id()
    layout = Layout(namespace)
    for job_id in (running.job_id, arriving, ">", "*"):
        await nc.publish(layout.cancel_subject, job_id.encode())
    await nc.flush()

    assert await cancel_job(other.job_id, **target) is True  # after the hints
    await asyncio.wait_for(sup.wait_until(lambda _: other.job_id not in sup.running_jobs()), 10)
    assert running.job_id in sup.running_jobs()

    late = await queue.enqueue(jobs.add, 2, 2, job_id=arriving)
    assert await queue.fetch_result(late.job_id, timeout=10) == 4
    gate.touch()
    assert await queue.fetch_result(running.job_id, timeout=10) == int(started.read_text())
    assert (await fetch_job_status(other.job_id, **target)).status == "cancelled"


async def test_a_nasqueue_namespace_cannot_reach_naqs_subjects(
    make_nasqueue: MakeNASQueue, namespace: str, queue: Queue, nc: Any
) -> None:
    for reserved in ("jobs", "sched", "failed", "control", "nasq", "nasq-stored"):
        with pytest.raises(ConfigurationError, match="is reserved"):
            make_nasqueue(f"{namespace}.{reserved}")
        with pytest.raises(ConfigurationError, match="is reserved"):
            make_nasqueue(f"{namespace}.{reserved}.deeper")
    await queue.connection()  # the namespace's streams exist
    nasq = make_nasqueue(f"{namespace}.app")  # not naq's: fine
    assert await nasq.connect(), nasq.connect_error
    await nasq.push("orders", "hello")
    assert await nasq.pop() is not None
    assert await _stored(nc, namespace) == 0
