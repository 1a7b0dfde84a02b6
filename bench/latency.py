"""naq's latency under open-loop load, next to raw nats-py's on the same server, same rates.

Why open loop: a producer that waits for each result before sending the next never
lets a queue form, so it hides exactly what a latency figure is for. Here jobs are
enqueued on a fixed schedule at a target rate whatever happens to them, at 10%, 50%
and 90% of the capacity measured first in the same run, so queueing shows as load
rises. Each figure is set next to the same rate through plain nats-py (a JetStream
publish, a pull consumer receiving it), measured in the same run on the same server.

    python bench/latency.py [--runs K] [--seconds S] [--json PATH] [--url URL]

Every run, for each executor (asyncio, process):

1. capacity: ``--capacity-jobs`` jobs are enqueued, then a supervisor starts; its rate
   from its first result to its last is the executor's capacity for this job;
2. with that supervisor still running, each load: jobs enqueued one schedule slot at a
   time (``enqueue_many`` of the jobs due at each tick, never waiting for results)
   for ``--seconds`` (at least ``--min-jobs`` jobs), until every result is in;
3. the raw reference at each of the same rates: messages of the job's size published
   on the same schedule (``publish_async``, a ``Nats-Msg-Id`` each, as naq's enqueue
   sends) to a stream declared by naq's own ``declare``, received by a pull consumer
   in another process that holds a pull request open and acks each message.

The supervisor and the raw consumer run in processes of their own (this script with
``--role``), as a worker does in production: the producer's own work never delays
theirs on a loop. Times are ``time.time()`` on one machine, so clocks agree:

* enqueue-to-start: the job (``benchjobs.stamp``) returns ``time.time()`` as it starts
  (in the child, for the process executor) minus the ``enqueued_at`` of its result
  record, which is the time the producer encoded it;
* enqueue-to-result: the time nats-server stored the result record (read back from
  the results bucket's stream after the phase: the moment a waiting caller could have
  it, with nothing listening during the phase to take CPU) minus ``enqueued_at``;
* raw publish-to-receive: the consumer's clock on receipt minus the publish time
  written into the payload.

The first ``--warmup`` seconds of each phase are offered but not counted: the step
from idle to load is not the steady state a percentile at a load describes.
Percentiles are nearest-rank over every other job of a phase; p99.9 of fewer than 1,000
samples is the largest few, so the count is shown. How far the producer lagged its
schedule is shown too: latency counts from ``enqueued_at``, so a producer that fell
behind would offer less than the target rate, not longer latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from benchjobs import stamp, stamp_sync
from harness import Child, emit, on_embedded_server, role_supervisor, say_ready, write_json
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from throughput import delete_streams

from naq.queue import Queue
from naq.serializers import get_serializer
from naq.settings import Settings
from naq.state.record import ResultRecord, decode_result
from naq.transport.connect import connect
from naq.transport.declare import declare, ensure_consumer
from naq.transport.names import Layout, kv_stream
from naq.transport.pool import new_event_loop
from naq.transport.server import EmbeddedServer
from naq.wire import BadMessage

SCRIPT = Path(__file__).resolve()
QUEUE = "default"
EXECUTORS = ("asyncio", "process")
LOADS = (0.1, 0.5, 0.9)
PERCENTILES = (("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9))
TARGETS_MS = {"p99": 5.0, "p99.9": 10.0}
"""Enqueue-to-start at half load, for every executor (issue 13)."""
TARGET_LOAD = 0.5
CHUNK = 5_000
"""Jobs per ``enqueue_many`` call when the capacity phase fills the queue."""
RAW_BATCH = 256
RAW_EXPIRES = 1.0
"""The raw consumer's pull request: at most this many messages, held this many seconds."""
RAW_ID = "r" * 32
POLL = 0.02
"""Seconds between looks at the results stream while a phase drains (not timed)."""
PHASE_TIMEOUT = 300.0
"""Seconds any one phase may take before the benchmark gives up on it."""


# -- statistics --------------------------------------------------------------------------
def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest sample with at least ``p`` percent of all at or below it.

    No interpolation, so every figure is a latency some job really had.
    """
    if not ordered:
        raise ValueError("no samples")
    rank = math.ceil(round(p / 100.0 * len(ordered), 9))  # 99.9% of 1000 is 999.0000000000001
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99, p99.9 and max in milliseconds, and the number of samples."""
    ordered = sorted(seconds)
    out = {name: percentile(ordered, p) * 1e3 for name, p in PERCENTILES}
    out["max"] = ordered[-1] * 1e3
    out["n"] = float(len(ordered))
    return out


