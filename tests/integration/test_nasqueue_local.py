"""NASQueue in memory (the seed's mode): connection handling, the push rule, queue
groups, namespaces, and a clear error for each kind of bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import naq.nasqueue as nasqueue_module
from naq import NASQueue as FromNaq
from naq.errors import ConfigurationError, NaqConnectionError, PayloadTooLarge, SerializationError
from naq.nasqueue import NASQueue
from naq.transport.connect import flush
from naq.transport.server import EmbeddedServer, free_port
from nas_queue import NASQueue as FromSeed
from tests.conftest import MakeNASQueue, connected


async def settle(*queues: NASQueue) -> None:
    """Publishes so far have reached their subscribers (one round trip per client)."""
    for queue in queues:
        await flush(queue._nc)
    await asyncio.sleep(0)


def test_one_class_under_both_import_paths() -> None:
    assert FromSeed is NASQueue
    assert FromNaq is NASQueue


async def test_connect_returns_false_when_nothing_listens() -> None:
    queue = NASQueue("127.0.0.1", free_port(), namespace="x")
    assert await queue.connect() is False
    assert queue.connect_error is not None
    assert "cannot connect" in queue.connect_error
    assert not queue.is_connected()
    assert await queue.wait_connected(timeout=0.3) is False
    with pytest.raises(NaqConnectionError, match="cannot connect"):
        async with queue:
            pass


async def test_wait_connected_waits_for_a_server_that_starts_later(tmp_path: Path) -> None:
    port = free_port()
    queue = NASQueue("127.0.0.1", port, namespace="late")
    waiting = asyncio.create_task(queue.wait_connected(timeout=30))
    await asyncio.sleep(0)
    with EmbeddedServer(port, tmp_path, jetstream=False):
        assert await waiting is True
        assert queue.is_connected()
        await queue.disconnect()


async def test_concurrent_connects_make_one_connection(
    make_nasqueue: MakeNASQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = []
    real = nasqueue_module.nats_connect

    async def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(await real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(nasqueue_module, "nats_connect", counting)
    queue = make_nasqueue()
    connects = [queue.connect(), queue.wait_connected(), queue.connect()]
    assert await asyncio.gather(*connects) == [True, True, True]
    assert await queue.connect()
    assert len(made) == 1, "a second connection was made (and the first leaked)"


async def test_plain_nats_without_jetstream_is_enough(tmp_path: Path) -> None:
    """``docker run nats`` (no -js), as the seed's install section starts it."""
    with EmbeddedServer(free_port(), tmp_path, jetstream=False) as plain:
        async with NASQueue(plain.host, plain.port, namespace="plain") as queue:
            await queue.push("a", "b")
            msg = await queue.pop()
            assert msg is not None
            assert msg["message"] == b"b"


async def test_using_a_queue_that_is_not_connected_says_so() -> None:
    queue = NASQueue(namespace="idle")
    with pytest.raises(NaqConnectionError, match="call connect"):
        await queue.push("a", "b")
    with pytest.raises(NaqConnectionError, match="never connected"):
        await queue.pop()
    with pytest.raises(NaqConnectionError, match="call connect"):
        await queue.subscribe_and_queue("a")
    assert queue.queue_size() == 0
    assert await queue.unsubscribe() is False


async def test_a_push_to_an_own_subscription_arrives_once(make_nasqueue: MakeNASQueue) -> None:
    queue = await connected(make_nasqueue())
    await queue.subscribe_and_queue("user.*")
    await queue.push("user.login", "via the subscription")
    await queue.push("order.new", "straight into the local queue")
    await settle(queue)
    popped = [await queue.pop(timeout=5), await queue.pop(timeout=5)]
    assert sorted(m["message"] for m in popped if m) == [
        b"straight into the local queue",
        b"via the subscription",
    ]
    assert await queue.pop() is None


async def test_pop_waits_for_a_message_and_gives_up_at_its_timeout(
    make_nasqueue: MakeNASQueue,
) -> None:
    consumer, producer = await connected(make_nasqueue()), await connected(make_nasqueue())
    await consumer.subscribe_and_queue("work")
    waiting = asyncio.create_task(consumer.pop(timeout=30))
    await asyncio.sleep(0)
    await producer.push("work", "now")
    msg = await asyncio.wait_for(waiting, 10)
    assert msg is not None
    assert msg["message"] == b"now"
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await consumer.pop(timeout=0.2) is None
    assert loop.time() - started >= 0.19  # timers may fire a clock tick early


async def test_queue_groups_split_messages_and_plain_subscribers_get_all(
    make_nasqueue: MakeNASQueue,
) -> None:
    workers = [await connected(make_nasqueue()) for _ in range(3)]
    watcher = await connected(make_nasqueue())
    for worker in workers:
        await worker.subscribe_and_queue("tasks", queue_group="pool")
    await watcher.subscribe_and_queue("tasks")
    dispatcher = await connected(make_nasqueue())
    for i in range(90):
        await dispatcher.push("tasks", str(i))
    await settle(dispatcher, *workers, watcher)
    shares = [[m["message"] for m in await _drain(w)] for w in workers]
    got = sorted(int(m) for share in shares for m in share)
    assert got == list(range(90)), "each task goes to exactly one member of the group"
    assert sum(1 for share in shares if share) >= 2, f"no balancing: {list(map(len, shares))}"
    assert len(await _drain(watcher)) == 90


