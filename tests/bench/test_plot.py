"""bench/plot.py draws its charts and tables from the benchmarks' JSON: a tiny made-up
set of reports gives PNG files of the chart size and a summary with every figure.

Needs matplotlib (the ``bench`` extra): marked ``bench``, run by ``make bench`` before it
measures anything, and by ``pytest -m bench tests/bench``."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.bench

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, which always comes first."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def stats(p50: float) -> dict[str, float]:
    return {"p50": p50, "p99": p50 * 3, "p99.9": p50 * 6, "max": p50 * 9, "n": 1000.0}


def latency_report() -> dict[str, Any]:
    phases = [
        {
            "executor": executor,
            "load": load,
            "offered": capacity * load,
            "achieved": capacity * load,
            "n": 1000.0,
            "start": stats(0.5 + load),
            "result": stats(1.0 + load),
            "raw": stats(0.2 + load / 10),
            "lag": stats(0.01),
        }
        for executor, capacity in (("asyncio", 8000.0), ("process", 1200.0))
        for load in (0.1, 0.5, 0.9)
    ]
    return {
        "concurrency": {"asyncio": 64, "process": 8},
        "median": {"capacity": {"asyncio": 8000.0, "process": 1200.0}, "phases": phases},
        "targets": {"asyncio.start.p99": {"target_ms": 5.0, "value_ms": 3.0, "pass": True}},
        "cpus": 2,
        "python": "3.13.0",
        "nats_server": "v2.15.1",
    }


def write_reports(results: Path) -> None:
    throughput = {
        "concurrency": 64,
        "median": {
            "rates": {
                "process": 10_000.0,
                "process_with_results": 8_000.0,
                "raw_fetch_ack": 27_000.0,
                "raw_fetch_put_ack": 12_000.0,
            }
        },
        "nats_server": "v2.15.1",
    }
    executors = {  # as bench/executors.py writes it: a variant is executor.c<concurrency>
        "executors": {"noop": ["asyncio.c8", "thread.c16", "process.c2"]},
        "median": {
            "rates": {
                "noop.asyncio.c8": 9_000.0,
                "noop.thread.c16": 4_000.0,
                "noop.process.c2": 1_100.0,
            }
        },
        "cpus": 2,
        "python": "3.13.0",
    }
    for name, report in (
        ("throughput", throughput),
        ("executors", executors),
        ("latency", latency_report()),
    ):
        (results / f"{name}.json").write_text(json.dumps(report))


def test_draw_writes_both_charts_and_the_summary(tmp_path: Path) -> None:
    from plot import DPI, HEIGHT, WIDTH, draw

    write_reports(tmp_path)
    written = draw(tmp_path)
    assert written == [
        tmp_path / "throughput.png",
        tmp_path / "latency.png",
        tmp_path / "summary.md",
    ]
    for chart in written[:2]:
        assert png_size(chart) == (int(WIDTH * DPI), int(HEIGHT * DPI))
        assert chart.stat().st_size > 10_000  # drawn, not an empty canvas
    summary = (tmp_path / "summary.md").read_text()
    assert "| raw fetch + ack | 27,000 | raw limit |" in summary
    assert "| process -c 2, no result | 1,100 |" in summary
    assert "| process -c 8, results kept | 1,200 |" in summary
    assert "| process | 50% | 600 | 1.00 | 3.00 | 6.00 | 1.50 | 4.50 | 9.00 |" in summary
    assert "asyncio.start.p99: 3.00 ms (target < 5 ms): PASS" in summary
    assert "2 CPUs, Python 3.13.0, nats-server v2.15.1" in summary


def test_draw_leaves_out_what_was_not_measured(tmp_path: Path) -> None:
    from plot import draw

    (tmp_path / "latency.json").write_text(json.dumps(latency_report()))
    assert draw(tmp_path) == [
        tmp_path / "throughput.png",
        tmp_path / "latency.png",
        tmp_path / "summary.md",
    ]
    assert "| asyncio -c 64, results kept | 8,000 |" in (tmp_path / "summary.md").read_text()
