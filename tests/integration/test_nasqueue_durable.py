"""NASQueue(durable=True): the seed's limitations lifted, each shown with real processes
and real server restarts."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import nats
import pytest

from naq.errors import ConfigurationError, NaqConnectionError, PayloadTooLarge
from naq.nasqueue import NASQueue
from naq.nasqueue.durable import PRIORITIES
from naq.queue import Queue
from naq.settings import Settings
from naq.transport.connect import flush
from naq.transport.server import EmbeddedServer, free_port
from tests import jobs
from tests.conftest import MakeNASQueue, StartSupervisor, connected, subprocess_env


@pytest.fixture
def make_queue(make_nasqueue: MakeNASQueue) -> MakeNASQueue:
    """Durable queues on the session server in the test's namespace."""
    return functools.partial(make_nasqueue, durable=True)


async def drain(queue: NASQueue) -> list[bytes]:
    popped = []
    while (msg := await queue.pop()) is not None:
        popped.append(msg["message"])
    return popped


async def test_the_seed_tests_hold_in_durable_mode(make_queue: MakeNASQueue) -> None:
    queue = await connected(make_queue())
    await queue.push("test", "Hello")
    assert queue.queue_size() == 1
    msg = await queue.pop()
    assert msg is not None
    assert (msg["message"], msg["subject"], msg["headers"]) == (b"Hello", "test", None)
    assert await queue.pop() is None

    await queue.subscribe_and_queue("events")
    await queue.push("events", "Test event")
    assert queue.queue_size() == 1
    msg = await queue.pop()
    assert msg is not None
    assert msg["message"] == b"Test event"


async def test_higher_priorities_pop_first_fifo_within_one(make_queue: MakeNASQueue) -> None:
    queue = await connected(make_queue())
    pushed = [(i, i % 4 * 3) for i in range(12)]  # priorities 0, 3, 6, 9
    for i, priority in pushed:
        await queue.push("work", str(i), priority=priority)
    await queue.push("work", "default")  # priority 0
    order = [int(m) if m != b"default" else -1 for m in await drain(queue)]
    expected = [i for i, _ in sorted(pushed, key=lambda p: -p[1])]
    assert order == [*expected, -1]


async def test_priority_outside_0_to_9_is_refused(make_queue: MakeNASQueue) -> None:
    queue = await connected(make_queue())
    for bad in (-1, 10, 2.5, "high"):
        with pytest.raises(ConfigurationError, match="priority"):
            await queue.push("work", "x", priority=bad)  # type: ignore[arg-type]
    assert queue.queue_size() == 0
    assert list(PRIORITIES) == list(range(10))


async def test_msg_id_drops_duplicates(make_queue: MakeNASQueue) -> None:
    queue = await connected(make_queue())
    assert await queue.push("orders", "first", msg_id="order-1")
    assert not await queue.push("orders", "again", msg_id="order-1")
    assert await queue.push("orders", "other", msg_id="order-2")
    assert queue.queue_size() == 2
    popped = [await queue.pop(), await queue.pop()]
    assert [m["message"] for m in popped if m] == [b"first", b"other"]
    assert popped[0] is not None
    assert popped[0]["headers"] == {"Nats-Msg-Id": "order-1"}


async def test_headers_and_dotted_subjects_round_trip(make_queue: MakeNASQueue) -> None:
    queue = await connected(make_queue())
    await queue.push("user.login", {"id": 7}, headers={"trace": "abc"}, priority=5)
    msg = await queue.pop()
    assert msg is not None
    assert msg["subject"] == "user.login"
    assert json.loads(msg["message"]) == {"id": 7}
    assert msg["headers"] == {"trace": "abc"}
    assert msg["reply_to"] is None


async def test_queue_size_is_the_backlog_shared_by_every_client(make_queue: MakeNASQueue) -> None:
    a, b = await connected(make_queue()), await connected(make_queue())
    for i in range(5):
        await a.push("jobs-in", str(i))
    assert b.queue_size() == 5
    assert await b.pop() is not None
    assert await b.pop() is not None
    assert a.queue_size() == 3
    assert a.clear_queue() == 3
    assert b.queue_size() == 0


