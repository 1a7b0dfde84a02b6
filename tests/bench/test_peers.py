"""bench/peers.py end to end with tiny parameters: its own redis-server and nats-server,
huey's real consumer with 2 worker processes and naq's process executor both run every
job, and the report holds every figure and the naq/huey ratio against its target.

huey, the Redis client and redis-server are an optional peer comparison (the ``peers``
extra, ``make bench-peers``), not naq's dependencies: the test is skipped, saying so,
only where they are not installed."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from .conftest import run_script

MISSING = [name for name in ("huey", "redis") if importlib.util.find_spec(name) is None]
if shutil.which("redis-server") is None:
    MISSING.append("redis-server")

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"the peer comparison needs {', '.join(MISSING)} "
        "(make bench-peers; redis-server from the OS, e.g. apt-get install redis-server)",
    ),
]


async def test_peers_bench_runs_huey_and_naq_and_reports_the_ratio(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    returncode, stdout, stderr = await run_script(
        "peers.py",
        *("--jobs", "60", "--runs", "2", "--json", str(out)),
        timeout=120,
    )
    assert returncode == 0, (stdout + stderr).decode()[-3000:]
    report = json.loads(out.read_text())
    assert report["jobs"] == 60
    assert report["huey_flags"] == ["-k", "process", "-q", "-w", "2"]
    assert len(report["runs"]) == 2
    for run in [*report["runs"], report["median"]]:
        rates = run["rates"]
        assert set(rates) == {
            "raw.fetch_ack",
            "naq.process",
            "huey.process",
            "huey.process.from_spawn",
        }
        assert all(rate > 0 for rate in rates.values())
    for run in report["runs"]:  # the median ratio is the median of the runs' ratios
        rates, ratio = run["rates"], run["ratios"]["naq/huey"]
        assert ratio == pytest.approx(rates["naq.process"] / rates["huey.process"])
    target = report["targets"]["naq/huey"]
    assert target["target"] == 1.0
    assert target["pass"] == (target["value"] >= 1.0)
    assert b"huey -k process -w 2" in stdout
    assert b"naq / huey" in stdout
