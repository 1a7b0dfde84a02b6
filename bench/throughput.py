"""naq's throughput next to the raw nats-py limits, measured on one embedded server.

Why ratios: absolute jobs/s depend on the machine and on what else it is doing, but
the ratio between naq and the best the same client library reaches on the same
server, with messages of the same size on streams of the same configuration, is
what naq itself costs. The targets are ratios for that reason, and every raw figure
is measured in the same run as the naq figure it is compared with.

    python bench/throughput.py [--jobs N] [--concurrency C] [--runs K] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchjobs import noop
from harness import emit, median_of, on_embedded_server, write_json
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from naq.executors.registry import load_executor
from naq.queue import Queue
from naq.serializers import get_serializer
from naq.settings import Settings
from naq.state.record import ResultRecord, encode_result
from naq.supervisor import Supervisor
from naq.transport.connect import connect
from naq.transport.declare import declare, ensure_consumer
from naq.transport.names import Layout, kv_stream
from naq.transport.server import EmbeddedServer

QUEUE = "default"
FETCH_BATCH = 256
RAW_RESULT_TTL = "3600s"
PHASE_TIMEOUT = 300.0
"""Seconds any one phase may take before the benchmark gives up on it."""


@dataclass(frozen=True, slots=True)
class Comparison:
    key: str
    """The ratio's name: one naq figure may be held against two raw limits."""
    label: str
    naq: str
    raw: str
    target: float


COMPARISONS = (
    Comparison("enqueue", "enqueue", "enqueue", "raw_publish_msg_id", 0.6),
    Comparison("process", "process, no result", "process", "raw_fetch_ack", 0.35),
    Comparison(
        "process_with_results",
        "process, with result",
        "process_with_results",
        "raw_fetch_put_ack",
        0.8,
    ),
    Comparison(
        "process_with_results_vs_fetch_ack",
        "with result / fetch+ack",
        "process_with_results",
        "raw_fetch_ack",
        0.5,
    ),
)
"""The with-result figure is held against both raw limits: the one that stores a
result as naq does (fetch + KV put + ack), and plain fetch + ack, which stores none."""

FIGURES: dict[str, str] = {
    "enqueue": "naq enqueue_many, result_ttl=0",
    "enqueue_with_results": "naq enqueue_many, default result_ttl",
    "process": "naq supervisor, no result",
    "process_with_results": "naq supervisor, with result",
    "raw_publish_msg_id": "raw publish_async + Nats-Msg-Id",
    "raw_publish": "raw publish_async, no msg-id",
    "raw_fetch_ack": f"raw fetch({FETCH_BATCH}) + ack",
    "raw_fetch_put_ack": f"raw fetch({FETCH_BATCH}) + KV put + ack",
}
"""Every rate a run measures, in per second, in the order it is printed."""
CPU_FIGURES: dict[str, str] = {
    "process_cpu_us": "supervisor CPU per job, no result",
    "process_with_results_cpu_us": "supervisor CPU per job, with result",
}
"""CPU microseconds of the supervisor's process per job (:class:`Processed`)."""


@dataclass(frozen=True, slots=True)
class Sizes:
    job: int
    """Encoded job message of ``noop()`` with ``result_ttl=0``: the raw payload size."""
    job_default_ttl: int
    result: int
    """Encoded result record of ``noop()``: the raw KV value size."""


RAW_ID = "r" * 32
"""Raw messages go to one subject as long as a job's, which has the job id in it."""


# -- phases ------------------------------------------------------------------------------
async def naq_enqueue(queue: Queue, n: int, chunk: int, result_ttl: int | None) -> float:
    """Seconds to enqueue ``n`` no-op jobs, encoding included: that is what a producer pays."""
    options: dict[str, Any] = {} if result_ttl is None else {"result_ttl": result_ttl}
    calls = [(noop, ())] * n
    started = time.perf_counter()
    for first in range(0, n, chunk):
        await queue.enqueue_many(calls[first : first + chunk], **options)
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Processed:
    seconds: float
    """From the supervisor's first pull until its stream holds no message."""
    cpu: float
    """CPU seconds of this process (the supervisor; the server is another process)
    meanwhile: what naq costs per job, far less disturbed than a rate by whatever
    else the machine runs."""


