"""What each executor costs per job, how it scales on CPU work, and how much memory it holds.

Why one script for the three: choosing an executor is a trade between them. The
asyncio executor is the cheapest per job but runs CPU-bound Python on one core;
the process and interpreter executors scale across cores but pay for a copy per
job and for the memory of each slot. Every figure here is taken through a real
``Supervisor`` on one embedded nats-server, in the same run as the reference it is
compared with (the asyncio executor for per-job cost, concurrency 1 for scaling).

    python bench/executors.py [--jobs N] [--only V,...] [--no-cpu] [--cpu-jobs M] [--runs K]
                              [--json PATH]

Every process-executor child imports this script again as ``__mp_main__`` (as
multiprocessing does for forkserver children): everything that does work stays
under the ``__main__`` guard, and the job functions live in ``benchjobs``, which
children and subinterpreters import from the ``sys.path`` they inherit (this
script's directory comes first on it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from benchjobs import noop, noop_sync, spin
from harness import emit, median_of, on_embedded_server, write_json
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from throughput import QUEUE, delete_streams, expect, raw_consume, raw_publish, wait_empty

from naq.errors import ConfigurationError
from naq.executors.interpreter import interpreters_module
from naq.executors.registry import load_executor
from naq.queue import Queue
from naq.settings import Settings
from naq.supervisor import Supervisor
from naq.transport.connect import connect
from naq.transport.declare import declare
from naq.transport.names import Layout
from naq.transport.server import EmbeddedServer

NOOP_VARIANTS = (
    ("asyncio", 8),
    ("process", 2),
    ("process", 8),
    ("thread", 16),
    ("interpreter", 8),
)
"""Executor and concurrency of each no-op figure; the first is the reference the
others are divided by. Each is also shown against the raw fetch + ack of the run."""
CPU_EXECUTORS = ("process", "interpreter", "thread")
"""The thread executor is there for contrast: the GIL keeps its speedup near 1."""
NOOP_TARGETS = {"process.c8": 0.6, "thread.c16": 0.6}
"""Minimum no-op jobs/s as a fraction of the asyncio executor's (issue 13; the issue
also asks the process executor at -c 2 for huey's rate with 2 processes: bench/peers.py
measures that, huey included, in one run)."""
SPEEDUP_TARGETS = {"process": 1.8, "interpreter": 1.8}
"""Minimum jobs/s at concurrency 2 over concurrency 1, for CPU-bound jobs on 2 cores."""
MEMORY_PROCESS_SLOTS = 8
MEMORY_INTERPRETER_SLOTS = 2
MEMORY_SETTLE = 2.0
"""Seconds after ready before memory is read: the process executor re-reads its
children's RSS every second, so by then its own figures are fresh too."""
CHUNK = 5_000
"""Jobs per ``enqueue_many`` call."""
PHASE_TIMEOUT = 300.0
"""Seconds any one phase may take before the benchmark gives up on it."""
MIB = 2**20
LOOKAHEAD: int | None = None
"""``--lookahead``: the supervisors' look-ahead per slot (None: the default)."""


@dataclass(frozen=True, slots=True)
class Memory:
    figures: dict[str, float]
    """Bytes, by ``mem.<executor>.<what>.<rss|uss>``."""
    child_pids: list[int]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run measures, fixed once so every run measures the same."""

    jobs: int
    noop_variants: tuple[tuple[str, int], ...]
    cpu_jobs: int
    spin_iterations: int
    spin_seconds: float
    cpu_executors: tuple[str, ...]
    interpreter: bool


# -- calibration -------------------------------------------------------------------------
def time_spin(iterations: int, repeat: int) -> float:
    """The fastest of ``repeat`` runs: the work itself, with the least interference."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        spin(iterations)
        best = min(best, time.perf_counter() - started)
    return best


def calibrate(target: float) -> tuple[int, float]:
    """Iterations of ``spin`` that take ``target`` seconds here, single-threaded.

    Done once, before the server starts: every job of every run then does exactly
    the same work, so rates compare across executors, concurrencies and runs.
    """
    iterations = 10_000
    took = time_spin(iterations, 3)
    while took < target / 4:
        iterations *= 4
        took = time_spin(iterations, 3)
    iterations = max(1, round(iterations * target / took))
    return iterations, time_spin(iterations, 5)


