"""Every Python block of the second seed README (NASQueue), run as written.

The README's four whole programs are files in ``examples/nasqueue/`` (two of them get
the import lines the README leaves out) and run as scripts. Its other blocks are
fragments: top-level ``await``, a ``queue`` made earlier, helpers such as
``send_email`` it never defines. Each runs verbatim as the body of an ``async def``,
with those names supplied, and the test checks what it did. Blocks that loop for
ever (a consumer's ``while True``) run until a deadline, after their effect is seen.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from naq.transport.connect import flush
from naq.transport.server import EmbeddedServer
from nas_queue import NASQueue
from tests.conftest import ROOT
from tests.e2e.conftest import Spawn
from tests.e2e.seed2.readme_blocks import BLOCKS

pytestmark = pytest.mark.e2e

EXAMPLES = ROOT / "examples" / "nasqueue"


async def run_block(name: str, forever: float = 0.0, **names: Any) -> dict[str, Any]:
    """Run README block ``name`` as an async function body; returns its local names.

    ``forever``: the block never returns; it is cancelled after that many seconds.
    """
    source = (
        "async def __block__():\n"
        + textwrap.indent(BLOCKS[name], "    ")
        + "\n    return locals()\n"
    )
    scope: dict[str, Any] = {"asyncio": asyncio, "json": json, "datetime": datetime}
    scope["NASQueue"] = NASQueue
    scope.update(names)
    exec(compile(source, f"<README block {name}>", "exec"), scope)
    if forever:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(scope["__block__"](), forever)
        return scope
    result: dict[str, Any] = await asyncio.wait_for(scope["__block__"](), 30)
    return result


@pytest.fixture
async def queue() -> AsyncIterator[NASQueue]:
    """The connected ``queue`` the API reference's fragments use."""
    q = NASQueue("localhost", 4222, namespace="reference")
    assert await q.connect()
    yield q
    await q.disconnect()


async def settle(*queues: NASQueue) -> None:
    """Let messages published so far reach their subscribers (one round trip each)."""
    for q in queues:
        await flush(q._nc)
    await asyncio.sleep(0)


# The whole programs, as scripts.


def run_example(spawn: Spawn, name: str) -> Any:
    return spawn(sys.executable, str(EXAMPLES / f"{name}.py"), cwd=EXAMPLES)


async def test_whole_programs_run_as_scripts(spawn: Spawn) -> None:
    """All four at once (they use different namespaces), so their sleeps overlap."""
    quick = run_example(spawn, "quick_start")
    producer_consumer = run_example(spawn, "producer_consumer")
    balancing = run_example(spawn, "load_balancing")
    events = run_example(spawn, "event_driven")

    assert await quick.exit_code(30) == 0, quick.output()
    assert quick.lines["stdout"] == [
        "Queue size: 2",
        "Popped: b'Order #1001'",
        'Popped: b\'{"id": 1002, "amount": 99.99}\'',
    ]

    for handled in (
        "User logged in: user123",
        "Order created: order456",
        "Order completed: order456",
        "User logged out: user123",
    ):
        await events.line(re.escape(handled), stream="stdout", timeout=30)
    events.send(signal.SIGTERM)  # process_events() loops for ever, as written

    assert await balancing.exit_code(60) == 0, balancing.output()
    tasks = [m.split(": ", 1)[1] for m in balancing.matching(r"^Worker \d: ", "stdout")]
    assert len(tasks) == len(set(tasks)), f"a task went to two workers: {tasks}"

    assert await producer_consumer.exit_code(60) == 0, producer_consumer.output()
    out = producer_consumer.lines["stdout"]
    assert [line for line in out if line.startswith("Produced")] == [
        f"Produced: Task #{i}" for i in range(1, 11)
    ]
    for worker in (1, 2):  # no queue group: both consumers get every task they were
        done = [line for line in out if line.startswith(f"Worker {worker} processing")]
        assert done[-1] == f"Worker {worker} processing: Task #10", out  # subscribed for


# The API reference.


async def test_initialization() -> None:
    scope = await run_block("init")
    assert scope["queue"].get_namespace() == "default"


async def test_connect_and_wait_connected(capsys: pytest.CaptureFixture[str]) -> None:
    queue = NASQueue("localhost", 4222, namespace="default")
    await run_block("connect", queue=queue)
    await queue.disconnect()
    await run_block("wait_connected", queue=queue)
    await run_block("disconnect", queue=queue)
    assert not queue.is_connected()
    assert capsys.readouterr().out == "Connected to NATS!\nConnected within 10 seconds\n"


async def test_is_connected_then_push(queue: NASQueue) -> None:
    await run_block("is_connected", queue=queue)
    assert queue.queue_size() == 1