async def test_messages_survive_a_disconnect(make_queue: MakeNASQueue) -> None:
    producer = await connected(make_queue())
    for i in range(10):
        await producer.push("work", str(i))
    await producer.disconnect()
    consumer = await connected(make_queue())
    assert await drain(consumer) == [str(i).encode() for i in range(10)]


async def test_a_waiting_pop_wakes_when_another_client_pushes(make_queue: MakeNASQueue) -> None:
    consumer, producer = await connected(make_queue()), await connected(make_queue())
    waiting = asyncio.create_task(consumer.pop(timeout=30))
    await asyncio.sleep(0)
    await producer.push("late", "here", priority=7)
    msg = await asyncio.wait_for(waiting, 10)  # long before the pop's own timeout
    assert msg is not None
    assert msg["message"] == b"here"
    assert await consumer.pop(timeout=0.2) is None


async def test_memory_stays_bounded_whatever_the_backlog(make_queue: MakeNASQueue) -> None:
    queue = await connected(make_queue())
    blob = b"x" * 10_000
    count = 2_000  # 20 MB of backlog
    tracemalloc.start()
    try:
        for _ in range(count):
            await queue.push("blob", blob)
        assert queue.queue_size() == count
        popped = 0
        while (msg := await queue.pop()) is not None:
            popped += len(msg["message"])
            del msg
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert popped == count * len(blob)
    assert peak < 3_000_000, f"the client held {peak:,} bytes at once for a 20 MB backlog"


async def test_oversize_message_is_refused_clearly(make_queue: MakeNASQueue) -> None:
    queue = await connected(make_queue())
    with pytest.raises(PayloadTooLarge, match="max_payload"):
        await queue.push("big", b"x" * 2_000_000)
    assert queue.queue_size() == 0


def test_a_durable_namespace_is_one_token() -> None:
    with pytest.raises(ConfigurationError, match="one token"):
        NASQueue(namespace="billing.prod", durable=True)
    NASQueue(namespace="billing.prod")  # fine in memory: only subjects derive from it


async def test_durable_mode_needs_jetstream(tmp_path: Path) -> None:
    with EmbeddedServer(free_port(), tmp_path, jetstream=False) as plain:
        queue = NASQueue(plain.host, plain.port, namespace="x", durable=True)
        assert not await queue.connect()
        assert queue.connect_error is not None
        assert "JetStream" in queue.connect_error
        with pytest.raises(NaqConnectionError, match="not connected"):
            await queue.push("a", "b")


async def test_subscriptions_store_what_anyone_publishes_once(
    make_queue: MakeNASQueue, nats_server: EmbeddedServer, namespace: str
) -> None:
    """Two durable clients subscribed to one subject: each plain NATS message is stored
    once (they share a queue group), and popped by subject without the namespace."""
    a, b = await connected(make_queue()), await connected(make_queue())
    await a.subscribe_and_queue("sensor.*")
    await b.subscribe_and_queue("sensor.*")
    nc = await nats.connect(nats_server.url)
    try:
        for i in range(20):
            await nc.publish(f"{namespace}.sensor.t{i % 2}", str(i).encode())
        await flush(nc)
    finally:
        await nc.close()
    deadline = asyncio.get_running_loop().time() + 10
    while a.queue_size() < 20:  # stored by the subscribers' callbacks, asynchronously
        assert asyncio.get_running_loop().time() < deadline, a.queue_size()
        await asyncio.sleep(0.02)
    popped = [await a.pop() for _ in range(20)]
    assert sorted(int(m["message"]) for m in popped if m) == list(range(20))
    assert {m["subject"] for m in popped if m} == {"sensor.t0", "sensor.t1"}
    assert a.queue_size() == 0
    assert await a.unsubscribe()