# -- supervisors -------------------------------------------------------------------------
async def start_supervisor(
    settings: Settings, executor: str, concurrency: int
) -> tuple[Supervisor, asyncio.Task[int]]:
    """A supervisor that is pulling, its executor started (children spawned, and so on)."""
    settings = settings.replace(executor=executor, concurrency=concurrency)
    if LOOKAHEAD is not None:
        settings = settings.replace(lookahead=LOOKAHEAD)
    sup = Supervisor(settings, load_executor(executor)(concurrency, settings))
    task = asyncio.create_task(sup.run())
    ready = asyncio.create_task(sup.ready.wait())
    await asyncio.wait([task, ready], timeout=PHASE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        return sup, task
    ready.cancel()
    if not task.done():
        sup.request_stop()
    await task  # raises what stopped it, if anything did
    raise RuntimeError(f"the {executor} supervisor was not ready in {PHASE_TIMEOUT:.0f}s")


async def stop_supervisor(sup: Supervisor, task: asyncio.Task[int]) -> None:
    if not task.done():
        sup.request_stop()
    await task


async def settle_all(sup: Supervisor, task: asyncio.Task[int], n: int) -> float:
    """Seconds from now until the supervisor has settled ``n`` jobs."""
    started = time.perf_counter()
    finished = asyncio.create_task(sup.wait_until(lambda c: c.processed + c.failed >= n))
    await asyncio.wait([finished, task], timeout=PHASE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    elapsed = time.perf_counter() - started
    if not finished.done():
        finished.cancel()
        if task.done():
            task.result()
        raise RuntimeError(
            f"the supervisor settled {sup.counters.processed + sup.counters.failed} "
            f"of {n} jobs in {PHASE_TIMEOUT:.0f}s"
        )
    return elapsed


async def jobs_per_second(
    queue: Queue,
    js: JetStreamContext,
    executor: str,
    concurrency: int,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    n: int,
) -> float:
    """Enqueue ``n`` calls, then time one supervisor from ready until all are settled.

    Enqueueing first keeps the producer's cost out of the figure; ``result_ttl=0``
    keeps the result store out of it, so what is left is pulling, the executor's
    hand-off and the ack.
    """
    stream = queue.layout.stream
    for first in range(0, n, CHUNK):
        await queue.enqueue_many([(func, args)] * min(CHUNK, n - first), result_ttl=0)
    await expect(js, stream, n, f"enqueue for {executor}")
    sup, task = await start_supervisor(queue.settings, executor, concurrency)
    try:
        elapsed = await settle_all(sup, task, n)
    finally:
        await stop_supervisor(sup, task)
    if sup.counters.failed:
        raise RuntimeError(f"{executor}: {sup.counters.failed} of {n} jobs failed")
    await wait_empty(js, stream)  # not timed: only proves that every job was acked
    return n / elapsed


# -- memory ------------------------------------------------------------------------------
def uss(process: psutil.Process) -> float:
    """Memory only this process holds; NaN where smaps cannot be read.

    RSS counts pages shared with the forkserver (and with each other) in every
    child; USS is what one more child really costs.
    """
    try:
        return float(process.memory_full_info().uss)
    except psutil.Error:
        return float("nan")


async def measure_memory(url: str, namespace: str, plan: Plan) -> Memory:
    """RSS of an idle supervisor with its process executor's children, and of one with
    subinterpreters (one process: only its total can be told).

    Taken once, before anything else runs in this process: CPython 3.13 keeps the
    memory of a closed subinterpreter whose allocator still has blocks in use, so
    after the interpreter executor has run, the process only ever grows and a later
    reading would show earlier phases, not an idle supervisor. The figures do not
    vary from run to run, so one reading loses nothing.
    """
    settings = Settings(nats_url=url, namespace=namespace)
    nc: NATS = await connect(settings, name="naq-bench")
    try:  # the supervisors declare the streams; this client only deletes them after
        return await idle_memory(settings, plan)
    finally:
        await delete_streams(nc.jetstream(), namespace)
        await nc.close()


async def idle_memory(settings: Settings, plan: Plan) -> Memory:
    me = psutil.Process()
    figures: dict[str, float] = {}
    pids: list[int] = []
    sup, task = await start_supervisor(settings, "process", MEMORY_PROCESS_SLOTS)
    try:
        await asyncio.sleep(MEMORY_SETTLE)
        figures["mem.process.supervisor.rss"] = float(me.memory_info().rss)
        figures["mem.process.supervisor.uss"] = uss(me)
        slots = sup.executor.slots()
        if len(slots) != MEMORY_PROCESS_SLOTS:
            raise RuntimeError(f"{len(slots)} children, expected {MEMORY_PROCESS_SLOTS}")
        for number, slot in enumerate(slots, 1):
            rss, child_uss = float(slot.rss), float("nan")
            with contextlib.suppress(psutil.Error):
                child = psutil.Process(slot.pid)
                rss = float(child.memory_info().rss)
                child_uss = uss(child)
            figures[f"mem.process.child{number}.rss"] = rss
            figures[f"mem.process.child{number}.uss"] = child_uss
            figures[f"mem.process.child{number}.reported"] = float(slot.rss)
            pids.append(slot.pid)
        figures["mem.process.reported_total"] = float(sup.total_rss())
    finally:
        await stop_supervisor(sup, task)
    for kind in ("rss", "uss"):
        children = sum(figures[f"mem.process.child{i}.{kind}"] for i in range(1, len(pids) + 1))
        figures[f"mem.process.children.{kind}"] = children
        figures[f"mem.process.total.{kind}"] = children + figures[f"mem.process.supervisor.{kind}"]

    if plan.interpreter:
        figures["mem.interpreter.before.rss"] = float(me.memory_info().rss)
        sup, task = await start_supervisor(settings, "interpreter", MEMORY_INTERPRETER_SLOTS)
        try:
            await asyncio.sleep(MEMORY_SETTLE)
            figures["mem.interpreter.total.rss"] = float(me.memory_info().rss)
        finally:
            await stop_supervisor(sup, task)
    return Memory(figures, pids)


# -- one run -----------------------------------------------------------------------------
async def one_run(url: str, namespace: str, plan: Plan) -> dict[str, float]:
    """Jobs/s of every executor on no-op jobs, and on CPU-bound ones at 1 and 2 slots."""
    settings = Settings(nats_url=url, namespace=namespace)
    nc: NATS = await connect(settings, name="naq-bench")
    js = nc.jetstream()
    queue = Queue(settings=settings)
    try:
        await queue.purge()  # connects and declares, so neither is timed
        figures: dict[str, float] = {"raw.fetch_ack": await raw_fetch_ack(js, queue, plan.jobs)}
        for executor, concurrency in plan.noop_variants:
            func = noop if executor == "asyncio" else noop_sync
            figures[f"noop.{executor}.c{concurrency}"] = await jobs_per_second(
                queue, js, executor, concurrency, func, (), plan.jobs
            )
        for executor in plan.cpu_executors:
            for concurrency in (1, 2):
                figures[f"cpu.{executor}.c{concurrency}"] = await jobs_per_second(
                    queue, js, executor, concurrency, spin, (plan.spin_iterations,), plan.cpu_jobs
                )
    finally:
        await queue.close()
        await delete_streams(js, namespace)
        await nc.close()
    return figures


async def raw_fetch_ack(js: JetStreamContext, queue: Queue, n: int) -> float:
    """The raw nats-py limit of this run: ``n`` messages the size of a no-op job,
    fetched in batches and acked, on a stream declared as naq's own."""
    _, job = queue.prepare(noop_sync, result_ttl=0)
    raw = Layout(f"{queue.settings.namespace}raw")
    await declare(js, raw, queue.settings)
    await raw_publish(js, raw.job_subject(QUEUE, "r" * 32), b"x" * len(job.payload), n, None)
    await expect(js, raw.stream, n, "raw publish")
    return n / await raw_consume(js, raw, queue.settings, n, None)


def variant(executor: str, concurrency: int) -> str:
    return f"{executor}.c{concurrency}"


# -- report ------------------------------------------------------------------------------
def ratios(figures: dict[str, float], plan: Plan) -> dict[str, float]:
    """No-op rates over asyncio's, and CPU rates at concurrency 2 over concurrency 1."""
    reference = figures[f"noop.{variant(*plan.noop_variants[0])}"]
    out: dict[str, float] = {}
    for e, c in plan.noop_variants:
        rate = figures[f"noop.{variant(e, c)}"]
        out[f"noop.{variant(e, c)}/asyncio"] = rate / reference
        out[f"noop.{variant(e, c)}/raw"] = rate / figures["raw.fetch_ack"]
    out.update(
        {
            f"cpu.{e}.speedup": figures[f"cpu.{e}.c2"] / figures[f"cpu.{e}.c1"]
            for e in plan.cpu_executors
        }
    )
    return out


def verdicts(ratio: dict[str, float], plan: Plan) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    for name, target in NOOP_TARGETS.items():
        key = f"noop.{name}/asyncio"
        if key in ratio:
            checks[key] = {"target": target, "value": ratio[key], "pass": ratio[key] >= target}
    for executor, target in SPEEDUP_TARGETS.items():
        key = f"cpu.{executor}.speedup"
        if key in ratio:
            checks[key] = {"target": target, "value": ratio[key], "pass": ratio[key] >= target}
    return checks


def verdict(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return f"{'>= ' + format(target, '.2f'):>10}  {'PASS' if value >= target else 'FAIL'}"


def mib(value: float) -> str:
    return "n/a" if value != value else f"{value / MIB:.1f}"  # NaN: not readable


def rate_table(title: str, f: dict[str, float], ratio: dict[str, float], plan: Plan) -> list[str]:
    lines = [title, ""]
    lines.append(f"  no-op jobs: {plan.jobs:,} per executor, result_ttl=0")
    lines.append(
        f"  {'executor':<18}{'jobs/s':>10}{'x raw':>8}{'x asyncio':>11}{'target':>10}  result"
    )
    lines.append(f"  {'raw fetch + ack':<18}{f['raw.fetch_ack']:>10,.0f}{1:>8.2f}")
    for e, c in plan.noop_variants:
        name = variant(e, c)
        r = ratio[f"noop.{name}/asyncio"]
        lines.append(
            f"  {e + ' -c ' + str(c):<18}{f[f'noop.{name}']:>10,.0f}"
            f"{ratio[f'noop.{name}/raw']:>8.2f}{r:>11.2f}{verdict(r, NOOP_TARGETS.get(name))}"
        )

    lines += [
        "",
        f"  CPU-bound jobs: {plan.cpu_jobs:,} x spin({plan.spin_iterations:,}), "
        f"{plan.spin_seconds * 1e3:.1f} ms each single-threaded here",
        f"  {'executor':<14}{'c1 jobs/s':>10}{'c2 jobs/s':>11}{'c2/c1':>8}{'target':>10}  result",
    ]
    for e in plan.cpu_executors:
        r = ratio[f"cpu.{e}.speedup"]
        target = SPEEDUP_TARGETS.get(e)
        tail = verdict(r, target) if target is not None else "  (the GIL: no target)"
        lines.append(f"  {e:<14}{f[f'cpu.{e}.c1']:>10.1f}{f[f'cpu.{e}.c2']:>11.1f}{r:>8.2f}{tail}")
    return lines


def memory_table(memory: Memory, plan: Plan) -> list[str]:
    f = memory.figures
    lines = [
        f"memory, idle, {MEMORY_SETTLE:.0f} s after ready (measured once, before the runs)",
        "",
        f"  {'':<66}{'RSS MiB':>9}{'USS MiB':>9}",
        f"  process executor, concurrency {MEMORY_PROCESS_SLOTS}:",
    ]

    def row(label: str, key: str) -> str:
        return f"    {label:<64}{mib(f[f'{key}.rss']):>9}{mib(f[f'{key}.uss']):>9}"

    lines.append(
        row(
            "supervisor process (this benchmark process, incl. nats client)",
            "mem.process.supervisor",
        )
    )
    for number, pid in enumerate(memory.child_pids, 1):
        lines.append(row(f"child {number} (pid {pid})", f"mem.process.child{number}"))
    lines.append(row(f"{len(memory.child_pids)} children", "mem.process.children"))
    lines.append(row("total", "mem.process.total"))
    lines.append(
        f"    {'Supervisor.total_rss() (children as last read by the executor)':<64}"
        f"{mib(f['mem.process.reported_total']):>9}"
    )
    if plan.interpreter:
        before = f["mem.interpreter.before.rss"]
        total = f["mem.interpreter.total.rss"]
        lines += [
            f"  interpreter executor, concurrency {MEMORY_INTERPRETER_SLOTS} (one process):",
            f"    {'total process RSS':<64}{mib(total):>9}",
            f"    {'  of which grown since just before this supervisor started':<64}"
            f"{mib(total - before):>9}",
        ]
    return lines


def without_nan(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be read is written as null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    return value


async def bench(url: str, plan: Plan, runs: int, emit: Callable[[str], None]) -> dict[str, Any]:
    memory = await measure_memory(url, f"benchxmem{uuid.uuid4().hex[:8]}", plan)
    emit("")
    for line in memory_table(memory, plan):
        emit(line)
    results: list[dict[str, float]] = []
    for index in range(runs):
        namespace = f"benchx{index + 1}{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        figures = await one_run(url, namespace, plan)
        results.append(figures)
        emit("")
        title = f"run {index + 1}/{runs} ({time.monotonic() - started:.0f} s)"
        for line in rate_table(title, figures, ratios(figures, plan), plan):
            emit(line)
    median = median_of(results)
    median_ratio = median_of([ratios(r, plan) for r in results])
    if runs > 1:
        emit("")
        for line in rate_table(f"median of {runs} runs", median, median_ratio, plan):
            emit(line)
    checks = verdicts(median_ratio, plan)
    emit("")
    emit(
        f"targets ({'medians' if runs > 1 else 'one run'}): "
        + ", ".join(
            f"{key} {c['value']:.2f} >= {c['target']:.2f} {'PASS' if c['pass'] else 'FAIL'}"
            for key, c in checks.items()
        )
    )
    return {
        "jobs": plan.jobs,
        "cpu_jobs": plan.cpu_jobs,
        "spin": {"iterations": plan.spin_iterations, "seconds": plan.spin_seconds},
        "executors": {
            "noop": [variant(e, c) for e, c in plan.noop_variants],
            "cpu": list(plan.cpu_executors),
        },
        "memory": {
            "process_slots": MEMORY_PROCESS_SLOTS,
            "interpreter_slots": MEMORY_INTERPRETER_SLOTS,
            "settle_seconds": MEMORY_SETTLE,
            **asdict(memory),
        },
        "runs": [{"rates": r, "ratios": ratios(r, plan)} for r in results],
        "median": {"rates": median, "ratios": median_ratio},
        "targets": checks,
    }


def interpreter_available() -> str | None:
    """None if subinterpreters with their own GIL can run here, else why not."""
    try:
        interpreters_module()
    except ConfigurationError as exc:
        return str(exc)
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5_000, help="no-op jobs per executor")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated no-op variants to measure besides asyncio.c8 (e.g. process.c2)",
    )
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU-bound phases")
    parser.add_argument(
        "--lookahead", type=int, default=None, help="supervisors' look-ahead per slot"
    )
    parser.add_argument(
        "--cpu-jobs", type=int, default=100, help="CPU-bound jobs per executor and concurrency"
    )
    parser.add_argument(
        "--cpu-ms", type=float, default=20.0, help="single-threaded milliseconds per CPU job"
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat everything; medians shown")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    for name in ("jobs", "cpu_jobs", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.cpu_ms > 0:
        parser.error("--cpu-ms must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    global LOOKAHEAD
    args = parse_args(argv)
    LOOKAHEAD = args.lookahead
    missing = interpreter_available()
    if missing is not None:
        emit(f"note: interpreter executor skipped: {missing}")
    skip = () if missing is None else ("interpreter",)
    iterations, seconds = calibrate(args.cpu_ms / 1e3)
    only = {v for v in args.only.split(",") if v}
    variants = tuple(
        (e, c)
        for index, (e, c) in enumerate(NOOP_VARIANTS)
        if e not in skip and (index == 0 or not only or variant(e, c) in only)
    )
    plan = Plan(
        jobs=args.jobs,
        noop_variants=variants,
        cpu_jobs=args.cpu_jobs,
        spin_iterations=iterations,
        spin_seconds=seconds,
        cpu_executors=() if args.no_cpu else tuple(e for e in CPU_EXECUTORS if e not in skip),
        interpreter=missing is None,
    )

    async def run(server: EmbeddedServer, version: str) -> dict[str, Any]:
        emit(
            f"naq executors: {args.runs} run(s), {os.cpu_count()} CPUs, "
            f"Python {sys.version.split()[0]}, nats-server {version} at {server.url}"
        )
        report = await bench(server.url, plan, args.runs, emit)
        report["nats_server"] = version
        report["cpus"] = os.cpu_count()
        report["python"] = sys.version.split()[0]
        report["interpreter_skipped"] = missing
        return report

    write_json(args.json, without_nan(on_embedded_server(run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
