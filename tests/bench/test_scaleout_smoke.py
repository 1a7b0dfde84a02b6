"""bench/scaleout.py end to end with tiny parameters on one server of its own: every
count's supervisors and raw consumers run in their own processes, every job is run
by one of them, and the report holds each count's figures."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_script

JOBS = 60


async def test_scaleout_bench_runs_every_count_and_counts_every_job(tmp_path: Path) -> None:
    out = tmp_path / "scaleout.json"
    returncode, stdout, stderr = await run_script(
        "scaleout.py",
        *("--deployments", "single", "--counts", "1,2", "--jobs", str(JOBS)),
        *("--runs", "1", "--concurrency", "2", "--json", str(out)),
        timeout=120,
    )
    assert returncode == 0, stderr.decode()[-3000:]
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
