"""How naq grows with supervisors: 1, 2, 4, 8 supervisors on one queue, on one
nats-server and on a 3-node cluster, next to raw nats-py with as many consumer
processes on the same servers.

Why: users who outgrow one machine run many supervisors against one NATS cluster,
all sharing the queue's one durable pull consumer. What they need to know is whether
adding supervisors adds throughput until the server is the limit, and whether every
supervisor gets its share of the jobs. Each figure is set next to what plain nats-py
reaches with the same number of consumer processes on the same servers in the same
run (a pull request of 256 held open, each message acked as it comes, messages
of the job's size), as a ratio: the ratio is
what naq costs at that scale, whatever the machine.

    python bench/scaleout.py [--counts 1,2,4,8] [--jobs N] [--runs K] [--json PATH]

Every phase (one count of supervisors or raw consumers, on one deployment):

1. the queue's consumer is created as naq declares it and paused, and ``--jobs`` - 1
   (``--cluster-jobs`` - 1 on the cluster)
   no-op jobs (``result_ttl=0``) are enqueued;
2. the supervisors (``--concurrency`` slots each, asyncio executor) start, each in a
   process of its own, and wait on the paused consumer with their pull requests open;
3. the consumer is resumed and the last job enqueued: a new message is what makes
   the server serve the pull requests already waiting, so every supervisor starts at
   the same moment rather than the first to start taking a head start;
4. the time runs until the job stream holds no message; each supervisor then drains
   and reports how many jobs it ran: its share, and min/max over the supervisors
   (1.0: equal shares).

The raw phase is the same with raw consumer processes. Supervisors and consumers are
processes, as they would be on separate machines; here they share the machine's
cores with nats-server, so on a 2-core machine growth stops at the cores, not at
the server: read the ratios, and the medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchjobs import noop
from harness import (
    START_TIMEOUT,
    Child,
    Servers,
    emit,
    role_supervisor,
    say_ready,
    stdin_closed,
    write_json,
)
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from throughput import FETCH_BATCH, QUEUE, RAW_ID, delete_streams, raw_publish, wait_empty

from naq.queue import Queue
from naq.settings import Settings
from naq.transport.connect import connect
from naq.transport.declare import declare, ensure_consumer
from naq.transport.names import Layout
from naq.transport.pool import new_event_loop
from naq.transport.server import binary_version

SCRIPT = Path(__file__).resolve()
COUNTS = (1, 2, 4, 8)
CHUNK = 5_000
"""Jobs per ``enqueue_many`` call while a phase's queue is filled (not timed)."""
RAW_EXPIRES = 1.0
"""Seconds a raw consumer's pull request waits on an empty queue."""


@dataclass(frozen=True, slots=True)
class Deployment:
    key: str
    label: str
    nodes: int

    @property
    def replicas(self) -> int:
        return 3 if self.nodes >= 3 else 1


DEPLOYMENTS = (
    Deployment("single", "one nats-server (default fsync)", 1),
    Deployment("cluster_r3", "3-node cluster, R3, sync_interval: always", 3),
)


# -- the processes -----------------------------------------------------------------------
async def role_raw(url: str, namespace: str) -> int:
    """A raw consumer: one pull request of ``FETCH_BATCH`` held open on the queue's
    durable consumer, each message acked as it arrives, the next request sent as soon
    as one ends, until stdin closes; prints how many it acked.

    Why not nats-py's ``fetch``: a ``fetch`` that gets part of its batch waits out its
    timeout before returning, with the messages unacked, so the last batches of a
    phase would stand still for a second. This is the protocol naq's puller uses, in
    plain nats-py."""
    settings = Settings(nats_url=url, namespace=namespace)
    nc: NATS = await connect(settings, name="naq-bench-raw")
    pull = Layout(namespace).pull_subject(QUEUE)
    inbox = nc.new_inbox()
    acked = 0
    delivered = 0
    trouble: list[str] = []

    async def ask() -> None:
        nonlocal delivered
        delivered = 0
        request = {"batch": FETCH_BATCH, "expires": int(RAW_EXPIRES * 1e9)}
        await nc.publish(pull, json.dumps(request).encode(), inbox)

    async def on_msg(msg: Msg) -> None:
        nonlocal acked, delivered
        status = (msg.headers or {}).get("Status")
        if status is None:
            await msg.ack()
            acked += 1
            delivered += 1
            if delivered < FETCH_BATCH:
                return
        elif status == "100":
            return
        elif status not in ("404", "408"):  # no messages, request expired: ask again
            trouble.append(f"raw pull answered {status} {msg.headers}")
        await ask()  # the request is over: filled, expired, or closed

    try:
        await nc.subscribe(inbox, cb=on_msg)
        await ask()
        say_ready()
        await stdin_closed()
        await nc.flush()
    finally:
        await nc.close()
    if trouble:
        raise RuntimeError(trouble[0])
    print(json.dumps({"processed": acked, "failed": 0}))
    return 0