async def naq_process(
    settings: Settings, concurrency: int, n: int, js: JetStreamContext
) -> Processed:
    """Run the supervisor until ``n`` jobs are settled and its stream is empty."""
    settings = settings.replace(executor="asyncio", concurrency=concurrency)
    sup = Supervisor(settings, load_executor("asyncio")(concurrency, settings))
    task = asyncio.create_task(sup.run())
    ready = asyncio.create_task(sup.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
        raise RuntimeError("the supervisor exited before it was ready")
    started, cpu = time.perf_counter(), time.process_time()
    try:
        finished = asyncio.create_task(sup.wait_until(lambda c: c.processed + c.failed >= n))
        await asyncio.wait(
            [finished, task], timeout=PHASE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if not finished.done():
            finished.cancel()
            raise RuntimeError(
                f"the supervisor settled {sup.counters.processed + sup.counters.failed} "
                f"of {n} jobs in {PHASE_TIMEOUT:.0f}s"
            )
        await wait_empty(js, Layout(settings.namespace).stream)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        sup.request_stop()
        await task
    if sup.counters.failed:
        raise RuntimeError(f"{sup.counters.failed} of {n} no-op jobs failed")
    return Processed(elapsed, cpu)


async def raw_publish(
    js: JetStreamContext, subject: str, payload: bytes, n: int, msg_ids: str | None
) -> float:
    """Seconds for ``n`` pipelined publishes; ``msg_ids`` prefixes one unique id each."""
    started = time.perf_counter()
    if msg_ids is None:
        for _ in range(n):
            await js.publish_async(subject, payload)
    else:
        width = max(1, 32 - len(msg_ids))  # as long as naq's uuid4().hex job ids
        for i in range(n):
            await js.publish_async(
                subject, payload, headers={"Nats-Msg-Id": f"{msg_ids}{i:0{width}d}"}
            )
    await js.publish_async_completed()
    return time.perf_counter() - started


async def raw_consume(
    js: JetStreamContext, layout: Layout, settings: Settings, n: int, result: bytes | None
) -> float:
    """Seconds to fetch and ack ``n`` messages until the stream is empty.

    With ``result``, each message first gets a KV put carrying a per-message TTL, the
    whole batch's puts in flight at once and all acknowledged before the batch's acks,
    as a worker that keeps results must: a crash in between re-runs, never loses.
    """
    await ensure_consumer(js, layout, QUEUE, settings)
    psub = await js.pull_subscribe_bind(durable=layout.consumer(QUEUE), stream=layout.stream)
    prefix = f"{layout.kv_subject(layout.results_bucket, '')}r"
    headers = {"Nats-TTL": RAW_RESULT_TTL}
    started = time.perf_counter()
    got = 0
    while got < n:
        msgs = await psub.fetch(batch=FETCH_BATCH, timeout=5)
        if result is not None:
            puts = [
                await js.publish_async(f"{prefix}{got + j:031d}", result, headers=headers)
                for j in range(len(msgs))
            ]
            await asyncio.gather(*puts)
        for m in msgs:
            await m.ack()
        got += len(msgs)
    await wait_empty(js, layout.stream)
    elapsed = time.perf_counter() - started
    await psub.unsubscribe()
    return elapsed


async def wait_empty(js: JetStreamContext, stream: str) -> None:
    """Acks are fire-and-forget: a job is only gone once the server has applied its ack."""
    deadline = time.monotonic() + PHASE_TIMEOUT
    while (await js.stream_info(stream)).state.messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"stream {stream} still holds messages after {PHASE_TIMEOUT:.0f}s")
        await asyncio.sleep(0.001)


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def expect(js: JetStreamContext, stream: str, count: int, what: str) -> None:
    """A figure only counts if the work really happened."""
    found = await stream_messages(js, stream)
    if found != count:
        raise RuntimeError(f"{what}: stream {stream} holds {found} messages, expected {count}")


# -- one run -----------------------------------------------------------------------------
def measure_sizes(settings: Settings) -> Sizes:
    queue = Queue(settings=settings)
    _, with_ttl0 = queue.prepare(noop, result_ttl=0)
    job, default = queue.prepare(noop)
    record = ResultRecord(
        job.job_id,
        "finished",
        "pickle",
        time.time(),
        payload=get_serializer("pickle").dumps_result(None),
    )
    return Sizes(len(with_ttl0.payload), len(default.payload), len(encode_result(record)))


async def one_run(
    url: str, namespace: str, args: argparse.Namespace, sizes: Sizes
) -> dict[str, float]:
    n: int = args.jobs
    settings = Settings(
        nats_url=url,
        namespace=namespace,
        replicas=args.replicas,
        middleware=args.middleware,
        signing_key=secrets.token_urlsafe(32) if args.sign else None,
    )
    rates: dict[str, float] = {}
    nc: NATS = await connect(settings, name="naq-bench")
    js = nc.jetstream()
    layout = Layout(namespace)
    try:
        queue = Queue(settings=settings)
        try:
            await queue.purge()  # connects and declares, so neither is timed
            rates["enqueue"] = n / await naq_enqueue(queue, n, args.chunk, 0)
            await expect(js, layout.stream, n, "enqueue")
            bare = await naq_process(settings, args.concurrency, n, js)
            rates["process"] = n / bare.seconds
            rates["process_cpu_us"] = bare.cpu / n * 1e6
            await expect(js, kv_stream(layout.results_bucket), 0, "result_ttl=0")
            rates["enqueue_with_results"] = n / await naq_enqueue(queue, n, args.chunk, None)
            await expect(js, layout.stream, n, "enqueue")
            stored = await naq_process(settings, args.concurrency, n, js)
            rates["process_with_results"] = n / stored.seconds
            rates["process_with_results_cpu_us"] = stored.cpu / n * 1e6
            await expect(js, kv_stream(layout.results_bucket), n, "results")
        finally:
            await queue.close()

        payload = b"x" * sizes.job
        result = b"r" * sizes.result
        keep = Layout(f"{namespace}keep")  # publish with ids, then fetch + put + ack
        plain = Layout(f"{namespace}plain")  # publish without ids, then fetch + ack
        for raw in (keep, plain):
            await declare(js, raw, settings)
        rates["raw_publish_msg_id"] = n / await raw_publish(
            js, keep.job_subject(QUEUE, RAW_ID), payload, n, f"{namespace}-"
        )
        await expect(js, keep.stream, n, "raw publish with ids")
        rates["raw_publish"] = n / await raw_publish(
            js, plain.job_subject(QUEUE, RAW_ID), payload, n, None
        )
        await expect(js, plain.stream, n, "raw publish")
        rates["raw_fetch_ack"] = n / await raw_consume(js, plain, settings, n, None)
        rates["raw_fetch_put_ack"] = n / await raw_consume(js, keep, settings, n, result)
        await expect(js, f"KV_{keep.results_bucket}", n, "raw KV puts")
    finally:
        await delete_streams(js, namespace)
        await nc.close()
    return rates


async def delete_streams(js: JetStreamContext, namespace: str) -> None:
    """A run's streams go with it, so a later run meets a server as light as the first."""
    mark = namespace.upper()
    for info in await js.streams_info():
        name = info.config.name
        if name is not None and mark in name.upper():
            await js.delete_stream(name)


# -- report ------------------------------------------------------------------------------
def ratios(rates: dict[str, float]) -> dict[str, float]:
    return {c.key: rates[c.naq] / rates[c.raw] for c in COMPARISONS}


def table(title: str, rates: dict[str, float], ratio: dict[str, float]) -> list[str]:
    lines = [
        f"{title:<24}{'naq/s':>10}{'raw/s':>10}{'ratio':>8}{'target':>10}  result",
    ]
    for c in COMPARISONS:
        verdict = "PASS" if ratio[c.key] >= c.target else "FAIL"
        lines.append(
            f"{c.label:<24}{rates[c.naq]:>10,.0f}{rates[c.raw]:>10,.0f}"
            f"{ratio[c.key]:>8.2f}{'>= ' + format(c.target, '.2f'):>10}  {verdict}"
        )
    lines.append("  all figures:")
    lines += [f"    {label:<42}{rates[key]:>10,.0f}/s" for key, label in FIGURES.items()]
    lines += [f"    {label:<42}{rates[key]:>10,.1f} us" for key, label in CPU_FIGURES.items()]
    return lines


async def bench(url: str, args: argparse.Namespace, emit: Callable[[str], None]) -> dict[str, Any]:
    sizes = measure_sizes(Settings(nats_url=url, namespace="bench"))
    emit(
        f"job message {sizes.job} B (result_ttl=0; {sizes.job_default_ttl} B with the default), "
        f"result value {sizes.result} B; raw messages use the same sizes"
    )
    runs: list[dict[str, float]] = []
    for index in range(args.runs):
        namespace = f"bench{index + 1}{uuid.uuid4().hex[:8]}"
        rates = await one_run(url, namespace, args, sizes)
        runs.append(rates)
        emit("")
        for line in table(f"run {index + 1}/{args.runs}", rates, ratios(rates)):
            emit(line)
    median = median_of(runs)
    median_ratio = median_of([ratios(r) for r in runs])
    if len(runs) > 1:
        emit("")
        for line in table(f"median of {len(runs)} runs", median, median_ratio):
            emit(line)
    return {
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "chunk": args.chunk,
        "middleware": args.middleware,
        "signed": args.sign,
        "fetch_batch": FETCH_BATCH,
        "sizes": asdict(sizes),
        "runs": [{"rates": r, "ratios": ratios(r)} for r in runs],
        "median": {"rates": median, "ratios": median_ratio},
        "targets": {
            c.key: {
                "label": c.label,
                "naq": c.naq,
                "raw": c.raw,
                "target": c.target,
                "pass": median_ratio[c.key] >= c.target,
            }
            for c in COMPARISONS
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs (raw messages) per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="supervisor concurrency")
    parser.add_argument("--runs", type=int, default=1, help="repeat everything; medians shown")
    parser.add_argument("--chunk", type=int, default=5_000, help="jobs per enqueue_many call")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--middleware",
        default="",
        help="middleware on the producer and the supervisor (module:Class), to measure "
        "what it costs; naq.middleware:Middleware is the seam itself, every hook a no-op",
    )
    parser.add_argument(
        "--sign",
        action="store_true",
        help="producer and supervisor sign jobs and results with a key (NAQ_SIGNING_KEY)",
    )
    parser.set_defaults(replicas=1)  # bench/durability.py sets 3 for its cluster
    args = parser.parse_args(argv)
    for name in ("jobs", "concurrency", "runs", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    async def run(server: EmbeddedServer, version: str) -> dict[str, Any]:
        emit(
            f"naq throughput: {args.jobs:,} jobs per phase, concurrency {args.concurrency}, "
            f"{args.runs} run(s), nats-server {version} at {server.url}"
            + (f", middleware {args.middleware}" if args.middleware else "")
            + (", jobs and results signed" if args.sign else "")
        )
        report = await bench(server.url, args, emit)
        report["nats_server"] = version
        return report

    write_json(args.json, on_embedded_server(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
