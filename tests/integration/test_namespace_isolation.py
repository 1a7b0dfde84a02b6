"""Two namespaces on one server share nothing: each resource, seen from the other side.

The session's tests rely on this (one server, a namespace per test), and so do users
who run several applications on one NATS. Each test puts something in namespace A
and shows that namespace B, through naq's own API, neither sees it nor changes it,
then that A still has it: a check that only looks at B would pass as well if A's
thing had never been made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError

from naq.errors import JobFailed, JobNotFound, JobPending, ResultTimeout
from naq.executors.registry import load_executor
from naq.producer.failed import get_failed, list_failed, purge_failed, requeue_failed
from naq.producer.schedules import list_schedules, pause_scheduled_job, schedule
from naq.queue import Queue, cancel_scheduled_job, fetch_job_result, purge_queue
from naq.scheduler import ScheduleNotFound, Scheduler
from naq.settings import Settings
from naq.state.workers import list_workers
from naq.supervisor import Supervisor
from naq.transport.connect import Client
from naq.transport.names import Layout
from naq.transport.pool import close_connections
from tests import jobs
from tests.conftest import first_json, run_until_ready, stop_all

FAST_SCHEDULER = {"scheduler_lock_ttl": 2.0, "scheduler_lock_renew_interval": 1.0}
WAIT = 10.0
"""Seconds any one expected event may take before the test fails."""


@dataclass
class Side:
    """One namespace: its settings, a Queue on "default", and a client to look with."""

    settings: Settings
    queue: Queue
    client: Client

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    @property
    def layout(self) -> Layout:
        return Layout(self.namespace)

    @property
    def target(self) -> dict[str, Any]:
        """Connection arguments of naq's module-level functions."""
        return {"nats_url": self.settings.nats_url, "namespace": self.namespace}

    async def status(self, job_id: str) -> str:
        return (await self.queue.status(job_id)).status


def _new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"  # as the shared `namespace` fixture makes them


@contextlib.asynccontextmanager
async def _side(settings: Settings, nc: Any) -> AsyncIterator[Side]:
    async with Queue(settings=settings) as queue:
        client = Client(nc, settings)
        await client.layout(settings.namespace)
        yield Side(settings, queue, client)


@pytest.fixture
async def sides(settings: Settings, nc: Any) -> AsyncIterator[tuple[Side, Side]]:
    """A (the test's own namespace) and B (a second random one), declared both."""
    fast = settings.replace(heartbeat_interval=0.2)
    other = fast.replace(namespace=_new_namespace())
    async with _side(fast, nc) as a, _side(other, nc) as b:
        yield a, b
    await close_connections()  # the module-level functions' pooled connection


Supervise = Callable[..., Awaitable[Supervisor]]


@pytest.fixture
async def supervise() -> AsyncIterator[Supervise]:
    """In-process supervisors for either side; each is drained at teardown."""
    running: list[tuple[Supervisor, asyncio.Task[int]]] = []

    async def start(side: Side, queues: list[str] | None = None) -> Supervisor:
        sup = Supervisor(side.settings, load_executor("asyncio")(4, side.settings), queues)
        running.append((sup, await run_until_ready(sup)))
        return sup

    yield start
    await stop_all(running)


StartScheduler = Callable[[Side], Awaitable[Scheduler]]


@pytest.fixture
async def schedulers() -> AsyncIterator[StartScheduler]:
    running: list[tuple[Scheduler, asyncio.Task[int]]] = []

    async def start(side: Side) -> Scheduler:
        sched = Scheduler(side.settings.replace(**FAST_SCHEDULER), f"sched-{side.namespace}")
        task = asyncio.create_task(sched.run())
        await asyncio.wait_for(sched.ready.wait(), WAIT)
        running.append((sched, task))
        return sched

    yield start
    for sched, _ in running:
        sched.request_stop()
    for _, task in running:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 10)