# -- one phase ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Phase:
    rate: float
    shares: list[int]
    """Jobs (or messages) each process handled, in start order."""

    @property
    def fairness(self) -> float:
        """The fewest any process handled over the most: 1.0 is equal shares."""
        return min(self.shares) / max(self.shares) if max(self.shares) else 0.0


def far_future() -> str:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    return later.strftime("%Y-%m-%dT%H:%M:%SZ")


async def paused_consumer(js: JetStreamContext, layout: Layout, settings: Settings) -> None:
    """The queue's consumer as naq declares it (so a supervisor finds nothing to
    change and leaves its pause alone), paused."""
    await ensure_consumer(js, layout, QUEUE, settings)
    await js.pause_consumer(layout.stream, layout.consumer(QUEUE), far_future())
    await until_paused(js, layout, True)


async def until_paused(js: JetStreamContext, layout: Layout, paused: bool) -> None:
    """On a cluster a pause or a resume is applied after the answer (it is replicated):
    wait until the consumer says so."""
    name = layout.consumer(QUEUE)
    deadline = time.monotonic() + START_TIMEOUT
    while bool((await js.consumer_info(layout.stream, name)).paused) != paused:
        if time.monotonic() > deadline:
            raise RuntimeError(f"consumer {name}: paused is not {paused} after {START_TIMEOUT}s")
        await asyncio.sleep(0.01)


async def timed_release(
    js: JetStreamContext, layout: Layout, children: list[Child], last: Callable[[], Any]
) -> Phase:
    """Resume the consumer, send the last message (``last``: a new message makes the
    server serve the pull requests already waiting), time until the stream is empty;
    then stop every child and collect its count."""
    try:
        held = await js.consumer_info(layout.stream, layout.consumer(QUEUE))
        if held.delivered.stream_seq:
            raise RuntimeError("the consumer delivered jobs before the release: not paused")
        await js.resume_consumer(layout.stream, layout.consumer(QUEUE))
        await until_paused(js, layout, False)
        started = time.perf_counter()
        await last()
        await wait_empty(js, layout.stream)
        elapsed = time.perf_counter() - started
    except BaseException:
        for child in children:
            await child.kill()
        raise
    reports = [json.loads(await child.finish()) for child in children]
    failed = sum(r["failed"] for r in reports)
    if failed:
        raise RuntimeError(f"{failed} no-op jobs failed")
    shares = [int(r["processed"]) for r in reports]
    return Phase(sum(shares) / elapsed, shares)


async def start_children(what: str, count: int, *args: str) -> list[Child]:
    """``count`` processes of this script started together (they import at once)."""
    started = await asyncio.gather(
        *(Child.start(f"{what} {i + 1}", SCRIPT, *args) for i in range(count)),
        return_exceptions=True,
    )
    children = [c for c in started if isinstance(c, Child)]
    errors = [e for e in started if isinstance(e, BaseException)]
    if errors:
        for child in children:
            await child.kill()
        raise errors[0]
    return children


