"""bench/latency.py end to end with tiny parameters on the session's nats-server: both
executors' supervisors and the raw consumer run in their own processes, every job's
result is heard, and the report holds every figure, in order, for every phase."""

from __future__ import annotations

import json
from pathlib import Path

import nats

from naq.transport.server import EmbeddedServer

from .conftest import run_script


async def test_latency_bench_runs_and_reports_every_phase(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    out = tmp_path / "latency.json"
    returncode, stdout, stderr = await run_script(
        "latency.py",
        *("--url", nats_server.url, "--runs", "1", "--capacity-jobs", "40"),
        *("--min-jobs", "30", "--seconds", "0.1", "--loads", "0.1,0.5"),
        *("--process-concurrency", "2", "--warmup", "0.05", "--json", str(out)),
        timeout=90,
    )
    assert returncode == 0, stderr.decode()[-3000:]
    report = json.loads(out.read_text())
    assert set(report["median"]["capacity"]) == {"asyncio", "process"}
    assert all(rate > 0 for rate in report["median"]["capacity"].values())
    phases = report["runs"][0]["phases"]
    assert [(p["executor"], p["load"]) for p in phases] == [
        ("asyncio", 0.1),
        ("asyncio", 0.5),
        ("process", 0.1),
        ("process", 0.5),
    ]
    for p in phases:
        for part in ("start", "result", "raw"):
            s = p[part]
            assert s["n"] == p["n"] >= 30, (p["executor"], part)
            assert 0 < s["p50"] <= s["p99"] <= s["p99.9"] <= s["max"], (p["executor"], part)
        assert p["start"]["p50"] <= p["result"]["p50"]  # a job starts before its result is stored
    assert set(report["targets"]) == {
        f"{e}.start.{name}" for e in ("asyncio", "process") for name in ("p99", "p99.9")
    }
    assert b"enqueue-to-start ms" in stdout
    nc = await nats.connect(nats_server.url)  # the run's streams went with it
    try:
        names = [info.config.name or "" for info in await nc.jetstream().streams_info()]
    finally:
        await nc.close()
    assert not [name for name in names if "LAT1" in name.upper()]
