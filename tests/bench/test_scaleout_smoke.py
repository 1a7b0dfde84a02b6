"""bench/scaleout.py end to end with tiny parameters on one server of its own: every
count's supervisors and raw consumers run in their own processes, every job is run
by one of them, and the report holds each count's figures."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.conftest import subprocess_env

from .conftest import BENCH

JOBS = 60


async def test_scaleout_bench_runs_every_count_and_counts_every_job(tmp_path: Path) -> None:
    out = tmp_path / "scaleout.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / "scaleout.py"),
        *("--deployments", "single", "--counts", "1,2", "--jobs", str(JOBS)),
        *("--runs", "1", "--concurrency", "2", "--json", str(out)),
        env=subprocess_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    report = json.loads(out.read_text())
    run = report["deployments"]["single"]["runs"][0]
    assert list(run) == ["1", "2"]
    for count, found in run.items():
        assert len(found["shares"]) == int(count)
        assert sum(found["shares"]) == JOBS  # the script checks it too, and fails otherwise
        assert found["naq"] > 0
        assert found["raw"] > 0
        assert found["ratio"] == found["naq"] / found["raw"]
        assert 0 <= found["fairness"] <= 1
    assert set(report["deployments"]["single"]["median"]) == {"1", "2"}
    assert b"growth stops at the cores" in stdout