async def naq_phase(url: str, settings: Settings, count: int, jobs: int, concurrency: int) -> Phase:
    nc: NATS = await connect(settings, name="naq-bench")
    js = nc.jetstream()
    layout = Layout(settings.namespace)
    try:
        async with Queue(settings=settings) as queue:
            await queue.purge()  # connects and declares, so neither is timed
            await paused_consumer(js, layout, settings)
            for first in range(0, jobs - 1, CHUNK):
                size = min(CHUNK, jobs - 1 - first)
                await queue.enqueue_many([(noop, ())] * size, result_ttl=0)
            children = await start_children(
                "supervisor",
                count,
                *("--role", "supervisor", "--url", url, "--namespace", settings.namespace),
                *("--concurrency", str(concurrency), "--replicas", str(settings.replicas)),
            )

            async def last() -> None:
                await queue.enqueue(noop, result_ttl=0)

            phase = await timed_release(js, layout, children, last)
        if sum(phase.shares) != jobs:
            raise RuntimeError(f"supervisors ran {sum(phase.shares)} of {jobs} jobs")
        return phase
    finally:
        await delete_streams(js, settings.namespace)
        await nc.close()


async def raw_phase(url: str, settings: Settings, count: int, jobs: int) -> Phase:
    nc: NATS = await connect(settings, name="naq-bench")
    js = nc.jetstream()
    layout = Layout(settings.namespace)
    try:
        await declare(js, layout, settings)
        await paused_consumer(js, layout, settings)
        subject = layout.job_subject(QUEUE, RAW_ID)
        payload = b"x" * job_size(settings)
        await raw_publish(js, subject, payload, jobs - 1, None)
        children = await start_children(
            "raw consumer",
            count,
            *("--role", "raw", "--url", url, "--namespace", settings.namespace),
        )

        async def last() -> None:
            await js.publish(subject, payload)

        phase = await timed_release(js, layout, children, last)
        if sum(phase.shares) != jobs:
            raise RuntimeError(f"raw consumers acked {sum(phase.shares)} of {jobs}")
        return phase
    finally:
        await delete_streams(js, settings.namespace)
        await nc.close()


def job_size(settings: Settings) -> int:
    """The encoded no-op job with ``result_ttl=0``: the raw messages' size."""
    return len(Queue(settings=settings).prepare(noop, result_ttl=0)[1].payload)


