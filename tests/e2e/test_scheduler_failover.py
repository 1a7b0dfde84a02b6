"""The scheduler role across real ``naq scheduler`` processes: one leader, takeover after
SIGKILL within the lease, no fire lost or doubled across a takeover, a frozen leader
stepping down when it wakes; and ``naq list-scheduled`` / ``naq job-control``.

Leases are short (TTL 2 s, renewed every 0.5 s). Waiting follows the server (the
lease key's watch, stream and consumer counts, the schedules KV); the only fixed
waits are where time itself is tested: a lease held across its TTL, a SIGSTOP.
Measured figures are printed; ``pytest -s`` shows them.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from typing import Any

import pytest
from nats.js import JetStreamContext

from naq.producer.schedules import list_schedules
from naq.scheduler import run_job_id
from naq.state.schedules import DONE
from tests.conftest import until
from tests.e2e.conftest import Spawn
from tests.schedulers import (
    FIRED,
    LEADS,
    MARGIN,
    RENEW,
    STEPPED_DOWN,
    TAKEOVER_BOUND,
    TTL,
    StartSchedulers,
    by_pid,
    holders_during,
    job_count,
    job_subjects,
    leader_other_than,
    make_schedules,
    runs_by_schedule,
    start_schedulers,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def schedulers(
    spawn: Spawn, js: JetStreamContext, nats_url: str, namespace: str
) -> StartSchedulers:
    """Start ``n`` ``naq scheduler`` processes; return once every one watches the lease."""
    return start_schedulers(spawn, js, nats_url, namespace)


@pytest.mark.parametrize(("n", "via_env"), [(2, False), (3, True)], ids=["two", "three"])
async def test_one_leader_and_a_standby_takes_over_after_sigkill(
    n: int,
    via_env: bool,
    schedulers: StartSchedulers,
    js: JetStreamContext,
    namespace: str,
    target: dict[str, str],
) -> None:
    """Of ``n`` schedulers exactly one leads, and keeps leading across its TTL; each time
    the leader is SIGKILLed a standby leads within TTL + one renew interval."""
    procs = await schedulers(n, via_env=via_env)
    record = await leader_other_than(js, namespace, set(), 10)
    leader = by_pid(procs, record["pid"])
    await leader.line(LEADS)
    # The lease is the subject: over 1.5 TTLs of renewals no one else takes it.
    assert await holders_during(js, namespace, TTL * 1.5) == {record["id"]}
    assert [p for p in procs if p.matching(LEADS)] == [leader]

    alive = list(procs)
    dead: set[int] = set()
    while len(alive) > 1:
        leader.send(signal.SIGKILL)
        killed = time.monotonic()
        dead.add(leader.pid)
        alive.remove(leader)
        record = await leader_other_than(js, namespace, dead, TAKEOVER_BOUND + 5, procs)
        takeover = time.monotonic() - killed
        print(
            f"\n[{n} schedulers] SIGKILL of the leader -> standby leads after {takeover:.2f}s"
            f" (bound {TAKEOVER_BOUND:.1f}s = TTL {TTL:g} + renew {RENEW:g} + {MARGIN:g})"
        )
        assert takeover <= TAKEOVER_BOUND
        leader = by_pid(alive, record["pid"])
        match = await leader.line(LEADS)
        assert match["id"] == record["id"]
        assert [p for p in alive if p.matching(LEADS)] == [leader], "two standbys took over"


async def test_no_fire_lost_or_doubled_across_a_sigkilled_leader(
    schedulers: StartSchedulers,
    nc: Any,
    js: JetStreamContext,
    namespace: str,
    target: dict[str, str],
) -> None:
    """100 schedules x 4 runs (every second) fired by three schedulers; the leader is
    SIGKILLed mid-run. Every schedule runs exactly 4 times, each run once, with ids
    ``{schedule}-{fire}`` on the schedule's grid, the first at its first fire time."""
    n_schedules, repeat = 100, 4
    expected_total = n_schedules * repeat
    procs = await schedulers(3)
    record = await leader_other_than(js, namespace, set(), 10)
    first_leader = by_pid(procs, record["pid"])
    started = time.monotonic()
    first = await make_schedules(n_schedules, target, interval=1, repeat=repeat)

    # SIGKILL from the subscription callback the moment run 150 is published: the
    # leader is mid-round, between publishing runs and recording them.
    seen = 0
    killed_at = asyncio.get_running_loop().create_future()

    async def on_run(_msg: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == expected_total * 3 // 8:
            first_leader.send(signal.SIGKILL)
            killed_at.set_result(time.monotonic())

    sub = await nc.subscribe(f"{namespace}.jobs.>", cb=on_run)
    try:
        killed = await asyncio.wait_for(killed_at, 15)
    finally:
        await sub.unsubscribe()
    at_kill = await job_count(js, namespace)
    record = await leader_other_than(js, namespace, {first_leader.pid}, TAKEOVER_BOUND + 5, procs)
    takeover = time.monotonic() - killed
    assert takeover <= TAKEOVER_BOUND

    async def all_done() -> bool:
        found = await list_schedules(**target)
        return len(found) == n_schedules and all(s.status == DONE for s in found)

    await until(all_done, 20, "every schedule to finish its runs")
    elapsed = time.monotonic() - started
    subjects = await job_subjects(js, namespace)
    runs = runs_by_schedule(subjects, namespace)
    fired_lines = sum(len(p.matching(FIRED)) for p in procs)
    print(
        f"\n[fires] {len(subjects)} runs of {n_schedules} schedules in {elapsed:.1f}s;"
        f" leader SIGKILLed at run {expected_total * 3 // 8} ({at_kill} in the stream after);"
        f" standby led after {takeover:.2f}s;"
        f" {fired_lines} publishes logged, {fired_lines - len(subjects)} dropped as duplicates"
    )
    assert all(count == 1 for count in subjects.values()), "a run was published twice"
    assert set(runs) == set(first), "a schedule never ran"
    for sid, fires in runs.items():
        assert len(fires) == repeat, (sid, fires)
        assert fires[0] == int(first[sid]), (sid, fires, first[sid])
        assert all(b > a for a, b in itertools.pairwise(fires)), (sid, fires)
    records = {s.schedule_id: s for s in await list_schedules(**target)}
    for sid, fires in runs.items():
        assert records[sid].runs == repeat
        assert records[sid].repeat == 0
        assert records[sid].last_run == fires[-1]
    expected_subjects = {
        f"{namespace}.jobs.default.{run_job_id(sid, f)}"
        for sid, fires in runs.items()
        for f in fires
    }
    assert expected_subjects == set(subjects)
    assert len(subjects) == expected_total


async def test_a_frozen_leader_steps_down_without_firing_when_it_wakes(
    schedulers: StartSchedulers,
    js: JetStreamContext,
    namespace: str,
    target: dict[str, str],
) -> None:
    """SIGSTOP the leader past its lease while schedules are due every second; a standby
    takes over; SIGCONT the old leader: it says it lost the lease and fires nothing."""
    n_schedules = 20
    procs = await schedulers(2)
    record = await leader_other_than(js, namespace, set(), 10)
    old = by_pid(procs, record["pid"])
    [new] = [p for p in procs if p is not old]
    await make_schedules(n_schedules, target, interval=1)

    async def count_at_least(n: int) -> bool:
        return await job_count(js, namespace) >= n

    await until(lambda: count_at_least(2 * n_schedules), 10, "two rounds of fires")
    assert old.matching(FIRED)

    old.send(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        record = await leader_other_than(js, namespace, {old.pid}, TAKEOVER_BOUND + 5, procs)
        takeover = time.monotonic() - stopped
        assert record["pid"] == new.pid
        assert takeover <= TAKEOVER_BOUND
        # The new leader fires a full round while the old one is still frozen.
        taken = await job_count(js, namespace)
        await until(lambda: count_at_least(taken + n_schedules), 10, "fires by the new leader")
    finally:
        mark = len(old.lines["stderr"])
        old.send(signal.SIGCONT)
    frozen = time.monotonic() - stopped

    match = await old.line(STEPPED_DOWN, timeout=5)
    woke = await job_count(js, namespace)
    await until(lambda: count_at_least(woke + 2 * n_schedules), 10, "two more rounds")
    after = old.lines["stderr"][mark:]
    fired_after = [line for line in after if "fired " in line]
    print(
        f"\n[sigstop] leader frozen {frozen:.2f}s; standby led after {takeover:.2f}s;"
        f" on waking the old leader logged {match[0]!r} and fired {len(fired_after)} runs;"
        f" {woke} runs when it woke"
    )
    assert fired_after == []
    assert old.popen.poll() is None, "the old leader exited instead of standing by"
    current = await leader_other_than(js, namespace, {old.pid}, 2)
    assert current["pid"] == new.pid
    subjects = await job_subjects(js, namespace)
    assert all(count == 1 for count in subjects.values())