async def _kv_record(
    side: Side, bucket: str, key: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first value of ``key`` in one of ``side``'s buckets matching ``predicate``."""
    kv = await side.client.js.key_value(bucket)
    seen: list[dict[str, Any]] = []
    record = await first_json(kv, key, predicate, WAIT, seen)
    assert record is not None, f"no matching {bucket}[{key}] in {WAIT}s; saw {seen[-3:]}"
    return record


async def _running(side: Side, sup: Supervisor, job_id: str) -> None:
    """Until ``sup``'s heartbeat lists ``job_id`` as running."""
    await _kv_record(
        side,
        side.layout.workers_bucket,
        sup.worker_id,
        lambda r: any(j["job_id"] == job_id for j in r.get("running", ())),
    )


async def _not_found(side: Side, job_id: str) -> None:
    with pytest.raises(JobNotFound) as caught:
        await side.queue.status(job_id)
    assert not isinstance(caught.value, JobPending)
    assert side.namespace in str(caught.value)


# -- jobs --------------------------------------------------------------------------------


async def test_a_supervisor_runs_only_its_own_namespaces_jobs(
    sides: tuple[Side, Side], supervise: Supervise
) -> None:
    """The same job id in both: with a shared stream, the second enqueue would be
    dropped as a duplicate, and one supervisor would run both jobs."""
    a, b = sides
    await a.queue.enqueue(jobs.add, 1, 1, job_id="same-id")
    await b.queue.enqueue(jobs.add, 2, 2, job_id="same-id")
    sup_b = await supervise(b)
    assert await b.queue.fetch_result("same-id", timeout=WAIT) == 4
    await asyncio.wait_for(sup_b.wait_until(lambda c: c.processed >= 1), WAIT)
    assert await a.status("same-id") == "queued"

    sup_a = await supervise(a)
    assert await a.queue.fetch_result("same-id", timeout=WAIT) == 2
    assert (await a.queue.status("same-id")).worker == sup_a.worker_id
    assert (await b.queue.status("same-id")).worker == sup_b.worker_id
    await asyncio.wait_for(sup_a.wait_until(lambda c: c.processed >= 1), WAIT)
    assert (sup_a.counters.processed, sup_b.counters.processed) == (1, 1)


# -- results -----------------------------------------------------------------------------


async def test_a_result_is_read_only_in_its_namespace(
    sides: tuple[Side, Side], supervise: Supervise
) -> None:
    a, b = sides
    job = await a.queue.enqueue(jobs.add, 2, 3)
    await supervise(a)
    assert await a.queue.fetch_result(job.job_id, timeout=WAIT) == 5
    assert await fetch_job_result(job.job_id, **a.target) == 5

    with pytest.raises(JobNotFound) as caught:
        await b.queue.fetch_result(job.job_id)
    assert not isinstance(caught.value, JobPending), "B takes A's job for one of its own"
    with pytest.raises(JobNotFound):
        await fetch_job_result(job.job_id, **b.target)
    # A waiting reader replays the bucket's current value first: A's result, were the
    # bucket shared, would come at once instead of the timeout.
    with pytest.raises(ResultTimeout):
        await b.queue.fetch_result(job.job_id, timeout=0.3)
    kv = await b.client.js.key_value(b.layout.results_bucket)
    with pytest.raises(KeyNotFoundError):
        await kv.get(job.job_id)


# -- status ------------------------------------------------------------------------------


async def test_a_job_status_is_known_only_in_its_namespace(
    sides: tuple[Side, Side], supervise: Supervise
) -> None:
    """Every place status reads from: the stream (queued, scheduled), the deps bucket
    (held), the heartbeats (running) and the results (finished)."""
    a, b = sides
    later = Queue("later", settings=a.settings)  # no supervisor serves it: stays queued
    async with later:
        queued = await later.enqueue(jobs.add, 1, 2)
        held = await later.enqueue(jobs.add, 3, 4, depends_on=queued)
    delayed = await a.queue.enqueue_in(3600, jobs.add, 5, 6)
    sup = await supervise(a)
    finished = await a.queue.enqueue(jobs.add, 7, 8)
    running = await a.queue.enqueue(jobs.async_sleep, 30)
    assert await a.queue.fetch_result(finished.job_id, timeout=WAIT) == 15
    await _running(a, sup, running.job_id)

    expected = {
        queued.job_id: "queued",
        held.job_id: "queued",
        delayed.job_id: "scheduled",
        finished.job_id: "finished",
        running.job_id: "running",
    }
    assert {job_id: await a.status(job_id) for job_id in expected} == expected
    assert (await a.queue.status(held.job_id)).waiting_for == (queued.job_id,)
    for job_id in expected:
        await _not_found(b, job_id)

    assert await a.queue.cancel(running.job_id)  # no 30 s job left for the teardown


# -- workers -----------------------------------------------------------------------------


async def test_worker_heartbeats_are_listed_only_in_their_namespace(
    sides: tuple[Side, Side], supervise: Supervise
) -> None:
    a, b = sides
    sup_a = await supervise(a)
    sup_b = await supervise(b)
    for side, sup in ((a, sup_a), (b, sup_b)):
        await _kv_record(side, side.layout.workers_bucket, sup.worker_id, lambda _: True)

    listed_a = await list_workers(a.client, a.layout)
    listed_b = await list_workers(b.client, b.layout)
    assert [w["id"] for w in listed_a] == [sup_a.worker_id]
    assert [w["id"] for w in listed_b] == [sup_b.worker_id]
    kv = await b.client.js.key_value(b.layout.workers_bucket)
    with pytest.raises(KeyNotFoundError):
        await kv.get(sup_a.worker_id)


# -- schedules ---------------------------------------------------------------------------


async def test_schedules_and_delayed_jobs_stay_in_their_namespace(
    sides: tuple[Side, Side], schedulers: StartScheduler
) -> None:
    a, b = sides
    sid_a = await schedule(jobs.add, 1, 2, interval=1, **a.target)
    delayed = await a.queue.enqueue_in(3600, jobs.add, 3, 4)

    assert [s.schedule_id for s in await list_schedules(**a.target)] == [sid_a]
    assert await list_schedules(**b.target) == []
    assert not await cancel_scheduled_job(sid_a, **b.target)
    assert not await cancel_scheduled_job(delayed.job_id, **b.target)
    with pytest.raises(ScheduleNotFound):
        await pause_scheduled_job(sid_a, **b.target)
    assert [s.schedule_id for s in await list_schedules(**a.target)] == [sid_a]
    assert await a.status(delayed.job_id) == "scheduled"

    # B's scheduler fires B's schedule, made after A's with the same interval: by the
    # time it has, A's was due too, and a scheduler reading A's bucket would have fired it.
    sid_b = await schedule(jobs.add, 5, 6, interval=1, **b.target)
    sched_b = await schedulers(b)
    fired_b = await _kv_record(b, b.layout.schedules_bucket, sid_b, lambda r: r["runs"] >= 1)
    (record_a,) = await list_schedules(**a.target)
    assert (record_a.runs, record_a.last_run) == (0, None)
    run_b = f"{sid_b}-{int(fired_b['last_run'])}"
    assert await b.status(run_b) == "queued"
    await _not_found(a, run_b)
    info = await a.client.js.stream_info(a.layout.stream, subjects_filter=">")
    assert list(info.state.subjects or {}) == [a.layout.sched_subject(delayed.job_id)]
    listed_b = await list_workers(b.client, b.layout)
    assert [w["id"] for w in listed_b] == [sched_b.heartbeat_key]

    # A's schedule was fireable all along: its own scheduler fires it.
    await schedulers(a)
    fired_a = await _kv_record(a, a.layout.schedules_bucket, sid_a, lambda r: r["runs"] >= 1)
    assert await a.status(f"{sid_a}-{int(fired_a['last_run'])}") == "queued"
    assert [s.schedule_id for s in await list_schedules(**b.target)] == [sid_b]


# -- failed jobs -------------------------------------------------------------------------


async def test_failed_jobs_are_listed_and_changed_only_in_their_namespace(
    sides: tuple[Side, Side], supervise: Supervise, tmp_path: Path
) -> None:
    a, b = sides
    sup_a = await supervise(a)
    sup_b = await supervise(b)

    async def fail(side: Side, sup: Supervisor, func: Any, *args: Any) -> str:
        before = sup.counters.failed  # counted once the failed entry is stored
        job = await side.queue.enqueue(func, *args, max_retries=0)
        await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), WAIT)
        return job.job_id

    a1 = await fail(a, sup_a, jobs.fail)
    b1 = await fail(b, sup_b, jobs.flaky, str(tmp_path / "b1"), 1)  # fails once only
    b2 = await fail(b, sup_b, jobs.fail)

    assert [f.job_id for f in await list_failed(**a.target)] == [a1]
    assert [f.job_id for f in await list_failed(**b.target)] == [b1, b2]
    with pytest.raises(JobNotFound):
        await get_failed(a1, **b.target)
    with pytest.raises(JobNotFound):
        await requeue_failed([a1], **b.target)

    assert await requeue_failed([b1], **b.target) == [b1]
    assert await b.queue.fetch_result(b1, timeout=WAIT) == 2
    assert await purge_failed(**b.target) == 1  # b2
    assert await requeue_failed(all=True, **b.target) == []

    assert [f.job_id for f in await list_failed(**a.target)] == [a1]
    assert (await get_failed(a1, **a.target)).reason
    with pytest.raises(JobFailed):
        await a.queue.fetch_result(a1)


