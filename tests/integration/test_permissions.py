"""The per-role NATS permissions of ``deploy/nats-roles.conf``, on a real server.

The server runs with the file the repository ships, as it is: the test adds only the
port, the store directory and the five passwords (which the file reads from the
server's environment). Each role connects as its own user and does its whole job;
the server must refuse nothing meanwhile, so a subject the config forgot shows up as
a failure here, with the server's own log line. Then each role tries what it must
not do, and the refusal is checked the way NATS reports it: the client's error
callback gets the permissions violation, and the server logs it against that user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from naq import JobCancelled, JobFailed, Queue
from naq.dashboard import app as views
from naq.dashboard.app import Dashboard
from naq.dashboard.live import Rates
from naq.dashboard.show import mask_secrets
from naq.errors import NaqError
from naq.executors.registry import load_executor
from naq.producer import failed as failed_api, info, schedules
from naq.producer.api import cancel_job, fetch_job_result, fetch_job_status, purge_queue
from naq.scheduler import Scheduler
from naq.settings import Settings
from naq.state.workers import list_workers
from naq.supervisor import Supervisor
from naq.transport.connect import Client, connect
from naq.transport.names import Layout
from naq.transport.pool import close_connections
from naq.transport.server import find_binary, free_port
from tests import jobs
from tests.conftest import ROOT, run_until_ready, stop_all

CONFIG = ROOT / "deploy" / "nats-roles.conf"
ROLES = ("producer", "supervisor", "scheduler", "monitor", "admin")
LAYOUT = Layout("naq")
"""The namespace the config is written for."""
READY_LINE = "Server is ready"
VIOLATION = "Violation"
FAST = {
    "heartbeat_interval": 1.0,
    "shutdown_grace": 5.0,
    "pull_expires": 2.0,
    "scheduler_lock_ttl": 2.0,
    "scheduler_lock_renew_interval": 1.0,
}


class RolesServer:
    """nats-server started with the shipped config, its log kept whole.

    Not ``EmbeddedServer``: that one keeps only the tail of the log, and these tests
    read every permission violation the server reports.
    """

    def __init__(self, store_dir: Path, config: Path = CONFIG, namespace: str = "naq") -> None:
        self.port = free_port()
        self.config = config
        self.namespace = namespace
        self.store_dir = store_dir
        # Hex: nats-server reads a variable's value as a config value, and one that
        # starts with "-" (which token_urlsafe can make) does not parse.
        self.passwords = {role: secrets.token_hex(24) for role in ROLES}
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NAQ_")}
        env.update({f"NAQ_{role.upper()}_PASSWORD": pw for role, pw in self.passwords.items()})
        self._process = subprocess.Popen(
            [
                find_binary(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
                "-c",
                str(self.config),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, name="roles-server-log", daemon=True).start()
        if not self.wait_for(lambda line: READY_LINE in line, 0, 20):
            self.stop()
            raise AssertionError("nats-server did not start:\n" + "\n".join(self.lines[-20:]))

    def _read_log(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        for line in self._process.stderr:
            with self._changed:
                self.lines.append(line.rstrip())
                self._changed.notify_all()
        with self._changed:  # exited: wake any waiter
            self.lines.append("(nats-server exited)")
            self._changed.notify_all()

    def mark(self) -> int:
        """Where the log is now: what a test reads from."""
        with self._changed:
            return len(self.lines)

    def violations(self, since: int) -> list[str]:
        with self._changed:
            return [line for line in self.lines[since:] if VIOLATION in line]

    def wait_for(self, match: Callable[[str], bool], since: int, timeout: float) -> str | None:
        """The first log line from ``since`` on that ``match``es, waiting up to
        ``timeout`` seconds for it (woken by each new line)."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self.lines[since:] if match(line)][:1]
            return bool(found)

        with self._changed:
            self._changed.wait_for(seen, timeout)
        return found[0] if found else None

    def settings(self, role: str, **overrides: Any) -> Settings:
        return Settings(
            nats_url=self.url,
            user=role,
            password=self.passwords[role],
            namespace=self.namespace,
            **{**FAST, **overrides},
        )

    def stop(self) -> None:
        proc, self._process = self._process, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolesServer]:
    srv = RolesServer(tmp_path_factory.mktemp("roles-jetstream"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
async def declared(server: RolesServer) -> AsyncIterator[RolesServer]:
    """The namespace created by the admin (the one role that may create its streams),
    and the module-level API's pooled connections closed after the test."""
    settings = server.settings("admin")
    client = Client(await connect(settings), settings)
    try:
        await client.layout(LAYOUT.namespace)
    finally:
        await client.close()
    yield server
    await close_connections()


@pytest.fixture
async def nothing_refused(declared: RolesServer) -> AsyncIterator[RolesServer]:
    """Fail the test if the server refused any of the roles' work, checked once every
    supervisor and scheduler of the test has stopped: their last acts (deleting a
    watch's consumer, acking an advisory) come late, and count as much."""
    since = declared.mark()
    yield declared
    assert_nothing_refused(declared, since)


@pytest.fixture
def as_role(server: RolesServer, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make the module-level API (which reads ``NAQ_*``) connect as ``role``."""

    def use(role: str) -> None:
        monkeypatch.setenv("NAQ_NATS_URL", server.url)
        monkeypatch.setenv("NAQ_NAMESPACE", LAYOUT.namespace)
        monkeypatch.setenv("NAQ_USER", role)
        monkeypatch.setenv("NAQ_PASSWORD", server.passwords[role])

    return use


@pytest.fixture
async def supervisor(
    nothing_refused: RolesServer,
) -> AsyncIterator[Callable[..., Awaitable[Supervisor]]]:
    """Start supervisors that connect as the supervisor user; drained at teardown."""
    running: list[tuple[Supervisor, asyncio.Task[int]]] = []

    async def start(queues: list[str] | None = None, **overrides: Any) -> Supervisor:
        conf = nothing_refused.settings("supervisor", **overrides)
        sup = Supervisor(conf, load_executor("asyncio")(4, conf), queues)
        running.append((sup, await run_until_ready(sup)))
        return sup

    yield start
    await stop_all(running)


@pytest.fixture
async def scheduler(nothing_refused: RolesServer) -> AsyncIterator[Scheduler]:
    sched = Scheduler(nothing_refused.settings("scheduler"), "roles-test")
    task = asyncio.create_task(sched.run())
    await asyncio.wait_for(sched.ready.wait(), 10)
    yield sched
    sched.request_stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def producer(nothing_refused: RolesServer) -> AsyncIterator[Queue]:
    async with Queue(settings=nothing_refused.settings("producer")) as queue:
        yield queue


@pytest.fixture
def dead_letter_said() -> Iterator[asyncio.Queue[str]]:
    """What the supervisor's max_deliver backstop logs (once it moved a job, or why it
    could not): the only sign that it is done."""
    said: asyncio.Queue[str] = asyncio.Queue()

    class Heard(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.put_nowait(record.getMessage())  # on the loop's thread: the supervisor's

    logger = logging.getLogger("naq.supervisor.deadletter")
    handler = Heard(logging.WARNING)
    logger.addHandler(handler)
    yield said
    logger.removeHandler(handler)


def assert_nothing_refused(server: RolesServer, since: int) -> None:
    refused = server.violations(since)
    assert not refused, "the config refused what a role needs:\n" + "\n".join(refused)


# -- each role does its work -----------------------------------------------------------


async def test_a_supervisor_runs_what_the_producer_enqueues(
    server: RolesServer,
    supervisor: Callable[..., Awaitable[Supervisor]],
    producer: Queue,
    as_role: Callable[[str], None],
) -> None:
    await supervisor()
    now = await producer.enqueue(jobs.add, 1, 2)
    delayed = await producer.enqueue_in(0.2, jobs.add, 2, 3)
    many = await producer.enqueue_many([(jobs.add, (i, i)) for i in range(5)])
    assert await producer.fetch_result(now.job_id, timeout=15) == 3
    assert await producer.fetch_result(delayed.job_id, timeout=15) == 5
    results = await producer.fetch_results([j.job_id for j in many], timeout=15)
    assert sorted(results.values()) == [0, 2, 4, 6, 8]
    as_role("producer")
    status = await fetch_job_status(now.job_id)
    assert (status.status, status.attempt) == ("finished", 1)
    assert await fetch_job_result(delayed.job_id) == 5


async def test_a_dependent_job_runs_once_its_dependency_finished(
    server: RolesServer, supervisor: Callable[..., Awaitable[Supervisor]], producer: Queue
) -> None:
    """The producer publishes the held job on ``{ns}.held.{id}``; supervisors keep the
    deps KV, which the producer may not write."""
    await supervisor()
    first = await producer.enqueue_in(1.0, jobs.add, 1, 1)
    then = await producer.enqueue(jobs.add, 5, 5, depends_on=first)
    status = await producer.status(then.job_id)
    assert (status.status, status.waiting_for) == ("queued", (first.job_id,))
    assert await producer.fetch_result(then.job_id, timeout=15) == 10
    assert await producer.fetch_result(first.job_id, timeout=5) == 2


async def test_an_exhausted_job_is_dead_lettered_by_the_supervisor(
    server: RolesServer,
    supervisor: Callable[..., Awaitable[Supervisor]],
    dead_letter_said: asyncio.Queue[str],
    tmp_path: Path,
) -> None:
    """The max_deliver backstop: the advisory stream (the one stream a supervisor
    creates), its shared consumer, and a read and a delete on the job stream."""
    await supervisor(["exhaust"], max_deliver=2)
    async with Queue("exhaust", settings=server.settings("producer")) as queue:
        job = await queue.enqueue(
            jobs.fail_with, str(tmp_path / "tries"), "ValueError", max_retries=5
        )
        with pytest.raises(JobFailed, match="max_deliver"):
            await queue.fetch_result(job.job_id, timeout=30)
        # The record is stored first; the job's delete from the job stream comes
        # after, and the supervisor's log line says how that went.
        said = await asyncio.wait_for(dead_letter_said.get(), 15)
    assert "moved to the failed stream" in said
    monitor = await connect_as(server, "monitor", asyncio.Queue())
    try:
        subject = LAYOUT.job_subject("exhaust", job.job_id)
        info = await monitor.jetstream().stream_info(LAYOUT.stream, subjects_filter=subject)
    finally:
        await monitor.close()
    assert not info.state.subjects, "the exhausted job stayed in the job stream"


async def test_the_scheduler_fires_a_recurring_job(
    server: RolesServer,
    supervisor: Callable[..., Awaitable[Supervisor]],
    scheduler: Scheduler,
    as_role: Callable[[str], None],
) -> None:
    await supervisor()
    errors: asyncio.Queue[str] = asyncio.Queue()
    nc = await connect_as(server, "producer", errors)
    try:
        # The producer may listen on the results' subjects: that is how it waits.
        landed = await nc.subscribe(LAYOUT.kv_subject(LAYOUT.results_bucket, ">"))
        as_role("producer")
        schedule_id = await schedules.schedule(jobs.add, 7, 8, interval=1, repeat=1)
        run = await next_result_of_schedule(landed, schedule_id)
        assert await fetch_job_result(run) == 15
    finally:
        await nc.close()
    assert scheduler.fired >= 1
    assert errors.empty()


async def test_the_monitor_reads_queues_workers_and_failed_jobs(
    server: RolesServer,
    supervisor: Callable[..., Awaitable[Supervisor]],
    scheduler: Scheduler,
    producer: Queue,
    as_role: Callable[[str], None],
) -> None:
    sup = await supervisor()
    before = sup.counters.failed
    failing = await producer.enqueue(jobs.fail, "for the monitor")
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), 15)
    later = await producer.enqueue_in(3600, jobs.add, 1, 1)
    await asyncio.wait_for(scheduler.leading.wait(), 15)

    as_role("monitor")
    assert "default" in await info.list_queues()
    counts = await info.queue_info("default")
    assert counts.failed >= 1
    assert counts.scheduled >= 1
    workers = {record["id"] for record in await info.list_workers()}
    assert {sup.worker_id, scheduler.heartbeat_key} <= workers
    leader = await info.current_leader()
    assert leader is not None
    assert leader["id"] == scheduler.scheduler_id
    listed = {entry.job_id for entry in await failed_api.list_failed()}
    assert failing.job_id in listed
    assert (await failed_api.get_failed(failing.job_id)).reason.endswith("for the monitor")
    assert (await fetch_job_status(failing.job_id)).status == "failed"
    assert (await fetch_job_status(later.job_id)).status == "scheduled"
    await schedules.list_schedules()


async def test_the_dashboard_reads_every_page_as_the_monitor(
    server: RolesServer,
    supervisor: Callable[..., Awaitable[Supervisor]],
    producer: Queue,
    as_role: Callable[[str], None],
) -> None:
    """``naq dashboard`` without --admin runs as the monitor: every page reads."""
    sup = await supervisor()
    before = sup.counters.failed
    failing = await producer.enqueue(jobs.fail, "for the dashboard")
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), 15)
    done = await producer.enqueue(jobs.add, 1, 2)
    assert await producer.fetch_result(done.job_id, timeout=15) == 3
    waiting = await producer.enqueue_in(3600, jobs.add, 2, 2)

    as_role("monitor")
    dash = Dashboard(
        Settings(nats_url=server.url, namespace=LAYOUT.namespace),
        mask_secrets,
        Rates(server.url, LAYOUT.namespace),
    )
    await dash.rates.sample()
    failed_page = await views.failed(dash, {})
    [entry] = [e for e in failed_page["entries"] if e.job_id == failing.job_id]
    detail = await views.job_detail(dash, {"job_id": failing.job_id, "seq": str(entry.seq)})
    assert detail["entry"] is not None
    finished = await views.jobs(dash, {"state": "finished"})
    assert done.job_id in {row["job_id"] for row in finished["rows"]}
    delayed = await views.scheduled(dash, {})
    assert waiting.job_id in {job.job_id for job in delayed["delayed"]}
    overview = await views.overview(dash, {})
    assert "default" in {q.name for q in overview["queues"]}
    assert sup.worker_id in {w["id"] for w in (await views.workers(dash, {}))["supervisors"]}
    await views.jobs(dash, {"state": "waiting"})
    await views.jobs(dash, {"state": "running"})


async def test_the_admin_cancels_purges_requeues_and_controls_schedules(
    server: RolesServer,
    supervisor: Callable[..., Awaitable[Supervisor]],
    producer: Queue,
    as_role: Callable[[str], None],
    tmp_path: Path,
) -> None:
    sup = await supervisor()
    later = await producer.enqueue_in(3600, jobs.add, 1, 1)
    before = sup.counters.failed
    flaky = await producer.enqueue(jobs.flaky, str(tmp_path / "tries"), 1)
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed > before), 15)
    async with Queue("unserved", settings=server.settings("producer")) as unserved:
        await unserved.enqueue_many([(jobs.add, (i, i)) for i in range(3)])
    parent = await producer.enqueue_in(3600, jobs.add, 1, 1)
    child = await producer.enqueue(jobs.add, 2, 2, depends_on=parent)
    await taken_in(server, child.job_id)
    as_role("producer")
    schedule_id = await schedules.schedule(jobs.add, 1, 2, interval=3600)

    as_role("admin")
    assert await cancel_job(later.job_id)
    assert await cancel_job(parent.job_id)  # and its dependent, held in the deps KV
    assert await purge_queue("unserved") == 3
    assert await failed_api.requeue_failed([flaky.job_id]) == [flaky.job_id]
    assert await schedules.pause_scheduled_job(schedule_id)
    assert await schedules.resume_scheduled_job(schedule_id)
    modified = await schedules.modify_scheduled_job(schedule_id, interval=7200)
    assert modified.interval == 7200
    assert await schedules.cancel_scheduled_job(schedule_id)
    # A producer may make it again under its id (nats-py reads the deleted key first),
    # and is told when the id is taken.
    as_role("producer")
    made = await schedules.schedule(jobs.add, 1, 2, interval=3600, schedule_id=schedule_id)
    assert made == schedule_id
    with pytest.raises(NaqError, match="exists already"):
        await schedules.schedule(jobs.add, 1, 2, interval=3600, schedule_id=schedule_id)
    as_role("admin")
    assert await schedules.cancel_scheduled_job(schedule_id)

    with pytest.raises(JobCancelled):
        await producer.fetch_result(later.job_id, timeout=5)
    with pytest.raises(JobCancelled, match=f"dependency {parent.job_id} cancelled"):
        await producer.fetch_result(child.job_id, timeout=5)
    assert await producer.fetch_result(flaky.job_id, timeout=15) == 2  # ran again, passed
    as_role("admin")
    await failed_api.purge_failed()
    assert await failed_api.list_failed() == []
    # and it reads what the monitor reads: naq info, naq list-scheduled
    assert [q.name for q in await info.queues_info(["default"])] == ["default"]
    assert sup.worker_id in {record["id"] for record in await info.list_workers()}
    await info.current_leader()
    await schedules.list_schedules()


# Watches are ordered consumers with flow control: with megabytes in flight, the
# server waits for a reply on $JS.FC.<stream>.> before it sends more, so without that
# permission a large bucket stalls the watch. Measured: four records of 500 kB drew a
# request now and then; ten never all arrived without the reply.

RECORDS, LARGE = 10, 500_000


async def watched_keys(server: RolesServer, role: str, bucket: str, keys: str) -> set[str]:
    """The keys a watch of ``keys`` in ``bucket``, made as ``role``, replays; a stall
    fails the test with what the server refused meanwhile."""
    since = server.mark()
    nc = await connect_as(server, role, asyncio.Queue())
    try:
        watcher = await (await nc.jetstream().key_value(bucket)).watch(keys)
        seen: set[str] = set()
        try:
            async with asyncio.timeout(20):
                async for entry in watcher:
                    if entry is None:  # the replay is over
                        break
                    seen.add(entry.key)
        except TimeoutError:
            pytest.fail("the watch stalled; refused:\n" + "\n".join(server.violations(since)))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    finally:
        await nc.close()
    return seen


async def test_the_schedulers_watch_of_large_schedules_gets_its_flow_control(
    nothing_refused: RolesServer, as_role: Callable[[str], None]
) -> None:
    """The leader's watch of every schedule, over records a producer wrote."""
    as_role("producer")
    made = [await schedules.schedule(jobs.echo, "x" * LARGE, interval=3600) for _ in range(RECORDS)]
    try:
        seen = await watched_keys(nothing_refused, "scheduler", LAYOUT.schedules_bucket, ">")
    finally:
        as_role("admin")
        for schedule_id in made:
            await schedules.cancel_scheduled_job(schedule_id)
    assert set(made) <= seen


@pytest.mark.parametrize(
    ("role", "bucket"),
    [("supervisor", LAYOUT.deps_bucket), ("scheduler", LAYOUT.leader_bucket)],
)
async def test_a_large_watch_of_a_roles_bucket_gets_its_flow_control(
    nothing_refused: RolesServer, role: str, bucket: str
) -> None:
    """The supervisor watches the deps bucket and the scheduler its lease. Keys naq
    never reads (``flow-check.*``) hold the records; they expire by themselves."""
    nc = await connect_as(nothing_refused, role, asyncio.Queue())
    try:
        js = nc.jetstream()
        for i in range(RECORDS):
            key = LAYOUT.kv_subject(bucket, f"flow-check.{i}")
            await js.publish(key, b"x" * LARGE, headers={"Nats-TTL": "60s"})
    finally:
        await nc.close()
    seen = await watched_keys(nothing_refused, role, bucket, "flow-check.>")
    assert seen == {f"flow-check.{i}" for i in range(RECORDS)}


async def taken_in(server: RolesServer, job_id: str) -> None:
    """Return once a supervisor has moved the held job into the deps KV: a watch of its
    key there, made as the supervisor user (whose work that is)."""
    nc = await connect_as(server, "supervisor", asyncio.Queue())
    try:
        kv = await nc.jetstream().key_value(LAYOUT.deps_bucket)
        watcher = await kv.watch(LAYOUT.held_key(job_id))
        try:
            async with asyncio.timeout(15):
                async for entry in watcher:
                    if entry is not None and entry.value:
                        return
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    finally:
        await nc.close()


async def next_result_of_schedule(landed: Any, schedule_id: str) -> str:
    """The job id of the first run of ``schedule_id`` whose result lands on ``landed``
    (a subscription to the results' subjects)."""
    key_at = len(LAYOUT.kv_subject(LAYOUT.results_bucket, ""))
    while True:
        msg = await landed.next_msg(timeout=20)
        if msg.subject[key_at:].startswith(f"{schedule_id}-"):
            return str(msg.subject[key_at:])


async def test_signed_jobs_and_results_need_no_other_subject(
    server: RolesServer,
    supervisor: Callable[..., Awaitable[Supervisor]],
    as_role: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``NAQ_SIGNING_KEY``, producers read results with their headers and the
    scheduler checks templates and signs runs: the same subjects serve."""
    key = secrets.token_urlsafe(32)
    await supervisor(["signed"], signing_key=key)
    sched = Scheduler(server.settings("scheduler", signing_key=key), "roles-signed")
    running = asyncio.create_task(sched.run())
    errors: asyncio.Queue[str] = asyncio.Queue()
    nc = await connect_as(server, "producer", errors)
    try:
        landed = await nc.subscribe(LAYOUT.kv_subject(LAYOUT.results_bucket, ">"))
        settings = server.settings("producer", signing_key=key)
        async with Queue("signed", settings=settings) as queue:
            first = await queue.enqueue_in(0.5, jobs.add, 1, 1)
            then = await queue.enqueue(jobs.add, 2, 2, depends_on=first)
            assert await queue.fetch_result(then.job_id, timeout=15) == 4
            assert await queue.fetch_result(first.job_id, timeout=5) == 2
        as_role("producer")
        monkeypatch.setenv("NAQ_SIGNING_KEY", key)
        schedule_id = await schedules.schedule(
            jobs.add, 3, 3, interval=1, repeat=1, queue_name="signed"
        )
        run = await next_result_of_schedule(landed, schedule_id)
        assert await fetch_job_result(run) == 6
    finally:
        await nc.close()
        sched.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 10)
    assert errors.empty()


RENAME = re.compile(r'([_."])naq([._"])')
"""SECURITY.md's ``sed -E 's/([_."])naq([._"])/\\1billing\\2/g'``, as a regex."""


async def test_the_file_renamed_as_documented_serves_another_namespace(
    tmp_path: Path,
) -> None:
    """SECURITY.md says how to make the file for another namespace: done here, the
    roles run there with nothing refused."""
    config = tmp_path / "nats-roles-billing.conf"
    config.write_text(RENAME.sub(r"\1billing\2", CONFIG.read_text()))
    assert "naq:held" in config.read_text()
    srv = RolesServer(tmp_path / "jetstream", config, namespace="billing")
    srv.start()
    running: list[tuple[Supervisor, asyncio.Task[int]]] = []
    try:
        admin = srv.settings("admin")
        client = Client(await connect(admin), admin)
        try:
            await client.layout("billing")
        finally:
            await client.close()
        conf = srv.settings("supervisor")
        sup = Supervisor(conf, load_executor("asyncio")(2, conf))
        running.append((sup, await run_until_ready(sup)))
        async with Queue(settings=srv.settings("producer")) as queue:
            first = await queue.enqueue_in(0.2, jobs.add, 1, 2)
            then = await queue.enqueue(jobs.add, 3, 4, depends_on=first)
            assert await queue.fetch_result(then.job_id, timeout=15) == 7
        monitor = srv.settings("monitor")
        client = Client(await connect(monitor), monitor)
        try:
            workers = await list_workers(client, Layout("billing"))
        finally:
            await client.close()
        assert [w["id"] for w in workers] == [sup.worker_id]
    finally:
        await stop_all(running)
        srv.stop()
    assert_nothing_refused(srv, 0)


# -- and nothing more --------------------------------------------------------------------


async def connect_as(server: RolesServer, role: str, errors: asyncio.Queue[str]) -> NATS:
    """A plain nats-py connection as ``role``, its asynchronous errors queued."""

    async def on_error(exc: Exception) -> None:
        errors.put_nowait(str(exc))

    return await nats.connect(
        server.url,
        user=role,
        password=server.passwords[role],
        error_cb=on_error,
        allow_reconnect=False,
    )


def stream_api(operation: str, stream: str) -> str:
    return f"$JS.API.STREAM.{operation}.{stream}"


REFUSED_PUBLISH = [
    pytest.param("producer", LAYOUT.kv_subject(LAYOUT.results_bucket, "x"), id="producer-results"),
    pytest.param("producer", stream_api("DELETE", LAYOUT.stream), id="producer-delete-stream"),
    pytest.param("producer", stream_api("PURGE", LAYOUT.stream), id="producer-purge"),
    pytest.param("producer", LAYOUT.cancel_subject, id="producer-control"),
    pytest.param(
        "producer", LAYOUT.kv_subject(LAYOUT.deps_bucket, LAYOUT.held_key("x")), id="producer-deps"
    ),
    pytest.param("producer", LAYOUT.pull_subject("default"), id="producer-pull"),
    pytest.param("producer", LAYOUT.failed_subject("default"), id="producer-failed-stream"),
    pytest.param("monitor", LAYOUT.job_subject("default", "x"), id="monitor-enqueue"),
    pytest.param("monitor", LAYOUT.kv_subject(LAYOUT.results_bucket, "x"), id="monitor-results"),
    pytest.param(
        "monitor",
        f"$JS.API.CONSUMER.CREATE.{LAYOUT.stream}.x.{LAYOUT.queue_subjects('default')}",
        id="monitor-consumer-on-jobs",
    ),
    pytest.param("scheduler", LAYOUT.cancel_subject, id="scheduler-control"),
    pytest.param("supervisor", stream_api("DELETE", LAYOUT.stream), id="supervisor-delete-stream"),
    pytest.param(
        "supervisor",
        LAYOUT.kv_subject(LAYOUT.schedules_bucket, "x"),
        id="supervisor-schedules",
    ),
    pytest.param("admin", stream_api("DELETE", Layout("other").stream), id="admin-other-namespace"),
]


@pytest.mark.parametrize(("role", "subject"), REFUSED_PUBLISH)
async def test_a_role_cannot_publish_outside_its_subjects(
    declared: RolesServer, role: str, subject: str
) -> None:
    since = declared.mark()
    errors: asyncio.Queue[str] = asyncio.Queue()
    nc = await connect_as(declared, role, errors)
    try:
        await nc.publish(subject, b"x")
        await nc.flush()
        error = await asyncio.wait_for(errors.get(), 5)
    finally:
        await nc.close()
    assert error == f'nats: permissions violation for publish to "{subject.lower()}"'
    logged = declared.wait_for(lambda line: f'Subject "{subject}"' in line, since, 5)
    assert logged is not None, "the server did not log the refusal"
    assert f'"$G/user:{role}" - Publish Violation' in logged


async def test_a_producer_cannot_delete_the_namespace(declared: RolesServer) -> None:
    """Through the JetStream API as a client calls it: no answer comes, the error
    callback says why, and the stream is still there for the admin."""
    errors: asyncio.Queue[str] = asyncio.Queue()
    nc = await connect_as(declared, "producer", errors)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=2).delete_stream(LAYOUT.stream)
        error = await asyncio.wait_for(errors.get(), 5)
    finally:
        await nc.close()
    subject = stream_api("DELETE", LAYOUT.stream)
    assert error == f'nats: permissions violation for publish to "{subject.lower()}"'
    admin = await connect_as(declared, "admin", asyncio.Queue())
    try:
        assert (await admin.jetstream().stream_info(LAYOUT.stream)).config.name == LAYOUT.stream
    finally:
        await admin.close()


async def test_a_producer_cannot_listen_to_jobs_or_cancellations(
    declared: RolesServer,
) -> None:
    for subject in (LAYOUT.stream_subjects[0], LAYOUT.cancel_subject):
        errors: asyncio.Queue[str] = asyncio.Queue()
        nc = await connect_as(declared, "producer", errors)
        try:
            await nc.subscribe(subject)
            await nc.flush()
            error = await asyncio.wait_for(errors.get(), 5)
        finally:
            await nc.close()
        assert error == f'nats: permissions violation for subscription to "{subject.lower()}"'


async def test_only_the_admin_creates_the_namespace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On a server where the namespace does not exist yet, a producer's first enqueue
    fails (it may look streams up, not create them) and says why in its log; once the
    admin has run any naq call, the same enqueue goes through."""
    srv = RolesServer(tmp_path / "jetstream")
    srv.start()
    try:
        producer = srv.settings("producer")
        with pytest.raises(nats.errors.TimeoutError):
            async with Queue(settings=producer) as queue:
                await queue.enqueue(jobs.add, 1, 2)
        create = stream_api("CREATE", LAYOUT.stream)
        assert f'permissions violation for publish to "{create.lower()}"' in caplog.text
        assert srv.wait_for(lambda line: f'Subject "{create}"' in line, 0, 5) is not None
        admin = srv.settings("admin")
        client = Client(await connect(admin), admin)
        try:
            await client.layout(LAYOUT.namespace)
        finally:
            await client.close()
        async with Queue(settings=producer) as queue:
            await queue.enqueue(jobs.add, 1, 2)
    finally:
        srv.stop()


async def test_nobody_connects_without_a_password(server: RolesServer) -> None:
    async def quiet(exc: Exception) -> None:
        """The refusal is asserted below; nats-py's default callback would log it."""

    for credentials in ({}, {"user": "admin", "password": "not-the-password"}):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                server.url,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=quiet,
                **credentials,
            )