async def test_push_kinds(queue: NASQueue) -> None:
    await run_block("push", queue=queue)
    popped = [await queue.pop() for _ in range(4)]
    assert [m["message"] for m in popped if m] == [
        b"User logged in",
        b'{"type": "login", "user_id": 123}',
        b"Binary content here",
        b"Important message",
    ]
    assert [m["subject"] for m in popped if m] == ["events", "events", "files", "priority"]
    assert popped[3] is not None
    assert popped[3]["headers"] == {"priority": "high"}


async def test_pop(queue: NASQueue, capsys: pytest.CaptureFixture[str]) -> None:
    await queue.push("a", "first")
    await queue.push("b", "second")
    await run_block("pop", queue=queue)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["Subject: b", "Message: b'second'"]
    assert re.fullmatch(r"Timestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+", out[2])


async def test_subscribe_and_unsubscribe(queue: NASQueue) -> None:
    other = NASQueue("localhost", 4222, namespace="reference")
    assert await other.connect()
    await run_block("subscribe", queue=queue)
    await other.push("events", "seen")
    await other.push("tasks", "seen too")
    await settle(other, queue)
    assert await queue.pop(timeout=5) is not None
    assert await queue.pop(timeout=5) is not None
    await run_block("unsubscribe", queue=queue)
    await other.push("events", "not seen")
    await settle(other, queue)
    assert queue.queue_size() == 0
    assert not await queue.unsubscribe()  # nothing left to end
    await other.disconnect()


async def test_queue_management(queue: NASQueue, capsys: pytest.CaptureFixture[str]) -> None:
    await queue.push("x", "1")
    await run_block("queue_size", queue=queue)
    await run_block("clear_queue", queue=queue)
    await run_block("get_namespace", queue=queue)
    assert capsys.readouterr().out.splitlines() == [
        "Messages in queue: 1",
        "Queue cleared",
        "Current namespace: reference",
    ]
    assert queue.queue_size() == 0


# Advanced usage.


async def test_namespace_isolation(capsys: pytest.CaptureFixture[str]) -> None:
    scope = await run_block("namespace_isolation")
    prod, dev = scope["queue_prod"], scope["queue_dev"]
    await settle(dev, prod)
    assert capsys.readouterr().out.splitlines() == ["Prod queue: 1", "Dev queue: 1"]
    assert prod.queue_size() == 1, "prod received dev's event"
    assert (await prod.pop())["message"] == b"Production order"
    await prod.disconnect()
    await dev.disconnect()


async def test_message_types(capsys: pytest.CaptureFixture[str]) -> None:
    scope = await run_block("message_types")
    assert capsys.readouterr().out == "Text message: Hello, World!\n"
    queue = scope["queue"]
    rest = [await queue.pop() for _ in range(4)]
    assert json.loads(rest[0]["message"])["action"] == "login"
    assert rest[1]["message"] == b"\x89PNG\r\n\x1a\n..."
    assert json.loads(rest[2]["message"])["nested"]["deep"]["value"] == 42
    assert rest[3] is None
    await queue.disconnect()


async def test_context_manager(capsys: pytest.CaptureFixture[str]) -> None:
    scope = await run_block("context_manager")
    assert capsys.readouterr().out == "Got: Message in context\n"
    assert not scope["queue"].is_connected()


async def test_event_driven_class_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """The class alone (its script runs above): ``stop`` ends what ``start`` began."""
    scope = await run_block(
        "event_driven", asyncio=_NoRun()
    )  # defines EventProcessor; its asyncio.run(main()) is skipped
    processor = scope["EventProcessor"]()
    await processor.start()
    sender = NASQueue("localhost", 4222, namespace="events")
    assert await sender.connect()
    await sender.push("order.created", "o1")
    task = asyncio.create_task(processor.process_events())
    await _printed(capsys, "Order created: o1")
    task.cancel()
    await processor.stop()
    await sender.disconnect()


