"""Waiting for results, next to the raw nats-py limits of the same protocol, same run.

Two figures, each set next to its counterpart written directly with nats-py:

- a wait on a result already stored, ``fetch_result(id, timeout)`` one by one; raw:
  ``kv.get`` (a direct get) one by one;
- a wait woken by its result: the caller is already waiting (untimed), then the
  record is stored and the time until the caller has it is taken, as a rate of
  such wake-ups; raw: a core subscriber already in place, ``js.publish`` on its
  subject, the time until the subscriber has the message.

Records are stored with naq's own ``store_result``, so a supervisor's cost is in
neither figure.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import nats
from harness import emit, median_of, on_embedded_server, write_json
from nats.aio.msg import Msg

from naq.queue import Queue
from naq.settings import Settings
from naq.state.record import ResultRecord
from naq.state.store import store_result
from naq.transport.connect import flush
from naq.transport.server import EmbeddedServer

COMPARISONS = [
    ("wait on a stored result", "stored", "raw_get"),
    ("wait woken by the store", "woken", "raw_woken"),
]


def record(job_id: str) -> ResultRecord:
    return ResultRecord(job_id, "finished", "json", time.time(), payload=b"42")


async def naq_figures(url: str, n: int, run: int) -> dict[str, float]:
    async with Queue(settings=Settings(nats_url=url, namespace=f"bench{run}")) as queue:
        client = await queue.connection()
        layout = queue.layout
        await store_result(client, layout, record("stored"), 600)
        started = time.perf_counter()
        for _ in range(n):
            await queue.fetch_result("stored", timeout=5)
        stored = n / (time.perf_counter() - started)

        woken_total = 0.0
        for i in range(n):
            wait = asyncio.create_task(queue.fetch_result(f"w{i}", timeout=5))
            await asyncio.sleep(0.002)  # untimed: the caller subscribes, reads, waits
            started = time.perf_counter()
            await store_result(client, layout, record(f"w{i}"), 60)
            await wait
            woken_total += time.perf_counter() - started
        woken = n / woken_total
    return {"stored": stored, "woken": woken}


async def raw_figures(url: str, n: int, run: int) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    kv = await js.create_key_value(bucket=f"raw{run}")
    await kv.put("stored", b"42")
    started = time.perf_counter()
    for _ in range(n):
        await kv.get("stored")
    raw_get = n / (time.perf_counter() - started)

    woken_total = 0.0
    for i in range(n):
        subject = f"$KV.raw{run}.w{i}"
        heard = asyncio.Event()

        async def on_message(msg: Msg, heard: asyncio.Event = heard) -> None:
            heard.set()

        sub = await nc.subscribe(subject, cb=on_message)
        await flush(nc)
        started = time.perf_counter()
        await js.publish(subject, b"42")
        await heard.wait()
        woken_total += time.perf_counter() - started
        await sub.unsubscribe()
    raw_woken = n / woken_total
    await nc.close()
    return {"raw_get": raw_get, "raw_woken": raw_woken}


async def measure(server: EmbeddedServer, version: str, n: int, runs: int) -> dict[str, float]:
    emit(f"nats-server {version}, {n} waits per figure, {runs} runs")
    results = []
    for run in range(runs):
        figures = await naq_figures(server.url, n, run) | await raw_figures(server.url, n, run)
        results.append(figures)
        emit(f"run {run + 1}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in figures.items()))
    return median_of(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    medians = on_embedded_server(lambda server, v: measure(server, v, args.n, args.runs))
    emit("\nmedians:")
    report = []
    for label, ours, raw in COMPARISONS:
        ratio = medians[ours] / medians[raw]
        emit(f"  {label}: {medians[ours]:,.0f}/s vs raw {medians[raw]:,.0f}/s ({ratio:.2f})")
        report.append({"figure": label, "naq": medians[ours], "raw": medians[raw], "ratio": ratio})
    write_json(args.json, report)


if __name__ == "__main__":
    main()