def median_phases(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each phase's numbers as the median over runs (phases line up by index)."""

    def median(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            return {key: median([v[key] for v in values]) for key in first}
        if isinstance(first, str):
            return first
        return statistics.median(values)

    return [median(list(phase)) for phase in zip(*runs, strict=True)]


def verdicts(phases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's targets: enqueue-to-start p99 and p99.9 at half load, per executor."""
    checks: dict[str, dict[str, Any]] = {}
    for phase in phases:
        if phase["load"] != TARGET_LOAD:
            continue
        for name, limit in TARGETS_MS.items():
            value = phase["start"][name]
            checks[f"{phase['executor']}.start.{name}"] = {
                "target_ms": limit,
                "value_ms": value,
                "pass": value < limit,
            }
    return checks


# -- the open-loop schedule --------------------------------------------------------------
async def offer(
    rate: float, n: int, send: Callable[[int, int], Coroutine[Any, Any, None]]
) -> float:
    """Start ``send(first, count)`` for messages as they fall due, ``rate`` a second.

    Message ``i`` is due at ``start + i / rate``; whatever is due when the loop wakes
    goes at once, each tick's ``send`` running as its own task, so a slow
    acknowledgement never holds the schedule back. The loop sleeps at least ``TICK``:
    uvloop's timers count whole milliseconds, so a shorter sleep returned at once and
    the producer spun (100,000 wake-ups a second at 7,000 jobs a second, most of a
    core taken from the supervisor and the server it measures). Returns ``start`` (wall clock)
    after every ``send`` has finished; a failed ``send`` fails the phase.
    """
    start = time.time()
    sent = 0
    tasks: list[asyncio.Task[None]] = []
    while sent < n:
        due = min(n, int((time.time() - start) * rate) + 1)
        if due > sent:
            tasks.append(asyncio.create_task(send(sent, due - sent)))
            sent = due
        if sent < n:
            await asyncio.sleep(max(TICK, start + sent / rate - time.time()))
    await asyncio.gather(*tasks)
    return start


TICK = 0.001
"""The producer's shortest sleep: one of uvloop's timer steps."""


def phase_size(rate: float, seconds: float, min_jobs: int) -> int:
    return max(min_jobs, round(rate * seconds))


# -- helper processes --------------------------------------------------------------------
async def role_raw(url: str, namespace: str, count: int) -> int:
    """A raw pull consumer: one pull request held open on the server at a time (the
    next asked for as soon as it ends), each message acked as it arrives. Prints the
    publish-to-receive seconds of ``count`` messages as JSON ``[index, seconds]`` pairs,
    then exits.

    Requests never ask for more than the messages still to come, so none is left open
    when it exits: the next phase's consumer would lose messages to it."""
    settings = Settings(nats_url=url, namespace=namespace)
    nc: NATS = await connect(settings, name="naq-bench-raw")
    layout = Layout(namespace)
    inbox = nc.new_inbox()
    latencies: list[tuple[int, float]] = []
    asked = 0
    delivered = 0
    done = asyncio.Event()
    trouble: list[str] = []

    async def ask() -> None:
        nonlocal asked, delivered
        asked, delivered = min(RAW_BATCH, count - len(latencies)), 0
        if asked > 0:
            request = {"batch": asked, "expires": int(RAW_EXPIRES * 1e9)}
            await nc.publish(layout.pull_subject(QUEUE), json.dumps(request).encode(), inbox)

    async def on_msg(msg: Msg) -> None:
        nonlocal delivered
        received = time.time()
        status = (msg.headers or {}).get("Status")
        if status is None:
            sent, index = msg.data.split(b";", 2)[:2]
            latencies.append((int(index), received - float(sent)))
            await msg.ack()
            delivered += 1
            if len(latencies) >= count:
                done.set()
            if delivered < asked:
                return
        elif status not in ("404", "408"):  # no messages, request expired: ask again
            trouble.append(f"raw pull answered {status} {msg.headers}")
            done.set()
            return
        await ask()  # the request is over: filled, expired, or closed

    try:
        await nc.subscribe(inbox, cb=on_msg)
        await ask()
        say_ready()
        await asyncio.wait_for(done.wait(), PHASE_TIMEOUT)
    finally:
        await nc.close()
    if trouble:
        raise RuntimeError(trouble[0])
    print(json.dumps(latencies[:count]))
    return 0


# -- results as they are stored ----------------------------------------------------------
class Results:
    """A namespace's result records, read back from the results bucket's stream after
    each phase, each with the time the server stored it.

    Why read back rather than listen while the jobs run: a subscription here would
    take CPU that the producer, the supervisor and the server share on a small
    machine, and the stored time is when the result became durable, the moment a
    caller waiting for it could have it.
    """

    def __init__(self, js: JetStreamContext, layout: Layout) -> None:
        self.js = js
        self.stream = kv_stream(layout.results_bucket)
        self.subject = layout.kv_subject(layout.results_bucket, ">")
        self.finished: dict[str, tuple[float, ResultRecord]] = {}
        """Job id: (stored at, record) of its finished record."""
        self._next = 1
        """The first stream sequence not read yet."""

    async def collect(self, ids: set[str]) -> None:
        """Read until every job of ``ids`` has its finished record (a failed one raises)."""
        deadline = time.monotonic() + PHASE_TIMEOUT
        while missing := ids - self.finished.keys():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(missing)} of {len(ids)} results missing")
            last = int((await self.js.stream_info(self.stream)).state.last_seq)
            if last - self._next + 1 >= len(missing):
                await self._read(last)
            else:
                await asyncio.sleep(POLL)

    async def _read(self, last: int) -> None:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._next
        )
        sub = await self.js.subscribe(self.subject, ordered_consumer=True, config=config)
        try:
            while True:
                msg = await sub.next_msg(timeout=PHASE_TIMEOUT)
                meta = msg.metadata
                if msg.data:  # not a delete or purge marker
                    self._keep(msg.data, meta.timestamp.timestamp())
                if meta.sequence.stream >= last:
                    break
        finally:
            await sub.unsubscribe()
        self._next = last + 1

    def _keep(self, data: bytes, stored: float) -> None:
        try:
            record = decode_result(data)
        except BadMessage as exc:
            raise RuntimeError(f"not a result record in {self.stream}: {exc}") from exc
        if record.status == "finished":
            self.finished.setdefault(record.job_id, (stored, record))
        elif record.final:
            raise RuntimeError(f"job {record.job_id} ended {record.status}: {record.error}")


# -- one executor, one run ---------------------------------------------------------------
async def measure_executor(
    nc: NATS, url: str, namespace: str, executor: str, concurrency: int, args: Any
) -> tuple[float, list[dict[str, Any]]]:
    """Capacity, then each load through naq and through raw nats-py at the same rate."""
    func = stamp if executor == "asyncio" else stamp_sync
    js = nc.jetstream()
    settings = Settings(nats_url=url, namespace=namespace)
    results = Results(js, Layout(namespace))
    queue = Queue(settings=settings)
    payload_size = len(queue.prepare(func)[1].payload)  # the raw messages' size
    phases: list[dict[str, Any]] = []
    try:
        await queue.purge()  # connects and declares, so neither is timed
        n = args.capacity_jobs
        ids: set[str] = set()
        for first in range(0, n, CHUNK):
            jobs = await queue.enqueue_many([(func, ())] * min(CHUNK, n - first))
            ids.update(job.job_id for job in jobs)
        sup = await Child.start(
            f"the {executor} supervisor",
            SCRIPT,
            *("--role", "supervisor", "--url", url, "--namespace"),
            *(namespace, "--executor", executor, "--concurrency", str(concurrency)),
        )
        try:
            await results.collect(ids)
            stored = sorted(results.finished[job_id][0] for job_id in ids)
            capacity = (n - 1) / (stored[-1] - stored[0])
            for load in args.loads:
                rate = load * capacity
                phases.append(
                    {
                        "executor": executor,
                        "load": load,
                        **await naq_phase(queue, results, func, rate, args),
                    }
                )
        finally:
            stopped = json.loads(await sup.finish())
        if stopped["failed"]:
            raise RuntimeError(f"{executor}: {stopped['failed']} jobs failed")
    finally:
        await queue.close()
    raw = Layout(f"{namespace}raw")
    await declare(js, raw, settings)
    await ensure_consumer(js, raw, QUEUE, settings)
    for phase in phases:
        rate, total, warm = phase["offered"], phase["n"] + phase["warmup"], phase["warmup"]
        phase["raw"] = await raw_phase(js, url, raw, rate, total, warm, payload_size)
    return capacity, phases


async def naq_phase(
    queue: Queue, results: Results, func: Callable[..., Any], rate: float, args: Any
) -> dict[str, Any]:
    """Jobs enqueued on schedule at ``rate``, until every one's result is stored."""
    n = phase_size(rate, args.seconds, args.min_jobs)
    warm = round(rate * args.warmup)
    enqueued: list[tuple[int, list[str]]] = []

    async def send(first: int, count: int) -> None:
        jobs = await queue.enqueue_many([(func, ())] * count)
        enqueued.append((first, [job.job_id for job in jobs]))

    start = await offer(rate, warm + n, send)
    await results.collect({job_id for _, ids in enqueued for job_id in ids})
    starts: list[float] = []
    stored: list[float] = []
    lags: list[float] = []
    times: list[float] = []
    for first, ids in enqueued:
        for i, job_id in enumerate(ids, first):
            if i < warm:
                continue
            at, record = results.finished[job_id]
            began = get_serializer(record.serializer).loads_result(record.payload)
            starts.append(began - record.enqueued_at)
            stored.append(at - record.enqueued_at)
            lags.append(record.enqueued_at - (start + i / rate))
            times.append(record.enqueued_at)
    return {
        "offered": rate,
        "achieved": (n - 1) / (max(times) - min(times)) if n > 1 else rate,
        "n": n,
        "warmup": warm,
        "start": summarize(starts),
        "result": summarize(stored),
        "lag": summarize(lags),
    }


async def raw_phase(
    js: JetStreamContext, url: str, layout: Layout, rate: float, n: int, warm: int, size: int
) -> dict[str, float]:
    """The same schedule through raw nats-py: publish, and a pull consumer receiving.
    The first ``warm`` messages are sent and received but not counted, as in naq's."""
    consumer = await Child.start(
        "the raw consumer",
        SCRIPT,
        *("--role", "raw", "--url", url, "--namespace"),
        *(layout.namespace, "--count", str(n)),
    )
    subject = layout.job_subject(QUEUE, RAW_ID)
    mark = uuid.uuid4().hex[:12]

    async def send(first: int, count: int) -> None:
        for i in range(first, first + count):
            head = f"{time.time():.6f};{i};".encode()
            await js.publish_async(
                subject,
                head.ljust(size, b"x"),
                headers={"Nats-Msg-Id": f"{mark}{i:020d}"},
            )

    try:
        await offer(rate, n, send)
        await js.publish_async_completed()
    except BaseException:
        await consumer.kill()
        raise
    received: list[list[float]] = json.loads(await consumer.finish())
    return summarize([latency for index, latency in received if index >= warm])


async def one_run(url: str, index: int, args: Any) -> dict[str, Any]:
    settings = Settings(nats_url=url, namespace="bench")
    nc: NATS = await connect(settings, name="naq-bench")
    capacity: dict[str, float] = {}
    phases: list[dict[str, Any]] = []
    try:
        for executor in args.executors:
            namespace = f"lat{index}{executor[0]}{uuid.uuid4().hex[:8]}"
            try:
                capacity[executor], more = await measure_executor(
                    nc,
                    url,
                    namespace,
                    executor,
                    args.concurrency[executor],
                    args,
                )
            finally:
                await delete_streams(nc.jetstream(), namespace)
            phases += more
    finally:
        await nc.close()
    return {"capacity": capacity, "phases": phases}


# -- report ------------------------------------------------------------------------------
def table(title: str, capacity: dict[str, float], phases: list[dict[str, Any]]) -> list[str]:
    names = [name for name, _ in PERCENTILES]
    cols = "".join(f"{name:>8}" for name in names)
    lines = [
        title,
        "  capacity (jobs/s, results kept): "
        + ", ".join(f"{e} {c:,.0f}" for e, c in capacity.items()),
        f"  {'':<9}{'':>5}{'offered':>9}{'got':>8}{'jobs':>7}"
        f"  enqueue-to-start ms     enqueue-to-result ms    raw publish-to-receive  lag",
        f"  {'executor':<9}{'load':>5}{'/s':>9}{'/s':>8}{'':>7}  {cols}{cols}{cols}{'p99 ms':>8}",
    ]
    for p in phases:
        row = f"  {p['executor']:<9}{p['load']:>5.0%}{p['offered']:>9,.0f}{p['achieved']:>8,.0f}"
        row += f"{p['n']:>7,.0f}  "
        for part in ("start", "result", "raw"):
            row += "".join(f"{p[part][name]:>8.2f}" for name in names)
        row += f"{p['lag']['p99']:>8.2f}"
        lines.append(row)
    return lines


async def bench(url: str, args: Any, emit: Callable[[str], None]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for index in range(args.runs):
        started = time.monotonic()
        run = await one_run(url, index + 1, args)
        runs.append(run)
        emit("")
        title = f"run {index + 1}/{args.runs} ({time.monotonic() - started:.0f} s)"
        for line in table(title, run["capacity"], run["phases"]):
            emit(line)
    capacity = {e: statistics.median(run["capacity"][e] for run in runs) for e in args.executors}
    phases = median_phases([run["phases"] for run in runs])
    if len(runs) > 1:
        emit("")
        for line in table(f"median of {len(runs)} runs", capacity, phases):
            emit(line)
    checks = verdicts(phases)
    if checks:
        emit("")
        emit(
            f"targets, enqueue-to-start at {TARGET_LOAD:.0%} load "
            f"({'medians' if len(runs) > 1 else 'one run'}): "
            + ", ".join(
                f"{key} {c['value_ms']:.2f} < {c['target_ms']:.0f} ms "
                f"{'PASS' if c['pass'] else 'FAIL'}"
                for key, c in checks.items()
            )
        )
    return {
        "executors": list(args.executors),
        "concurrency": {e: args.concurrency[e] for e in args.executors},
        "loads": list(args.loads),
        "seconds": args.seconds,
        "min_jobs": args.min_jobs,
        "warmup": args.warmup,
        "capacity_jobs": args.capacity_jobs,
        "raw_pull": {"batch": RAW_BATCH, "expires": RAW_EXPIRES},
        "runs": runs,
        "median": {"capacity": capacity, "phases": phases},
        "targets": checks,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1, help="repeat everything; medians shown")
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="seconds of offered load per phase"
    )
    parser.add_argument("--min-jobs", type=int, default=1_000, help="jobs per phase, at least")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="seconds of load offered first in each phase and not counted",
    )
    parser.add_argument(
        "--capacity-jobs", type=int, default=5_000, help="jobs that measure capacity"
    )
    parser.add_argument(
        "--executors", default=",".join(EXECUTORS), help="comma-separated, of asyncio,process"
    )
    parser.add_argument(
        "--loads",
        default=",".join(str(load) for load in LOADS),
        help="fractions of the measured capacity to offer",
    )
    parser.add_argument("--asyncio-concurrency", type=int, default=64)
    parser.add_argument("--process-concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--url", default=None, help="use this nats-server instead of starting one")
    parser.add_argument("--role", choices=("supervisor", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--executor", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        return args
    args.executors = tuple(e.strip() for e in args.executors.split(",") if e.strip())
    for executor in args.executors:
        if executor not in EXECUTORS:
            parser.error(f"--executors: {executor!r} is not one of {', '.join(EXECUTORS)}")
    try:
        args.loads = tuple(float(x) for x in args.loads.split(","))
    except ValueError:
        parser.error("--loads takes comma-separated fractions, e.g. 0.1,0.5,0.9")
    if not args.executors or not all(0 < load <= 1 for load in args.loads):
        parser.error("--executors must name one; --loads must lie in (0, 1]")
    for name in ("runs", "min_jobs", "asyncio_concurrency", "process_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.capacity_jobs < 2 or not args.seconds > 0 or args.warmup < 0:
        parser.error(
            "--capacity-jobs must be at least 2, --seconds positive, --warmup not negative"
        )
    args.concurrency = {"asyncio": args.asyncio_concurrency, "process": args.process_concurrency}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role is not None:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:  # as a worker runs
            if args.role == "supervisor":
                return runner.run(
                    role_supervisor(
                        Settings(
                            nats_url=args.url,
                            namespace=args.namespace,
                            executor=args.executor,
                            concurrency=args.concurrency,
                        )
                    )
                )
            return runner.run(role_raw(args.url, args.namespace, args.count))

    async def run(url: str, version: str) -> dict[str, Any]:
        emit(
            f"naq latency: {args.runs} run(s), executors "
            + ", ".join(f"{e} -c {args.concurrency[e]}" for e in args.executors)
            + f", loads {', '.join(f'{x:.0%}' for x in args.loads)} of capacity, "
            f"{args.seconds:g} s (at least {args.min_jobs:,} jobs) each, "
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, nats-server {version} "
            f"at {url}"
        )
        report = await bench(url, args, emit)
        report["nats_server"] = version
        report["cpus"] = os.cpu_count()
        report["python"] = sys.version.split()[0]
        return report

    if args.url is not None:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            report = runner.run(run(args.url, "(not started here)"))
    else:

        async def embedded(server: EmbeddedServer, version: str) -> dict[str, Any]:
            return await run(server.url, version)

        report = on_embedded_server(embedded)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
