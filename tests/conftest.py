"""Shared fixtures: a real nats-server from the wheel, and a namespace per test.

One server serves the whole session; each test gets its own namespace, and since
every stream, subject and bucket derives from the namespace, tests never see each
other's jobs. Tests that restart or kill a server start their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import StreamConfig

from naq.executors.registry import load_executor
from naq.nasqueue import NASQueue
from naq.queue import Queue
from naq.settings import Settings
from naq.supervisor import Supervisor
from naq.transport.pool import close_connections
from naq.transport.server import EmbeddedCluster, EmbeddedServer, free_port
from tests.procs import Proc, Spawn

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(free_port(), tmp_path_factory.mktemp("jetstream"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """A 3-node JetStream cluster on loopback (``sync_interval: always``), shared by the
    session. A test that kills or pauses a node need not bring it back:
    ``cluster_settings`` restores every node before the next test uses it."""
    cluster = EmbeddedCluster(3, tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_settings(nats_cluster: EmbeddedCluster, namespace: str) -> Settings:
    """Settings for the test's namespace on the whole cluster (every node's URL), with
    every stream and bucket replicated to all three nodes (``replicas=3``)."""
    for node in nats_cluster.nodes:
        node.resume()
        if not node.running:
            nats_cluster.restart(node.name)
    nats_cluster.wait_ready()
    return Settings(
        nats_url=nats_cluster.url,
        namespace=namespace,
        replicas=3,
        heartbeat_interval=1.0,
        shutdown_grace=5.0,
        pull_expires=2.0,
    )


@pytest.fixture
def nats_url(nats_server: EmbeddedServer) -> str:
    return nats_server.url


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(nats_url: str, namespace: str) -> Settings:
    return Settings(
        nats_url=nats_url,
        namespace=namespace,
        heartbeat_interval=1.0,
        shutdown_grace=5.0,
        pull_expires=2.0,
    )


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[Queue]:
    async with Queue(settings=settings) as q:
        yield q


StartSupervisor = Callable[..., Awaitable[Supervisor]]


@pytest.fixture
async def start_supervisor(settings: Settings) -> AsyncIterator[StartSupervisor]:
    """Run supervisors in this loop; each is stopped (drained) at teardown."""
    running: list[tuple[Supervisor, asyncio.Task[int]]] = []

    async def start(
        queues: list[str] | None = None,
        executor: str = "asyncio",
        concurrency: int = 4,
        **overrides: Any,
    ) -> Supervisor:
        middleware = overrides.pop("middleware", None)
        conf = settings.replace(executor=executor, concurrency=concurrency, **overrides)
        sup = Supervisor(
            conf, load_executor(executor)(concurrency, conf), queues, middleware=middleware
        )
        running.append((sup, await run_until_ready(sup)))
        return sup

    yield start
    await stop_all(running)


async def run_until_ready(sup: Supervisor) -> asyncio.Task[int]:
    """Start ``sup.run()`` in this loop and return once it pulls (or raise why it quit)."""
    task = asyncio.create_task(sup.run())
    ready = asyncio.create_task(sup.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises what stopped it
        raise AssertionError("supervisor exited before it was ready")
    return task


async def stop_all(running: list[tuple[Supervisor, asyncio.Task[int]]]) -> None:
    """Drain every supervisor still running (teardown)."""
    for sup, task in running:
        if not task.done():
            sup.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)


MakeNASQueue = Callable[..., NASQueue]


@pytest.fixture
async def make_nasqueue(nats_server: EmbeddedServer, namespace: str) -> AsyncIterator[MakeNASQueue]:
    """NASQueues on the session server, in the test's namespace unless told another;
    all disconnected at teardown."""
    made: list[NASQueue] = []

    def make(ns: str = namespace, *, durable: bool = False) -> NASQueue:
        queue = NASQueue(nats_server.host, nats_server.port, namespace=ns, durable=durable)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.disconnect()


async def connected(queue: NASQueue) -> NASQueue:
    assert await queue.connect(), queue.connect_error
    return queue


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: tests importable, no inherited NAQ_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAQ_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    """A plain nats-py connection, for looking at what naq wrote."""
    import nats

    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


@pytest.fixture
def js(nc: Any) -> Any:
    """JetStream on the plain connection."""
    return nc.jetstream()


@pytest.fixture
def start_supervisor_sync(settings: Settings) -> Callable[..., Any]:
    """A supervisor on its own loop thread, for tests of the sync API."""

    @contextlib.contextmanager
    def run(**overrides: Any) -> Iterator[Supervisor]:
        conf = settings.replace(**overrides)
        sup = Supervisor(conf, load_executor(conf.executor)(conf.concurrency, conf))
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main() -> int:
            task = asyncio.create_task(sup.run())
            waiter = asyncio.create_task(sup.ready.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            ready.set()
            return await task

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
        thread.start()
        try:
            assert ready.wait(15), "supervisor did not start"
            assert sup.ready.is_set(), "supervisor exited before it was ready"
            yield sup
        finally:
            loop.call_soon_threadsafe(sup.request_stop)
            thread.join(15)
            loop.close()

    return run


async def first_json(
    kv: Any,
    key: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The first JSON value of ``key`` that satisfies ``predicate``, through a KV watch
    (the current value first, then every update); None if none comes in ``timeout``.
    Values that did not match are appended to ``seen``, for the failure message."""
    watcher = await kv.watch(key)
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                entry = await watcher.updates(timeout=remaining)
            except TimeoutError:
                return None
            if entry is None or not entry.value:
                continue
            record: dict[str, Any] = json.loads(entry.value)
            if predicate(record):
                return record
            if seen is not None:
                seen.append(record)
    finally:
        await watcher.stop()
    return None


@pytest.fixture
async def target(nats_url: str, namespace: str) -> AsyncIterator[dict[str, str]]:
    """The module-level functions' connection arguments for this test's namespace;
    their pooled connections are closed afterwards."""
    yield {"nats_url": nats_url, "namespace": namespace}
    await close_connections()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start CLI processes with ``subprocess_env``; all are killed when the test ends."""
    procs: list[Proc] = []

    def start(*args: str, cwd: Path | None = None, **env: str) -> Proc:
        proc = Proc(list(args), subprocess_env(**env), cwd)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``check`` (a read of the server's state) until true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


FILLER = "FILLER"
"""The stream ``fill_store`` fills; deleting it frees the store again."""


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server of its own whose JetStream store holds 8 MB: small enough to fill."""
    conf = tmp_path / "nats.conf"
    conf.write_text("jetstream { max_file_store: 8MB }\n")
    with EmbeddedServer(free_port(), tmp_path / "js", extra_args=["-c", str(conf)]) as server:
        yield server


async def fill_store(nc: Any) -> None:
    """Publish to a stream of its own until the server takes not even 20 bytes more."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=FILLER, subjects=["filler"]))
    for size in (60_000, 4_000, 200, 20):
        while b'"error"' not in (await nc.request("filler", b"x" * size, timeout=5)).data:
            pass