CONSUMER = """
import asyncio, sys
from naq.nasqueue import NASQueue

async def main(port, namespace, idle):
    queue = NASQueue("127.0.0.1", int(port), namespace=namespace, durable=True)
    assert await queue.connect(), queue.connect_error
    print("ready", flush=True)
    while (msg := await queue.pop(timeout=float(idle))) is not None:
        print(msg["message"].decode(), flush=True)
        await asyncio.sleep(0.005)  # some work, so no one process takes everything
    await queue.disconnect()

asyncio.run(main(*sys.argv[1:]))
"""

PRODUCER = """
import asyncio, os, sys
from naq.nasqueue import NASQueue

async def main(port, namespace, count):
    queue = NASQueue("127.0.0.1", int(port), namespace=namespace, durable=True)
    assert await queue.connect(), queue.connect_error
    for i in range(int(count)):
        await queue.push("work", str(i))
    print("pushed", flush=True)
    os._exit(0)  # no disconnect, no cleanup: the messages must already be safe

asyncio.run(main(*sys.argv[1:]))
"""


def python(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )


async def test_messages_survive_the_process_that_pushed_them(
    make_queue: MakeNASQueue, nats_server: EmbeddedServer, namespace: str
) -> None:
    producer = python(PRODUCER, nats_server.port, namespace, 100)
    out, _ = await asyncio.to_thread(producer.communicate, timeout=60)
    assert producer.returncode == 0
    assert out.strip() == "pushed"
    consumer = await connected(make_queue())
    assert await drain(consumer) == [str(i).encode() for i in range(100)]


async def test_processes_share_one_queue_and_pop_each_message_once(
    make_queue: MakeNASQueue, nats_server: EmbeddedServer, namespace: str
) -> None:
    consumers = [python(CONSUMER, nats_server.port, namespace, 1.5) for _ in range(3)]
    try:
        for proc in consumers:
            assert proc.stdout is not None
            assert await asyncio.to_thread(proc.stdout.readline) == "ready\n"
        producer = await connected(make_queue())
        for i in range(300):
            await producer.push("work", str(i))
        outputs = [await asyncio.to_thread(p.communicate, timeout=60) for p in consumers]
    finally:
        for proc in consumers:
            proc.kill()
    popped = [line for out, _ in outputs for line in out.split()]
    assert sorted(map(int, popped)) == list(range(300)), "lost or popped twice"
    assert sum(1 for out, _ in outputs if out.split()) >= 2, "one process did all the work"
    assert producer.queue_size() == 0


async def test_messages_survive_a_server_restart_in_the_middle(
    tmp_path: Path, namespace: str
) -> None:
    """The server is killed while a producer pushes and a consumer pops; nothing pushed
    is lost, nothing is popped twice, and both carry on once it is back. A message
    whose pop was cut by the kill (pulled, ack unconfirmed) is offered again after
    ``ack_wait``, short here."""
    server = EmbeddedServer(free_port(), tmp_path / "store").start()
    settings = Settings(nats_url=server.url, ack_wait=2.0)
    producer = NASQueue(server.host, server.port, namespace, durable=True, settings=settings)
    consumer = NASQueue(server.host, server.port, namespace, durable=True, settings=settings)
    try:
        assert await producer.connect()
        assert await consumer.connect()
        halfway = asyncio.Event()
        popped: list[int] = []

        async def produce() -> None:
            for i in range(400):
                await producer.push("work", str(i), priority=i % 3)
                if i == 150:
                    halfway.set()

        async def consume() -> None:
            while len(set(popped)) < 400:  # a lost message makes this time out
                msg = await consumer.pop(timeout=30)
                assert msg is not None, f"nothing more after {len(popped)} messages"
                popped.append(int(msg["message"]))

        pushing, popping = asyncio.create_task(produce()), asyncio.create_task(consume())
        await halfway.wait()
        server.kill()  # SIGKILL: no clean shutdown
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(pushing, 90)
        await asyncio.wait_for(popping, 90)
        assert sorted(popped) == list(range(400)), "lost, or popped twice"
        assert await consumer.pop(timeout=0.5) is None
        assert consumer.queue_size() == 0
    finally:
        await producer.disconnect()
        await consumer.disconnect()
        server.stop()


