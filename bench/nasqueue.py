"""NASQueue rates next to the raw nats-py limits of the same protocol, same run.

Every NASQueue call is one message at a time (the seed's API), so each raw
counterpart is the same one-at-a-time protocol written directly with nats-py:

| NASQueue figure | raw counterpart |
| --- | --- |
| durable ``push``, awaited one by one | ``js.publish`` with a ``Nats-Msg-Id``, awaited one by one |
| durable ``push``, 100 in flight (``gather``) | the same ``js.publish`` calls, 100 in flight |
| durable ``pop`` (one priority level in use) | pull 1 (``no_wait``), then a double ack |
| durable ``pop``, messages spread over 3 levels | the same raw pull + double ack |
| in-memory ``push`` + ``pop`` | ``nc.publish`` alone (core NATS) |

Messages are 100 bytes; each run uses fresh namespaces on one embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from harness import median_of, on_embedded_server, write_json
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from naq.nasqueue import NASQueue
from naq.transport.server import EmbeddedServer

PAYLOAD = b"x" * 100
COMPARISONS = [
    ("durable push", "push", "raw_publish"),
    ("durable push, 100 in flight", "push_gather", "raw_publish_gather"),
    ("durable pop", "pop", "raw_pop"),
    ("durable pop, 3 priorities", "pop_levels", "raw_pop"),
    ("in-memory push + pop", "local", "raw_core_publish"),
]


async def timed(n: int, work: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await work()
    return n / (time.perf_counter() - started)


async def in_flight(calls: list[Callable[[], Awaitable[Any]]], width: int = 100) -> None:
    for i in range(0, len(calls), width):
        await asyncio.gather(*(call() for call in calls[i : i + width]))


async def raw_figures(url: str, n: int) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"RAW{uuid.uuid4().hex[:8]}"
    await js.add_stream(
        StreamConfig(
            name=name,
            subjects=[f"{name}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    await js.add_consumer(name, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT))

    async def publish_all() -> None:
        for i in range(n):
            await js.publish(f"{name}.q", PAYLOAD, headers={"Nats-Msg-Id": f"a{i}"})

    async def publish_gather() -> None:
        await in_flight(
            [
                lambda i=i: js.publish(f"{name}.q", PAYLOAD, headers={"Nats-Msg-Id": f"b{i}"})
                for i in range(n)
            ]
        )

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    request = json.dumps({"batch": 1, "no_wait": True}).encode()

    async def pop_all() -> None:
        for _ in range(2 * n):
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{name}.c", request, reply=inbox)
            msg = await sub.next_msg(timeout=5)
            await msg.ack_sync()

    async def core_publish() -> None:
        for _ in range(n):
            await nc.publish(f"{name}-core.q", PAYLOAD)
        await nc.flush()

    figures = {
        "raw_publish": await timed(n, publish_all),
        "raw_publish_gather": await timed(n, publish_gather),
        "raw_pop": await timed(2 * n, pop_all),
        "raw_core_publish": await timed(n, core_publish),
    }
    await js.delete_stream(name)
    await nc.close()
    return figures


async def nasqueue_figures(host: str, port: int, n: int) -> dict[str, float]:
    queue = NASQueue(host, port, namespace=f"b{uuid.uuid4().hex[:8]}", durable=True)
    assert await queue.connect(), queue.connect_error

    async def push_all() -> None:
        for _ in range(n):
            await queue.push("work", PAYLOAD)

    async def push_gather() -> None:
        await in_flight([lambda: queue.push("work", PAYLOAD) for _ in range(n)])

    async def pop_all() -> None:
        for _ in range(2 * n):
            assert await queue.pop() is not None

    async def push_levels() -> None:
        for i in range(2 * n):
            await queue.push("work", PAYLOAD, priority=(0, 4, 9)[i % 3])

    local = NASQueue(host, port, namespace=f"m{uuid.uuid4().hex[:8]}")
    assert await local.connect()

    async def local_push_pop() -> None:
        for _ in range(n):
            await local.push("work", PAYLOAD)
            assert await local.pop() is not None

    figures = {
        "push": await timed(n, push_all),
        "push_gather": await timed(n, push_gather),
        "pop": await timed(2 * n, pop_all),
    }
    await push_levels()
    figures["pop_levels"] = await timed(2 * n, pop_all)
    figures["local"] = await timed(n, local_push_pop)
    assert queue.queue_size() == 0
    await queue.disconnect()
    await local.disconnect()
    return figures


def table(title: str, figures: dict[str, float]) -> list[str]:
    lines = [f"{title:<30}{'naq/s':>10}{'raw/s':>10}{'ratio':>8}"]
    for label, ours, raw in COMPARISONS:
        lines.append(
            f"{label:<30}{figures[ours]:>10,.0f}{figures[raw]:>10,.0f}"
            f"{figures[ours] / figures[raw]:>8.2f}"
        )
    return lines


async def bench(server: EmbeddedServer, n: int, runs: int) -> dict[str, Any]:
    all_runs = []
    for index in range(runs):
        figures = await raw_figures(server.url, n)
        figures |= await nasqueue_figures(server.host, server.port, n)
        all_runs.append(figures)
        print("\n".join(["", *table(f"run {index + 1}/{runs}", figures)]))
    median = median_of(all_runs)
    if runs > 1:
        print("\n".join(["", *table(f"median of {runs} runs", median)]))
    return {"messages": n, "runs": all_runs, "median": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=3_000, help="messages per phase")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    async def run(server: EmbeddedServer, version: str) -> dict[str, Any]:
        return await bench(server, args.messages, args.runs) | {"nats_server": version}

    write_json(args.json, on_embedded_server(run))


if __name__ == "__main__":
    main()
