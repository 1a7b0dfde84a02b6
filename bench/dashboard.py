"""How long each dashboard page takes with 100,000 failed jobs and 100,000 finished
results in the namespace: the scale at which other dashboards take 30 s a page.

Fills the namespace fast (the failed entries and result records published directly
in bulk, as a supervisor writes them), starts the real ``naq dashboard`` process on
an embedded server, then GETs each page several times and prints the median. The
target is under 1 s for every page: each page reads a page of the stream by
sequence, never the whole set.

    python bench/dashboard.py [--failed N] [--finished N] [--gets K] [--runs R] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from harness import emit, median_of, on_embedded_server, write_json

from naq.job import JobOptions
from naq.producer.api import close_connections, connected
from naq.state import record as records
from naq.transport.connect import Client
from naq.transport.names import Layout
from naq.transport.publish import Outgoing
from naq.transport.server import EmbeddedServer, free_port
from naq.wire import JobMeta, encode_job

QUEUES = ("emails", "reports", "billing", "default")
CHUNK = 5_000
NAQ = str(Path(sys.executable).parent / "naq")


def failed_entry(layout: Layout, i: int) -> Outgoing:
    """What a supervisor writes to the failed stream for a job that failed for good."""
    queue = QUEUES[i % len(QUEUES)]
    function = "tasks:send_email" if i % 100 else "tasks:rare"
    meta = JobMeta(f"f{i:07d}", function, queue, "json", time.time(), JobOptions(), False)
    body = encode_job(meta, f'[["user{i}@example.com"], {{"token": "t{i}"}}]'.encode())
    headers = {
        "Naq-Job-Id": meta.job_id,
        "Naq-Reason": f"ValueError: bad address {i}",
        "Naq-Attempts": "3",
        "Naq-Worker": "bench-worker",
        "Naq-Failed-At": str(time.time()),
        "Naq-Traceback": '"Traceback (most recent call last):\\n  ValueError"',
    }
    return Outgoing(layout.failed_subject(queue), body, headers)


def finished_record(layout: Layout, i: int) -> Outgoing:
    """A finished job's record in the results KV, as the settler stores it."""
    facts = records.RunFacts(
        queue=QUEUES[i % len(QUEUES)],
        enqueued_at=time.time() - 1,
        attempt=1,
        started_at=time.time() - 0.5,
        worker="bench-worker",
    )
    rec = records.finished(f"r{i:07d}", facts, b"42")
    return Outgoing(
        layout.kv_subject(layout.results_bucket, rec.job_id), records.encode_result(rec), None
    )


async def fill(client: Client, layout: Layout, failed: int, finished: int) -> None:
    """Publish ``failed`` failed entries and ``finished`` result records, in bulk."""
    for make, count in ((failed_entry, failed), (finished_record, finished)):
        for start in range(0, count, CHUNK):
            batch = [make(layout, i) for i in range(start, min(count, start + CHUNK))]
            await client.publisher.publish_many(batch)


def get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as reply:
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{url}: HTTP {reply.status}")
    return time.perf_counter() - started


def start_dashboard(url: str, namespace: str, port: int) -> subprocess.Popen[str]:
    """The real ``naq dashboard`` process, returned once it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAQ_")}
    proc = subprocess.Popen(
        [NAQ, "dashboard", "-u", url, "-n", namespace, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "Uvicorn running on" in line:  # keep reading, so its pipe never fills
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc
    raise RuntimeError("naq dashboard ended before it listened")


async def raw_page(client: Client, layout: Layout) -> float:
    """The raw nats-py floor of a page: the newest 50 failed entries, each read by its
    sequence with ``js.get_msg`` (what any reader of the stream pays)."""
    started = time.perf_counter()
    last = (await client.js.stream_info(layout.failed_stream)).state.last_seq
    for seq in range(last, max(last - 50, 0), -1):
        await client.js.get_msg(layout.failed_stream, seq)
    return time.perf_counter() - started


PAGES = {
    "overview": "/",
    "jobs waiting": "/jobs",
    "jobs finished": "/jobs?state=finished",
    "jobs finished, deep page": "/jobs?state=finished&cursor=150000",
    "jobs finished, one queue": "/jobs?state=finished&queue=billing",
    "failed": "/failed",
    "failed, one queue": "/failed?queue=reports",
    "failed, rare function": "/failed?function=tasks:rare",
    "failed, deep page": "/failed?before=20000",
    "scheduled": "/scheduled",
    "workers": "/workers",
    "job detail (finished)": "/jobs/r0000007",
    "job detail (failed entry)": "/jobs/f0000009?seq=10",
}


async def one_run(server: EmbeddedServer, args: argparse.Namespace) -> dict[str, float]:
    """Fill a fresh namespace, then each page's median time and the raw floor's."""
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    client, layout = await connected(server.url, namespace)
    started = time.perf_counter()
    await fill(client, layout, args.failed, args.finished)
    filled = time.perf_counter() - started
    emit(f"filled {args.failed:,} failed and {args.finished:,} finished in {filled:.1f}s")
    times = {"raw": statistics.median([await raw_page(client, layout) for _ in range(args.gets)])}
    await close_connections()
    port = free_port()
    proc = await asyncio.to_thread(start_dashboard, server.url, namespace, port)
    try:
        base = f"http://127.0.0.1:{port}"
        for name, path in PAGES.items():
            await asyncio.to_thread(get, base + path)  # the first read warms up
            samples = [await asyncio.to_thread(get, base + path) for _ in range(args.gets)]
            times[name] = statistics.median(samples)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
    return times


async def run(server: EmbeddedServer, version: str, args: argparse.Namespace) -> dict[str, Any]:
    runs = [await one_run(server, args) for _ in range(args.runs)]
    times = median_of(runs)
    ratios = median_of([{k: run[k] / run["raw"] for k in run} for run in runs])
    emit("")
    emit(
        f"nats-server {version}; {args.failed:,} failed, {args.finished:,} finished; "
        f"medians of {args.runs} runs of {args.gets} GETs"
    )
    emit(f"{'page':<28} {'median (ms)':>12} {'x raw':>7}")
    for name in PAGES:
        emit(f"{name:<28} {times[name] * 1000:>12.1f} {ratios[name]:>7.1f}")
    emit(f"{'raw nats-py: 50 get_msg':<28} {times['raw'] * 1000:>12.1f} {1:>7.1f}")
    worst = max(times[name] for name in PAGES)
    emit(f"slowest page: {worst * 1000:.0f} ms ({'under' if worst < 1 else 'OVER'} 1 s)")
    return {
        "server": version,
        "failed": args.failed,
        "finished": args.finished,
        "runs": runs,
        "medians": times,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failed", type=int, default=100_000)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--gets", type=int, default=5, help="GETs per page (median)")
    parser.add_argument("--runs", type=int, default=3, help="fresh namespaces (median)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = on_embedded_server(lambda server, version: run(server, version, args))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
