"""naq's process executor against huey's process workers, on this machine in one sitting.

Why: issue 13 asks the process executor at concurrency 2 to process no-op jobs at
least as fast as huey with 2 worker processes. Both depend on the machine and on
whatever else runs on it, so both are measured in the same run, each next to the
raw nats-py fetch + ack limit of that run. huey and Redis are not naq's
dependencies: they come from the ``peers`` extra (``make bench-peers``) and a
``redis-server`` binary, and the script says what is missing if they are not there.

    python bench/peers.py [--jobs N] [--concurrency C] [--runs K] [--json PATH]

Each run, with a fresh namespace and an emptied Redis:

* raw: ``executors.raw_fetch_ack``, N messages of a no-op job's size;
* naq: ``executors.jobs_per_second``, N ``noop_sync`` jobs enqueued with
  ``result_ttl=0``, then a real ``Supervisor`` with the process executor at
  ``--concurrency``, timed from ready until every job is settled;
* huey: N ``hueyjobs.noop_counted`` tasks enqueued (``RedisHuey``, ``results=False``),
  then the real ``huey_consumer -k process -w C -q`` started as a subprocess, timed
  from its first finished task to its last (each task writes one byte to a FIFO this
  script reads); the rate from the consumer's spawn is shown too.

One nats-server (embedded) and one redis-server (free port, temporary directory, no
persistence) serve every run; each is idle while the other side is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import importlib.util
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchjobs import noop_sync
from executors import jobs_per_second, raw_fetch_ack
from harness import emit, median_of, on_embedded_server, write_json
from throughput import delete_streams

from naq.queue import Queue
from naq.settings import Settings
from naq.transport.connect import connect
from naq.transport.server import EmbeddedServer, free_port

BENCH = Path(__file__).resolve().parent
TARGET = 1.0
"""naq process -c 2 over huey with 2 processes (issue 13)."""
PHASE_TIMEOUT = 300.0
"""Seconds any one phase may take before the benchmark gives up on it."""
START_TIMEOUT = 30.0
"""Seconds redis-server may take to answer, and huey's consumer to stop."""
HUEY_FLAGS = ("-k", "process", "-q")
"""Process workers; ``-q``: warnings only, as huey logs two INFO lines per task by
default and naq's supervisor logs none. The polling flags (``-d``, ``-b``, ``-m``)
are left at their defaults: ``RedisHuey`` blocks in ``BRPOP`` (its ``blocking``
storage), so huey's workers never sleep between polls."""


def missing_peers() -> list[str]:
    """What this machine lacks to run the comparison, each with how to install it."""
    missing = []
    if any(importlib.util.find_spec(name) is None for name in ("huey", "redis")):
        missing.append(
            "huey and redis (the client): `make bench-peers`, or pip install -e '.[peers]'"
        )
    if shutil.which("redis-server") is None:
        missing.append("redis-server: on Debian, `apt-get install redis-server`")
    return missing


# -- redis-server ------------------------------------------------------------------------
def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True)
    return next((w[2:] for w in out.stdout.split() if w.startswith("v=")), out.stdout.strip())


@contextmanager
def redis_server() -> Iterator[int]:
    """A redis-server on a free 127.0.0.1 port with a temporary directory and no
    persistence (no RDB snapshots, no AOF), stopped afterwards; yields its port."""
    import redis

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="naq-peers-redis-") as home:
        log = Path(home) / "redis.log"
        proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", home),
                *("--save", "", "--appendonly", "no", "--logfile", str(log)),
            ],
            stdin=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            deadline = time.monotonic() + START_TIMEOUT
            while True:  # redis-server gives no readiness signal but answering
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not start: {log.read_text()[-2000:]}"
                        ) from None
                    time.sleep(0.05)
            client.close()
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- huey --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HueyRun:
    rate: float
    """Jobs/s from the first finished task to the last."""
    from_spawn: float
    """Jobs/s from the consumer's spawn to the last finished task."""