async def test_a_stored_backlog_survives_a_server_restart(tmp_path: Path, namespace: str) -> None:
    server = EmbeddedServer(free_port(), tmp_path / "store").start()
    try:
        queue = NASQueue(server.host, server.port, namespace=namespace, durable=True)
        assert await queue.connect()
        for i in range(50):
            await queue.push("work", str(i), priority=9 if i == 49 else 0)
        await queue.disconnect()
        server.stop()
        server.start()
        assert await queue.connect()
        assert queue.queue_size() == 50
        assert await drain(queue) == [b"49", *(str(i).encode() for i in range(49))]
        await queue.disconnect()
    finally:
        server.stop()


PULL_AND_HANG = """
import asyncio, sys
from naq.nasqueue import NASQueue
from naq.settings import Settings

async def main(port, namespace):
    settings = Settings(nats_url=f"nats://127.0.0.1:{port}", ack_wait=1.0)
    queue = NASQueue("127.0.0.1", int(port), namespace=namespace, durable=True, settings=settings)
    assert await queue.connect(), queue.connect_error
    msg = await queue._backend._pull(0)  # pulled, not yet acknowledged: a pop cut short
    print("pulled", msg.data.decode(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_message_pulled_by_a_killed_process_is_popped_by_another(
    nats_server: EmbeddedServer, namespace: str
) -> None:
    settings = Settings(nats_url=nats_server.url, ack_wait=1.0)
    queue = NASQueue(nats_server.host, nats_server.port, namespace, durable=True, settings=settings)
    assert await queue.connect(), queue.connect_error
    try:
        await queue.push("work", "precious")
        victim = python(PULL_AND_HANG, nats_server.port, namespace)
        assert victim.stdout is not None
        line = await asyncio.to_thread(victim.stdout.readline)
        assert line == "pulled precious\n"
        assert await queue.pop() is None, "the pulled message is held by the victim"
        victim.kill()  # SIGKILL between pull and ack
        victim.wait()
        msg = await queue.pop(timeout=15)  # offered again after ack_wait (1 s)
        assert msg is not None
        assert msg["message"] == b"precious"
        assert queue.queue_size() == 0
    finally:
        await queue.disconnect()


async def test_a_durable_queue_and_naq_jobs_share_a_namespace_without_touching(
    make_queue: MakeNASQueue, queue: Queue, start_supervisor: StartSupervisor
) -> None:
    """Same namespace for both: their streams' subjects do not overlap (the server would
    refuse the second stream), and neither sees the other's messages."""
    nas = await connected(make_queue())
    assert nas.get_namespace() == queue.settings.namespace
    await start_supervisor()
    job = await queue.enqueue(jobs.add, 2, 3)
    await nas.push("jobs", "a NASQueue message on a subject named like naq's")
    assert await queue.fetch_result(job.job_id, timeout=10) == 5
    msg = await nas.pop()
    assert msg is not None
    assert msg["subject"] == "jobs"
    assert await nas.pop() is None


async def test_a_list_of_server_urls_is_taken_as_host_and_a_dead_first_one_is_skipped(
    nats_server: EmbeddedServer, namespace: str
) -> None:
    """``host`` may be naq's URL list (a cluster's nodes): the client tries them in turn,
    so a dead first URL costs one refused connect."""
    dead = f"nats://127.0.0.1:{free_port()}"
    queue = NASQueue(f"{dead},{nats_server.url}", namespace=namespace, durable=True)
    try:
        await connected(queue)
        await queue.push("jobs", "one")
        popped = await queue.pop(timeout=5)
        assert popped is not None
        assert (popped["subject"], popped["message"]) == ("jobs", b"one")
    finally:
        await queue.disconnect()
