"""What durability costs: naq's throughput on the embedded server with nats-server's
default fsync, with ``sync_interval: always``, and on a 3-node cluster with R3 streams.

Why: ``sync_interval: always`` (fsync before every acknowledgement) is what keeps an
acknowledged job through an OS crash or a power loss; replication is what keeps it
through the loss of a machine. Both cost throughput, and the choice of a default
(``naq server`` alone, ``naq server --cluster``) needs the figures. Each mode runs
``bench/throughput.py``'s measurement unchanged: every naq figure next to the raw
nats-py limit on the same servers in the same run, the ratio, medians of ``--runs``.

After the runs, each mode is crashed once: jobs are enqueued (every one acknowledged
by the server), every nats-server of the mode is SIGKILLed at once, started again on
the same store, and the jobs still stored are counted. That is a process crash; an
OS crash or a power loss cannot be made here (see the README's Guarantees).

    python bench/durability.py [--jobs N] [--runs K] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchjobs import noop
from harness import Servers, emit, median_of, write_json
from throughput import (
    COMPARISONS,
    Sizes,
    delete_streams,
    measure_sizes,
    one_run,
    parse_args as throughput_args,
    ratios,
)

from naq.queue import Queue
from naq.settings import Settings
from naq.transport.connect import connect
from naq.transport.names import Layout
from naq.transport.pool import new_event_loop
from naq.transport.server import binary_version


@dataclass(frozen=True, slots=True)
class Mode:
    key: str
    label: str
    nodes: int
    sync_always: bool

    @property
    def replicas(self) -> int:
        return 3 if self.nodes >= 3 else 1


MODES = (
    Mode("single", "single server, default fsync (every 2 min)", 1, False),
    Mode("single_sync", "single server, sync_interval: always", 1, True),
    Mode("cluster_r3", "3-node cluster, R3, sync_interval: always", 3, True),
)


async def crash_check(servers: Servers, mode: Mode, jobs: int) -> dict[str, float]:
    """Enqueue ``jobs`` (all acknowledged), SIGKILL every server, restart, count them."""
    namespace = f"crash{uuid.uuid4().hex[:8]}"
    settings = Settings(nats_url=servers.url, namespace=namespace, replicas=mode.replicas)
    async with Queue(settings=settings) as queue:
        await queue.enqueue_many([(noop, ())] * jobs, result_ttl=0)
    servers.crash_and_restart()
    started = time.perf_counter()
    nc = await connect(settings, name="naq-bench-crash")
    try:
        js = nc.jetstream()
        while True:  # an R3 stream answers once its leader is elected again
            try:
                kept = (await js.stream_info(Layout(namespace).stream)).state.messages
                break
            except Exception:
                if time.perf_counter() - started > 60:
                    raise
                await asyncio.sleep(0.1)
        await delete_streams(js, namespace)
    finally:
        await nc.close()
    return {"enqueued": jobs, "kept": kept}


async def measure(
    mode: Mode, servers: Servers, args: argparse.Namespace, sizes: Sizes
) -> dict[str, Any]:
    run_args = throughput_args(
        ["--jobs", str(args.jobs), "--concurrency", str(args.concurrency), "--chunk", "5000"]
    )
    run_args.replicas = mode.replicas
    runs: list[dict[str, float]] = []
    for index in range(args.runs):
        namespace = f"dur{index + 1}{uuid.uuid4().hex[:8]}"
        rates = await one_run(servers.url, namespace, run_args, sizes)
        runs.append(rates)
        emit(f"  run {index + 1}/{args.runs}: " + line(rates, ratios(rates)))
    median = median_of(runs)
    median_ratio = median_of([ratios(r) for r in runs])
    return {
        "label": mode.label,
        "runs": [{"rates": r, "ratios": ratios(r)} for r in runs],
        "median": {"rates": median, "ratios": median_ratio},
    }


def line(rates: dict[str, float], ratio: dict[str, float]) -> str:
    return "  ".join(
        f"{c.label} {rates[c.naq]:,.0f}/s (raw {rates[c.raw]:,.0f}, {ratio[c.key]:.2f})"
        for c in COMPARISONS
    )


def summary(report: dict[str, Any]) -> list[str]:
    head = f"{'mode':<44}" + "".join(f"{c.label:>34}" for c in COMPARISONS) + f"{'crash':>16}"
    lines = [head, f"{'':<44}" + f"{'naq/s   raw/s  ratio':>34}" * len(COMPARISONS)]
    base = report["modes"]["single"]["median"]["rates"]
    for mode in MODES:
        found = report["modes"][mode.key]
        rates, ratio = found["median"]["rates"], found["median"]["ratios"]
        cells = "".join(
            f"{rates[c.naq]:>14,.0f}{rates[c.raw]:>10,.0f}{ratio[c.key]:>10.2f}"
            for c in COMPARISONS
        )
        crash = found["crash"]
        lines.append(f"{mode.label:<44}{cells}{crash['kept']:>9,}/{crash['enqueued']:,}")
        if mode.key != "single":
            lines.append(
                f"{'  naq rates against the single default':<44}"
                + "".join(f"{rates[c.naq] / base[c.naq]:>34.2f}" for c in COMPARISONS)
            )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs (raw messages) per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="supervisor concurrency")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode; medians shown")
    parser.add_argument("--crash-jobs", type=int, default=10_000, help="jobs in the crash check")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    for name in ("jobs", "concurrency", "runs", "crash_jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def on_servers(
    mode: Mode,
    run: Callable[[Servers], Coroutine[Any, Any, dict[str, Any]]],
    runner: asyncio.Runner,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="naq-durability-") as store:
        servers = Servers(mode.nodes, Path(store), sync_always=mode.sync_always)
        servers.start()
        try:
            return runner.run(run(servers))
        finally:
            servers.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    version = binary_version()
    emit(
        f"naq durability: {args.jobs:,} jobs per phase, concurrency {args.concurrency}, "
        f"{args.runs} run(s) per mode, nats-server {version}"
    )
    sizes = measure_sizes(Settings(nats_url="nats://127.0.0.1:4222", namespace="bench"))
    report: dict[str, Any] = {"jobs": args.jobs, "runs": args.runs, "nats_server": version}
    report["modes"] = {}
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        for mode in MODES:
            emit(f"\n{mode.label}")

            async def run(servers: Servers, mode: Mode = mode) -> dict[str, Any]:
                found = await measure(mode, servers, args, sizes)
                found["crash"] = await crash_check(servers, mode, args.crash_jobs)
                emit(f"  crash: {found['crash']['kept']:,} of {args.crash_jobs:,} jobs kept")
                return found

            report["modes"][mode.key] = on_servers(mode, run, runner)
    emit(f"\nmedians of {args.runs} run(s)")
    for text in summary(report):
        emit(text)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