# -- cancel ------------------------------------------------------------------------------


async def test_cancelling_in_one_namespace_leaves_the_others_job(
    sides: tuple[Side, Side], supervise: Supervise
) -> None:
    """B cancels its own job under the id A's running job has: the broadcast on B's
    control subject must not reach A's supervisor."""
    a, b = sides
    later = Queue("later", settings=a.settings)
    async with later:
        queued = await later.enqueue(jobs.add, 1, 2)
    assert not await b.queue.cancel(queued.job_id)

    sup_a = await supervise(a)
    running = await a.queue.enqueue(jobs.async_sleep, 1.5, job_id="shared-id")
    await b.queue.enqueue(jobs.add, 3, 4, job_id="shared-id")
    await _running(a, sup_a, running.job_id)
    assert await b.queue.cancel("shared-id")
    assert await b.status("shared-id") == "cancelled"

    assert await a.queue.fetch_result("shared-id", timeout=WAIT) == 1.5
    assert await a.status(queued.job_id) == "queued"


# -- purge -------------------------------------------------------------------------------


async def test_purging_a_queue_leaves_the_other_namespaces_jobs(
    sides: tuple[Side, Side],
) -> None:
    a, b = sides
    kept = await a.queue.enqueue_many([(jobs.add, (i, i)) for i in range(3)])
    await b.queue.enqueue_many([(jobs.add, (i, i)) for i in range(2)])
    assert await b.queue.purge() == 2
    assert await purge_queue("default", **b.target) == 0
    assert [await a.status(job.job_id) for job in kept] == ["queued"] * 3
    assert await a.queue.purge() == 3