# -- a run -------------------------------------------------------------------------------
async def one_run(
    url: str, deployment: Deployment, index: int, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Every count, naq then raw, on one deployment; keyed by count."""
    found: dict[str, dict[str, Any]] = {}
    jobs = args.jobs if deployment.nodes == 1 else args.cluster_jobs
    for count in args.counts:
        settings = Settings(
            nats_url=url,
            namespace=f"so{index}n{count}{uuid.uuid4().hex[:8]}",
            replicas=deployment.replicas,
        )
        naq = await naq_phase(url, settings, count, jobs, args.concurrency)
        raw_settings = settings.replace(namespace=f"{settings.namespace}raw")
        raw = await raw_phase(url, raw_settings, count, jobs)
        found[str(count)] = {
            "naq": naq.rate,
            "raw": raw.rate,
            "ratio": naq.rate / raw.rate,
            "fairness": naq.fairness,
            "shares": naq.shares,
            "raw_fairness": raw.fairness,
        }
        emit(
            f"  run {index + 1}: {count} supervisor(s) {naq.rate:,.0f}/s, "
            f"raw {raw.rate:,.0f}/s, ratio {naq.rate / raw.rate:.2f}, "
            f"shares {naq.shares} (min/max {naq.fairness:.2f})"
        )
    return found


def medians(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    keys = ("naq", "raw", "ratio", "fairness", "raw_fairness")
    return {
        count: {key: statistics.median(run[count][key] for run in runs) for key in keys}
        for count in runs[0]
    }


def table(label: str, median: dict[str, dict[str, float]], runs: int) -> list[str]:
    base = median[min(median, key=int)]["naq"]
    lines = [
        f"{label}: medians of {runs} run(s)",
        f"{'supervisors':>11}{'naq/s':>10}{'raw/s':>10}{'ratio':>8}{'x 1 sup':>9}"
        f"{'fairness':>10}{'raw fair':>10}",
    ]
    for count, m in median.items():
        lines.append(
            f"{count:>11}{m['naq']:>10,.0f}{m['raw']:>10,.0f}{m['ratio']:>8.2f}"
            f"{m['naq'] / base:>9.2f}{m['fairness']:>10.2f}{m['raw_fairness']:>10.2f}"
        )
    return lines


def on_servers(
    deployment: Deployment,
    run: Callable[[Servers], Coroutine[Any, Any, dict[str, Any]]],
    runner: asyncio.Runner,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="naq-scaleout-") as store:
        servers = Servers(deployment.nodes, Path(store), sync_always=deployment.nodes > 1)
        servers.start()
        try:
            return runner.run(run(servers))
        finally:
            servers.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--counts", default=",".join(map(str, COUNTS)), help="supervisor counts, comma-separated"
    )
    parser.add_argument(
        "--jobs", type=int, default=20_000, help="jobs (raw messages) per phase, one server"
    )
    parser.add_argument(
        "--cluster-jobs", type=int, default=10_000, help="jobs (raw messages) per phase, cluster"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="slots per supervisor (asyncio executor)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per deployment; medians shown")
    parser.add_argument(
        "--deployments",
        default=",".join(d.key for d in DEPLOYMENTS),
        help="comma-separated, of " + ", ".join(d.key for d in DEPLOYMENTS),
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--role", choices=("supervisor", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--replicas", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        return args
    try:
        args.counts = tuple(int(x) for x in args.counts.split(","))
    except ValueError:
        parser.error("--counts takes comma-separated integers, e.g. 1,2,4,8")
    known = {d.key: d for d in DEPLOYMENTS}
    wanted = [k.strip() for k in args.deployments.split(",") if k.strip()]
    if not wanted or any(k not in known for k in wanted):
        parser.error(f"--deployments: choose from {', '.join(known)}")
    args.deployments = tuple(known[k] for k in wanted)
    if not args.counts or min(args.counts) < 1:
        parser.error("--counts must be at least 1 each")
    if min(args.jobs, args.cluster_jobs) < 2 or min(args.concurrency, args.runs) < 1:
        parser.error("--jobs and --cluster-jobs must be at least 2, the others at least 1")
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
                            concurrency=args.concurrency,
                            replicas=args.replicas,
                        )
                    )
                )
            return runner.run(role_raw(args.url, args.namespace))
    version = binary_version()
    cpus = os.cpu_count()
    emit(
        f"naq scale-out: {args.jobs:,} no-op jobs per phase on one server, "
        f"{args.cluster_jobs:,} on the cluster (result_ttl=0), "
        f"{args.concurrency} slots per supervisor, supervisors {args.counts}, "
        f"{args.runs} run(s), nats-server {version}, {cpus} CPUs, Python "
        f"{sys.version.split()[0]}"
    )
    emit(
        f"every supervisor, raw consumer and nats-server shares these {cpus} cores: growth "
        "stops at the cores, not at the server; quote the medians and the ratios"
    )
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "cluster_jobs": args.cluster_jobs,
        "concurrency": args.concurrency,
        "counts": list(args.counts),
        "runs": args.runs,
        "fetch_batch": FETCH_BATCH,
        "nats_server": version,
        "cpus": cpus,
        "deployments": {},
    }
    tables: list[str] = []
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        for deployment in args.deployments:
            emit(f"\n{deployment.label}")

            async def run(servers: Servers, deployment: Deployment = deployment) -> dict[str, Any]:
                runs = [await one_run(servers.url, deployment, i, args) for i in range(args.runs)]
                return {"label": deployment.label, "runs": runs, "median": medians(runs)}

            found = on_servers(deployment, run, runner)
            report["deployments"][deployment.key] = found
            tables += ["", *table(deployment.label, found["median"], args.runs)]
    for line in tables:
        emit(line)
    emit(
        "\nratio: naq / raw nats-py with as many consumer processes; x 1 sup: naq against "
        "one supervisor; fairness: fewest jobs any supervisor ran / most (1.00 = equal)"
    )
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
