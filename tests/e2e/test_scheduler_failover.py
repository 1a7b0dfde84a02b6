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
import json
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from naq.producer.schedules import list_schedules, schedule
from naq.scheduler import run_job_id
from naq.state.schedules import DONE
from naq.transport.names import LEASE_KEY, Layout
from tests.conftest import first_json
from tests.e2e.conftest import NAQ, Proc, Spawn, stream_name
from tests.jobs import add

pytestmark = pytest.mark.e2e

TTL = 2.0
RENEW = 0.5
MARGIN = 1.0
TAKEOVER_BOUND = TTL + RENEW + MARGIN
LEADS = r"scheduler (?P<id>\S+) is the leader"
FIRED = r"fired (?P<job>\S+) \(schedule"
STEPPED_DOWN = r"lost its lease|lease not certain, stepping down"


StartSchedulers = Callable[..., Awaitable[list[Proc]]]


@pytest.fixture
def schedulers(
    spawn: Spawn, js: JetStreamContext, nats_url: str, namespace: str
) -> StartSchedulers:
    """Start ``n`` ``naq scheduler`` processes; return once every one watches the lease."""

    async def start(n: int, via_env: bool = False) -> list[Proc]:
        if via_env:
            lease_args: list[str] = []
            env = {
                "NAQ_SCHEDULER_LOCK_TTL": str(TTL),
                "NAQ_SCHEDULER_LOCK_RENEW_INTERVAL": str(RENEW),
            }
        else:
            lease_args = [
                "--scheduler-lock-ttl", str(TTL),
                "--scheduler-lock-renew-interval", str(RENEW),
            ]  # fmt: skip
            env = {}
        args = [
            NAQ, "scheduler",
            "--nats-url", nats_url,
            "--namespace", namespace,
            "--log-level", "DEBUG",
            *lease_args,
        ]  # fmt: skip
        procs = [spawn(*args, **env) for _ in range(n)]
        # Each process watches the lease key before it contends: one consumer each.
        leader_stream = f"KV_{Layout(namespace).leader_bucket}"
        await until(
            lambda: consumers(js, leader_stream, n), 15, f"{n} schedulers watching the lease"
        )
        return procs

    return start


async def consumers(js: JetStreamContext, stream: str, n: int) -> bool:
    info = await js.stream_info(stream)
    return info.state.consumer_count >= n


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def lease_kv(js: JetStreamContext, namespace: str) -> KeyValue:
    return await js.key_value(Layout(namespace).leader_bucket)


async def leader_other_than(
    js: JetStreamContext,
    namespace: str,
    pids: set[int],
    timeout: float,
    procs: list[Proc] | None = None,
) -> dict[str, Any]:
    """The first lease record (through a watch) held by a process not in ``pids``."""
    kv = await lease_kv(js, namespace)
    record = await first_json(kv, LEASE_KEY, lambda r: r["pid"] not in pids, timeout)
    if record is not None:
        return record
    outputs = "\n".join(p.output() for p in procs or [])
    raise AssertionError(f"no leader other than {pids} within {timeout}s\n{outputs}")


async def holders_during(js: JetStreamContext, namespace: str, seconds: float) -> set[str]:
    """Every holder id written to the lease key while watching it for ``seconds``."""
    watcher = await (await lease_kv(js, namespace)).watch(LEASE_KEY)
    deadline = time.monotonic() + seconds
    seen: set[str] = set()
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                entry = await watcher.updates(timeout=remaining)
            except TimeoutError:
                break
            if entry is not None and entry.value:
                seen.add(json.loads(entry.value)["id"])
    finally:
        await watcher.stop()
    return seen


def by_pid(procs: list[Proc], pid: int) -> Proc:
    [proc] = [p for p in procs if p.pid == pid]
    return proc


async def job_subjects(js: JetStreamContext, namespace: str) -> dict[str, int]:
    """Messages per job subject in the job stream (nothing consumes them here)."""
    info = await js.stream_info(stream_name(namespace), subjects_filter=f"{namespace}.jobs.>")
    return dict(info.state.subjects or {})


async def job_count(js: JetStreamContext, namespace: str) -> int:
    info = await js.stream_info(stream_name(namespace), subjects_filter=f"{namespace}.jobs.>")
    return info.state.messages


async def make_schedules(n: int, target: dict[str, str], **spec: Any) -> dict[str, float]:
    """``n`` schedules of ``add``; their ids and first fire times."""
    ids = await asyncio.gather(
        *(schedule(add, i, i, schedule_id=f"s{i:03d}", **spec, **target) for i in range(n))
    )
    first = {s.schedule_id: s.next_run for s in await list_schedules(**target)}
    assert set(first) == set(ids)
    return first


def runs_by_schedule(subjects: dict[str, int], namespace: str) -> dict[str, list[int]]:
    """Fire times per schedule id, from subjects ``{ns}.jobs.default.{sid}-{fire}``."""
    prefix = f"{namespace}.jobs.default."
    runs: dict[str, list[int]] = {}
    for subject in subjects:
        assert subject.startswith(prefix), subject
        sid, _, fire = subject.removeprefix(prefix).rpartition("-")
        runs.setdefault(sid, []).append(int(fire))
    return {sid: sorted(fires) for sid, fires in runs.items()}


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