# -- streams and buckets -----------------------------------------------------------------


def _expected_streams(layout: Layout) -> set[str]:
    buckets = (
        layout.results_bucket,
        layout.workers_bucket,
        layout.deps_bucket,
        layout.schedules_bucket,
        layout.leader_bucket,
    )
    return {
        layout.stream,
        layout.failed_stream,
        layout.advisory_stream,
        *(f"KV_{bucket}" for bucket in buckets),
    }


async def _all_streams(nc: Any) -> dict[str, list[str]]:
    """Every stream on the server with its subjects, page by page (256 a page)."""
    found: dict[str, list[str]] = {}
    while True:
        page = await nc.jetstream().streams_info(offset=len(found))
        if not page:
            return found
        for info in page:
            found[info.config.name] = list(info.config.subjects or [])


async def test_every_stream_and_bucket_belongs_to_one_namespace(
    settings: Settings, nc: Any, supervise: Supervise, schedulers: StartScheduler
) -> None:
    """Whatever naq makes for a namespace is named after it, and captures only its
    subjects. Every role is started, so every stream naq creates gets created; the
    server's creation advisories say which streams appeared meanwhile."""
    created: list[str] = []
    both_advisories = asyncio.Event()
    fast = settings.replace(heartbeat_interval=0.2)
    layouts = [Layout(fast.namespace), Layout(_new_namespace())]

    async def on_created(msg: Any) -> None:
        created.append(json.loads(msg.data)["stream"])
        if {lay.advisory_stream for lay in layouts} <= set(created):
            both_advisories.set()  # the last stream a supervisor declares, in the background

    sub = await nc.subscribe("$JS.EVENT.ADVISORY.STREAM.CREATED.>", cb=on_created)
    try:
        for layout in layouts:
            async with _side(fast.replace(namespace=layout.namespace), nc) as side:
                await supervise(side)
                await schedulers(side)
                await schedule(jobs.add, 1, 2, interval=3600, **side.target)
                await side.queue.enqueue_in(3600, jobs.add, 1, 2)
                await list_failed(**side.target)
        await asyncio.wait_for(both_advisories.wait(), WAIT)
    finally:
        await sub.unsubscribe()
        await close_connections()

    a, b = (_expected_streams(layout) for layout in layouts)
    assert not a & b
    assert sorted(created) == sorted(a | b), "a stream not named after its namespace"
    streams = await _all_streams(nc)
    for layout, own in zip(layouts, (a, b), strict=True):
        ns = layout.namespace
        named = {name for name in streams if ns in name}
        assert named == own
        capturing = {n for n, subjects in streams.items() if any(ns in s for s in subjects)}
        assert capturing == own, f"streams capturing subjects of {ns}: {capturing - own}"
        for name in own:
            assert all(ns in s for s in streams[name]), (name, streams[name])


# -- the namespace from the environment --------------------------------------------------


async def test_the_environment_picks_the_namespace_and_an_argument_overrides_it(
    sides: tuple[Side, Side], nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = sides
    assert Settings.from_env({"NAQ_NAMESPACE": a.namespace}).namespace == a.namespace
    monkeypatch.setenv("NAQ_NAMESPACE", a.namespace)
    monkeypatch.setenv("NAQ_NATS_URL", nats_url)
    async with Queue() as from_env, Queue(namespace=b.namespace) as overridden:
        assert from_env.layout == a.layout
        assert overridden.layout == b.layout
        in_a = await from_env.enqueue(jobs.add, 1, 2)
        in_b = await overridden.enqueue(jobs.add, 3, 4)
    assert await a.status(in_a.job_id) == "queued"
    assert await b.status(in_b.job_id) == "queued"
    await _not_found(b, in_a.job_id)
    await _not_found(a, in_b.job_id)
