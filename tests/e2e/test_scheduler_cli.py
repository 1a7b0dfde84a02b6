"""``naq list-scheduled`` and ``naq job-control`` against a real server: what they
print, and what each action changes.

The failover tests with real ``naq scheduler`` processes are in
``tests/e2e/scheduler_failover.py``, not collected until the race in
``Lease.try_acquire`` (naq/scheduler/leader.py) is fixed: a standby racing the
lease's TTL expiry can crash on ``KeyNotFoundError`` from ``kv.create``.
"""

from __future__ import annotations

import pytest

from naq.producer.schedules import schedule
from tests.e2e.conftest import NAQ, Spawn
from tests.jobs import add

pytestmark = pytest.mark.e2e


async def test_list_scheduled_and_job_control(
    spawn: Spawn, nats_url: str, namespace: str, target: dict[str, str]
) -> None:
    """The CLI against a real server: what it prints, and what each action changes."""
    conn = ["--nats-url", nats_url, "--namespace", namespace]

    async def naq(*args: str, code: int = 0) -> list[str]:
        proc = spawn(NAQ, *args, *conn)
        assert await proc.exit_code(30) == code, proc.output()
        return proc.lines["stdout"] if code == 0 else proc.lines["stderr"]

    assert await naq("list-scheduled") == ["no schedules"]
    sid = await schedule(add, 1, 2, interval=3600, repeat=5, schedule_id="hourly", **target)
    other = await schedule(add, 3, 4, cron="0 3 * * *", schedule_id="nightly", **target)

    lines = await naq("list-scheduled")
    assert len(lines) == 2
    [hourly] = [line for line in lines if line.startswith(sid + " ")]
    assert hourly.split()[:4] == [sid, "active", "default", "tests.jobs:add"]
    assert "every 3600s (5 left)" in hourly
    assert "cron '0 3 * * *'" in next(line for line in lines if line.startswith(other + " "))

    detailed = await naq("list-scheduled", "--id", sid, "--detailed")
    assert detailed[0] == hourly
    assert "missed: run_once" in detailed[1]
    assert "runs: 0" in detailed[1]

    assert await naq("job-control", sid, "pause") == [f"pause: {sid}"]
    [paused] = await naq("list-scheduled", "--status", "paused")
    assert paused.split()[:2] == [sid, "paused"]
    [active] = await naq("list-scheduled", "--status", "active")
    assert active.startswith(other + " ")
    error = await naq("job-control", sid, "pause", code=1)
    assert any(f"schedule {sid} was not changed (pause)" in line for line in error)

    assert await naq("job-control", sid, "resume") == [f"resume: {sid}"]
    [resumed] = await naq("list-scheduled", "--id", sid)
    assert resumed.split()[:2] == [sid, "active"]

    [line] = await naq(
        "job-control", sid, "reschedule", "--interval", "60", "--repeat", "2",
        "--next-run", "2031-01-02T03:04:05",
    )  # fmt: skip
    assert "every 60s (2 left)" in line
    assert line.endswith("next 2031-01-02T03:04:05+00:00")
    [listed] = await naq("list-scheduled", "--id", sid)
    assert listed == line

    assert await naq("job-control", sid, "cancel") == [f"cancel: {sid}"]
    [left] = await naq("list-scheduled")
    assert left.startswith(other + " ")
    assert await naq("list-scheduled", "--id", sid) == ["no schedules"]
    error = await naq("job-control", sid, "resume", code=1)
    assert any(sid in line for line in error), error
    print(f"\n[cli] list-scheduled after reschedule: {line}")