class _NoRun:
    """Stands in for ``asyncio`` where a block's last line is ``asyncio.run(main())``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def run(self, coro: Any) -> None:
        coro.close()


async def _printed(capsys: pytest.CaptureFixture[str], text: str, timeout: float = 10) -> None:
    seen = ""
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in seen:
        assert asyncio.get_running_loop().time() < deadline, f"{text!r} not printed: {seen!r}"
        await asyncio.sleep(0.02)
        seen += capsys.readouterr().out


async def test_message_format(queue: NASQueue) -> None:
    scope = await run_block("message_format")
    example = eval(BLOCKS["message_format"], {"datetime": datetime})
    del scope
    await queue.push("original.subject", b"message bytes")
    popped = await queue.pop()
    assert popped is not None
    assert set(popped) == set(example)
    assert (popped["subject"], popped["headers"], popped["reply_to"]) == (
        "original.subject",
        None,
        None,
    )
    assert isinstance(popped["timestamp"], datetime)


# Performance considerations.


async def test_queue_size_management(queue: NASQueue, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(1001):
        await queue.push("bulk", str(i))
    await run_block("queue_size_management", queue=queue)
    assert capsys.readouterr().out == "Warning: Queue is getting large\n"
    assert queue.queue_size() == 1001


async def test_batch_processing(queue: NASQueue) -> None:
    batches: list[list[Any]] = []

    async def process_messages(batch: list[Any]) -> None:
        batches.append(batch)

    for i in range(12):
        await queue.push("batch", str(i))
    scope = await run_block("batch_processing", process_messages=process_messages)
    await scope["process_batch"](queue)
    assert [m["message"] for m in batches[0]] == [str(i).encode() for i in range(10)]
    assert queue.queue_size() == 2


async def test_connection_reuse() -> None:
    scope = await run_block("connection_reuse")
    assert scope["queue"].queue_size() == 100
    assert scope["q"].queue_size() == 1  # the last of the hundred connections' own push
    await scope["queue"].disconnect()


# Use cases.


async def test_task_queue() -> None:
    sent: list[Any] = []

    async def send_email(data: Any) -> None:
        sent.append(data)

    scope = await run_block("task_queue", forever=1.0, send_email=send_email)
    assert sent == [{"to": "user@example.com", "subject": "Welcome!", "template": "welcome"}]
    del scope


async def test_log_aggregation() -> None:
    logged: list[Any] = []

    async def process_log(entry: Any) -> None:
        logged.append(json.loads(entry["message"]))

    await run_block("log_aggregation", forever=0.5, process_log=process_log)
    assert [e["message"] for e in logged] == ["Database connection failed"]


async def test_message_buffer() -> None:
    processed: list[Any] = []

    async def slow_process(msg: Any) -> None:
        processed.append(msg["message"])

    scope = await run_block("message_buffer", slow_process=slow_process)
    feeder = NASQueue("localhost", 4222, namespace="buffer")
    assert await feeder.connect()
    await feeder.push("incoming.data", "reading 1")
    await settle(feeder, scope["buffer"])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(scope["controlled_processor"](), 0.5)
    assert processed == [b"reading 1"]
    await feeder.disconnect()
    await scope["buffer"].disconnect()


# Troubleshooting and best practices.


async def test_troubleshooting_connection(
    server_on_4222: EmbeddedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_block("troubleshooting_connection")  # the server is up: nothing printed
    assert capsys.readouterr().out == ""
    server_on_4222.stop()
    try:
        await run_block("troubleshooting_connection")
    finally:
        server_on_4222.start()
    assert capsys.readouterr().out.splitlines()[0] == "Failed to connect to NATS"


async def test_queue_monitor(queue: NASQueue, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(10_001):
        await queue.push("flood", str(i))
    scope = await run_block("queue_monitor")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(scope["queue_monitor"](queue), 0.2)
    assert capsys.readouterr().out == "Warning: Queue size is 10001\n"


async def test_best_practices(capsys: pytest.CaptureFixture[str]) -> None:
    processed: list[Any] = []
    queue = NASQueue("localhost", 4222, namespace="practice")
    await run_block("check_connection", queue=queue)  # connects and pushes
    await run_block("handle_pop_timeouts", queue=queue, process=processed.append)
    assert [m["message"] for m in processed] == [b"message"]
    await run_block("queue_groups", queue=queue)
    for i in range(6):
        await queue.push("local", str(i))
    await run_block("clear_when_needed", queue=queue, MAX_SIZE=5)
    assert queue.queue_size() == 0
    await queue.disconnect()
    assert capsys.readouterr().out == ""

    import os

    scope = await run_block("namespaces", os=os, service_name="billing", environment="development")
    for namespace in ("development", scope["namespace"]):
        async with NASQueue(namespace=namespace) as q:
            await q.push("ping", "pong")
            assert (await q.pop())["message"] == b"pong"
    assert scope["namespace"] == "billing.development"


async def test_load_balancing_with_durable_queues_gives_every_task_to_one_worker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As written, the dispatcher may push before the workers subscribe, and those tasks
    are gone (the seed's own limitation). The same program with ``durable=True``: every
    one of the 20 tasks reaches exactly one worker."""

    def durable_nasqueue(*args: Any, **kwargs: Any) -> NASQueue:
        return NASQueue(*args, **kwargs, durable=True)

    scope = await run_block("load_balancing", asyncio=_NoRun(), NASQueue=durable_nasqueue)
    await scope["main"]()
    lines = capsys.readouterr().out.splitlines()
    tasks = sorted(int(line.rsplit(" ", 1)[1]) for line in lines)
    assert tasks == list(range(1, 21)), lines