def huey_rate(n: int, workers: int) -> HueyRun:
    """Enqueue ``n`` no-op tasks, then run huey's consumer until all have run."""
    hueyjobs = importlib.import_module("hueyjobs")
    storage = hueyjobs.huey.storage
    storage.flush_all()
    for _ in range(n):
        hueyjobs.noop_counted()
    if (pending := storage.queue_size()) != n:
        raise RuntimeError(f"huey: {pending} of {n} tasks enqueued")
    with tempfile.TemporaryDirectory(prefix="naq-peers-huey-") as home:
        fifo = Path(home) / "done"
        os.mkfifo(fifo)
        # Read-write: the open does not wait for a writer, and reads never see EOF.
        done = os.open(fifo, os.O_RDWR)
        env = dict(os.environ)
        env[hueyjobs.FIFO_ENV] = str(fifo)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
        with (Path(home) / "consumer.log").open("w+") as log:
            spawned = time.perf_counter()
            consumer = subprocess.Popen(
                [
                    *(sys.executable, "-m", "huey.bin.huey_consumer", "hueyjobs.huey"),
                    *(*HUEY_FLAGS, "-w", str(workers)),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                first, before_first, last = count_done(done, n, consumer, log)
            finally:
                stop_consumer(consumer)
                os.close(done)
        if (left := storage.queue_size()) != 0:
            raise RuntimeError(f"huey: {left} tasks still queued after {n} ran")
    if before_first == n:
        raise RuntimeError(f"huey ran all {n} tasks before the first count: too few to time")
    return HueyRun(rate=(n - before_first) / (last - first), from_spawn=n / (last - spawned))


def count_done(
    done: int, n: int, consumer: subprocess.Popen[bytes], log: Any
) -> tuple[float, int, float]:
    """Read the FIFO until ``n`` tasks have finished: (time of the first read, tasks
    already finished before it, time of the read that made ``n``)."""
    count, first, before_first = 0, 0.0, 0
    deadline = time.monotonic() + PHASE_TIMEOUT
    while count < n:
        ready, _, _ = select.select([done], [], [], 1.0)
        if ready:
            got = len(os.read(done, 65536))
            now = time.perf_counter()
            if count == 0:
                first, before_first = now, got
            count += got
        elif consumer.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError(
                f"huey ran {count} of {n} tasks; consumer log:\n{log.read()[-3000:]}"
            )
    if count != n:
        raise RuntimeError(f"huey ran {count} tasks for {n} enqueued")
    return first, before_first, now


def stop_consumer(consumer: subprocess.Popen[bytes]) -> None:
    """SIGINT, huey's graceful stop; its whole process group if it does not stop."""
    if consumer.poll() is None:
        consumer.send_signal(signal.SIGINT)
    try:
        consumer.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(consumer.pid, signal.SIGKILL)
        consumer.wait()


# -- one run -----------------------------------------------------------------------------
async def one_run(url: str, namespace: str, n: int, concurrency: int) -> dict[str, float]:
    settings = Settings(nats_url=url, namespace=namespace)
    nc = await connect(settings, name="naq-bench")
    js = nc.jetstream()
    queue = Queue(settings=settings)
    try:
        await queue.purge()  # connects and declares, so neither is timed
        figures = {"raw.fetch_ack": await raw_fetch_ack(js, queue, n)}
        figures["naq.process"] = await jobs_per_second(
            queue, js, "process", concurrency, noop_sync, (), n
        )
    finally:
        await queue.close()
        await delete_streams(js, namespace)
        await nc.close()
    huey = await asyncio.to_thread(huey_rate, n, concurrency)
    figures["huey.process"] = huey.rate
    figures["huey.process.from_spawn"] = huey.from_spawn
    return figures


def ratios(f: dict[str, float]) -> dict[str, float]:
    return {
        "naq.process/raw": f["naq.process"] / f["raw.fetch_ack"],
        "huey.process/raw": f["huey.process"] / f["raw.fetch_ack"],
        "naq/huey": f["naq.process"] / f["huey.process"],
    }


def table(title: str, f: dict[str, float], r: dict[str, float], c: int) -> list[str]:
    verdict = "PASS" if r["naq/huey"] >= TARGET else "FAIL"
    huey = f"huey -k process -w {c}"
    return [
        title,
        "",
        f"  {'variant':<40}{'jobs/s':>10}{'x raw':>8}",
        f"  {'raw nats-py fetch + ack':<40}{f['raw.fetch_ack']:>10,.0f}{1:>8.2f}",
        f"  {huey:<40}{f['huey.process']:>10,.0f}{r['huey.process/raw']:>8.2f}",
        f"  {'  (from the consumer spawn)':<40}{f['huey.process.from_spawn']:>10,.0f}",
        f"  {f'naq process -c {c}, result_ttl=0':<40}{f['naq.process']:>10,.0f}"
        f"{r['naq.process/raw']:>8.2f}",
        f"  naq / huey {r['naq/huey']:.2f}   target >= {TARGET:.2f}  {verdict}",
    ]


async def bench(url: str, args: argparse.Namespace, emit: Callable[[str], None]) -> dict[str, Any]:
    results: list[dict[str, float]] = []
    for index in range(args.runs):
        started = time.monotonic()
        namespace = f"benchp{index + 1}{uuid.uuid4().hex[:8]}"
        figures = await one_run(url, namespace, args.jobs, args.concurrency)
        results.append(figures)
        emit("")
        title = f"run {index + 1}/{args.runs} ({time.monotonic() - started:.0f} s)"
        for line in table(title, figures, ratios(figures), args.concurrency):
            emit(line)
    median = median_of(results)
    median_ratio = median_of([ratios(r) for r in results])
    if args.runs > 1:
        emit("")
        for line in table(f"median of {args.runs} runs", median, median_ratio, args.concurrency):
            emit(line)
    value = median_ratio["naq/huey"]
    return {
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "huey_flags": [*HUEY_FLAGS, "-w", str(args.concurrency)],
        "runs": [{"rates": r, "ratios": ratios(r)} for r in results],
        "median": {"rates": median, "ratios": median_ratio},
        "targets": {"naq/huey": {"target": TARGET, "value": value, "pass": value >= TARGET}},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per figure")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="naq's process slots and huey's worker processes"
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat everything; medians shown")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    for name in ("jobs", "concurrency", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_peers():
        print(
            "bench/peers.py compares naq with huey on Redis; this machine lacks:", file=sys.stderr
        )
        for what in missing:
            print(f"  - {what}", file=sys.stderr)
        return 2
    with redis_server() as port:
        os.environ["BENCH_PEERS_REDIS_PORT"] = str(
            port
        )  # read by hueyjobs, here and in huey's consumer
        huey_version = importlib.metadata.version("huey")

        async def run(server: EmbeddedServer, version: str) -> dict[str, Any]:
            emit(
                f"naq against huey {huey_version}: {args.runs} run(s), {args.jobs:,} no-op jobs, "
                f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, nats-server {version}, "
                f"redis-server {redis_version()}"
            )
            report = await bench(server.url, args, emit)
            report.update(
                nats_server=version,
                redis_server=redis_version(),
                huey=huey_version,
                cpus=os.cpu_count(),
                python=sys.version.split()[0],
            )
            return report

        write_json(args.json, on_embedded_server(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