async def _drain(queue: NASQueue) -> list[dict[str, object]]:
    out = []
    while (msg := await queue.pop()) is not None:
        out.append(dict(msg))
    return out


async def test_namespaces_do_not_see_each_other(make_nasqueue: MakeNASQueue) -> None:
    prod, dev = await connected(make_nasqueue("prod-a")), await connected(make_nasqueue("dev-a"))
    nested = await connected(make_nasqueue("svc.prod"))
    for queue in (prod, dev, nested):
        await queue.subscribe_and_queue(">")
    await dev.push("orders", "dev order")
    await nested.push("orders", "nested order")
    await settle(dev, nested, prod)
    assert prod.queue_size() == 0
    assert (await dev.pop(timeout=5) or {}).get("message") == b"dev order"
    assert (await nested.pop(timeout=5) or {}).get("subject") == "orders"


async def test_disconnect_keeps_what_had_arrived(make_nasqueue: MakeNASQueue) -> None:
    queue, producer = await connected(make_nasqueue()), await connected(make_nasqueue())
    await queue.subscribe_and_queue("x")
    for i in range(100):
        await producer.push("x", str(i))
    await settle(producer)
    await queue.disconnect()  # drains: messages on their way are queued first
    assert queue.queue_size() == 100
    assert not queue.is_connected()
    assert (await queue.pop() or {}).get("message") == b"0"
    assert await queue.connect()  # and connecting again keeps the rest
    assert queue.queue_size() == 99
    assert (await queue.pop() or {}).get("message") == b"1"


@pytest.mark.parametrize("namespace", ["", "a b", "a..b", ".a", "a.", "a.*", "a>", "ä", 7])
def test_invalid_namespaces_are_refused(namespace: object) -> None:
    with pytest.raises(ConfigurationError, match="invalid namespace"):
        NASQueue(namespace=namespace)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "subject", ["", "a b", "a..b", ".a", "a.", "a.*", ">", "a.>", None, ["a"], 7]
)
async def test_invalid_subjects_are_refused_on_push(
    make_nasqueue: MakeNASQueue, subject: str
) -> None:
    queue = await connected(make_nasqueue())
    with pytest.raises(ConfigurationError, match="invalid subject"):
        await queue.push(subject, "x")
    assert queue.queue_size() == 0


async def test_subscriptions_take_wildcards_but_not_broken_subjects(
    make_nasqueue: MakeNASQueue,
) -> None:
    queue = await connected(make_nasqueue())
    assert await queue.subscribe_and_queue("a.*.c") != await queue.subscribe_and_queue("b.>")
    for bad in ("a.>.c", "a..b", "a b"):
        with pytest.raises(ConfigurationError, match="invalid subject"):
            await queue.subscribe_and_queue(bad)
    with pytest.raises(ConfigurationError, match="queue group"):
        await queue.subscribe_and_queue("a", queue_group="two words")


@pytest.mark.parametrize(
    "subject", ["jobs.default.0123", "sched.abc", "failed.default", "control.cancel", "nasq.0.x"]
)
async def test_subjects_naq_uses_in_a_namespace_are_reserved(
    make_nasqueue: MakeNASQueue, subject: str
) -> None:
    """So a push can never land in naq's own job or failed-job streams."""
    queue = await connected(make_nasqueue())
    with pytest.raises(ConfigurationError, match="reserved"):
        await queue.push(subject, "x")
    await queue.push("jobs", "a subject of one token is the user's")


async def test_messages_that_cannot_be_sent_get_clear_errors(make_nasqueue: MakeNASQueue) -> None:
    queue = await connected(make_nasqueue())
    with pytest.raises(SerializationError, match="JSON-serializable"):
        await queue.push("a", object())
    with pytest.raises(PayloadTooLarge, match="max_payload"):
        await queue.push("a", b"x" * 2_000_000)
    for headers in ({"a": 1}, {1: "a"}, {"a b": "c"}, {"a": "line\nbreak"}, ["a"]):
        with pytest.raises(ConfigurationError, match="header"):
            await queue.push("a", "x", headers=headers)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="durable=True"):
        await queue.push("a", "x", priority=5)
    with pytest.raises(ConfigurationError, match="durable=True"):
        await queue.push("a", "x", msg_id="one")
    assert queue.queue_size() == 0
    assert queue.is_connected(), "a refused push leaves the connection usable"


async def test_pushing_into_a_lost_connection_fills_its_buffer_then_says_so(
    tmp_path: Path,
) -> None:
    """nats-py buffers publishes while it reconnects; past that buffer a push is a
    clear connection error, not a raw client exception."""
    server = EmbeddedServer(free_port(), tmp_path, jetstream=False).start()
    queue = NASQueue(server.host, server.port, namespace="lost")
    try:
        assert await queue.connect()
        server.stop()
        refused: NaqConnectionError | None = None
        for _ in range(500):  # until the client has noticed and its buffer is full
            try:
                await queue.push("big", b"x" * 900_000)
            except NaqConnectionError as exc:
                refused = exc
                break
            await asyncio.sleep(0.01)
        assert refused is not None
        assert "cannot publish on 'big'" in str(refused)
    finally:
        await queue.disconnect()
        server.stop()
