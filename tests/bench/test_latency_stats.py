"""The latency benchmark's arithmetic: percentiles, medians over runs, verdicts, the
open-loop schedule and the table. No server: what is checked here is what turns
samples into the figures the benchmark reports."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from latency import median_phases, offer, parse_args, percentile, summarize, table, verdicts


def test_percentile_is_nearest_rank() -> None:
    ordered = [float(i) for i in range(1, 1001)]
    assert percentile(ordered, 50) == 500
    assert percentile(ordered, 99) == 990
    assert percentile(ordered, 99.9) == 999
    assert percentile(ordered, 100) == 1000
    assert percentile([7.0], 99.9) == 7.0
    assert percentile([1.0, 2.0], 0) == 1.0  # rank 0 is the smallest sample, not an index -1
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_summarize_in_milliseconds_from_unsorted_seconds() -> None:
    samples = [i / 1000 for i in range(1000, 0, -1)]  # 1 ms .. 1000 ms, reversed
    got = summarize(samples)
    assert got == {"p50": 500.0, "p99": 990.0, "p99.9": 999.0, "max": 1000.0, "n": 1000.0}


def phase(executor: str, load: float, start_p99: float, n: float = 100.0) -> dict[str, Any]:
    stats = {"p50": 1.0, "p99": start_p99, "p99.9": start_p99 * 2, "max": 50.0, "n": n}
    return {
        "executor": executor,
        "load": load,
        "offered": 1000 * load,
        "achieved": 990 * load,
        "n": n,
        "start": stats,
        "result": {**stats, "p50": 2.0},
        "raw": {**stats, "p50": 0.5},
        "lag": {**stats, "p99": 0.1},
    }


def test_median_phases_takes_each_number_over_runs() -> None:
    runs = [
        [phase("asyncio", 0.5, 1.0), phase("process", 0.5, 9.0)],
        [phase("asyncio", 0.5, 3.0), phase("process", 0.5, 4.0)],
        [phase("asyncio", 0.5, 2.0), phase("process", 0.5, 6.0)],
    ]
    median = median_phases(runs)
    assert [p["executor"] for p in median] == ["asyncio", "process"]
    assert median[0]["start"]["p99"] == 2.0
    assert median[1]["start"]["p99"] == 6.0
    assert median[1]["start"]["p99.9"] == 12.0


def test_verdicts_judge_start_at_half_load_only() -> None:
    checks = verdicts(
        [phase("asyncio", 0.1, 99.0), phase("asyncio", 0.5, 4.0), phase("process", 0.5, 6.0)]
    )
    assert set(checks) == {
        "asyncio.start.p99",
        "asyncio.start.p99.9",
        "process.start.p99",
        "process.start.p99.9",
    }
    assert checks["asyncio.start.p99"]["pass"]
    assert checks["asyncio.start.p99.9"]["pass"]  # 8 ms < 10 ms
    assert not checks["process.start.p99"]["pass"]  # 6 ms
    assert not checks["process.start.p99.9"]["pass"]  # 12 ms


def test_table_has_a_row_per_phase() -> None:
    lines = table(
        "run 1/1", {"asyncio": 1000.0}, [phase("asyncio", 0.1, 1.5), phase("asyncio", 0.9, 7.25)]
    )
    assert lines[0] == "run 1/1"
    assert "asyncio 1,000" in lines[1]
    rows = [line for line in lines if line.strip().startswith("asyncio ")]
    assert len(rows) == 2
    assert " 10%" in rows[0]
    assert "7.25" in rows[1]


async def test_offer_sends_each_message_once_never_before_it_is_due() -> None:
    calls: list[tuple[int, int, float]] = []

    async def send(first: int, count: int) -> None:
        calls.append((first, count, time.time()))
        await asyncio.sleep(0.01)  # a slow acknowledgement does not hold the schedule

    rate, n = 2000.0, 150
    start = await offer(rate, n, send)
    sent = [i for first, count, _ in calls for i in range(first, first + count)]
    assert sent == list(range(n))
    for first, _, at in calls:
        assert at >= start + first / rate - 1e-6


def test_parse_args_checks_what_it_is_given() -> None:
    args = parse_args(["--executors", "process", "--loads", "0.5", "--process-concurrency", "2"])
    assert args.executors == ("process",)
    assert args.loads == (0.5,)
    assert args.concurrency["process"] == 2
    for bad in (["--executors", "thread"], ["--loads", "1.5"], ["--capacity-jobs", "1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
