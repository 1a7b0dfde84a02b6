"""The fault suite: real faults (SIGKILL, SIGSTOP, a restarted server, a full disk,
malformed input) injected into real processes, each scenario bounded in jobs and time.

Every scenario adds a row to one report (scenario, jobs, lost, run twice, recovery
time), printed at the end of the run and written to ``faults-report.md``. Counting
is done by the jobs themselves (``tests.faults.jobs`` appends to a ledger) and by
the results store, so "lost" means "never ran or has no final record", and "run
twice" means "its effect happened twice", whatever naq believes about it.

Run with ``make faults`` (the whole suite) or ``make faults-quick`` (the scenarios
that also run in CI). Both select the ``faults`` marker, which the default suite
leaves out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from naq.errors import ResultTimeout
from naq.producer.queue import Queue
from naq.state.record import ResultRecord
from naq.state.store import iter_records
from tests.procs import NAQ_SUPERVISE, Proc, Spawn

HERE = Path(__file__).resolve().parent
REPORT = HERE.parent.parent / "faults-report.md"


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    jobs: int
    lost: int
    twice: int
    recovery: str
    note: str = ""


ROWS: list[Row] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.faults)


def table() -> str:
    lines = [
        "| scenario | jobs | lost | run twice | recovery | note |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [
        f"| {r.scenario} | {r.jobs} | {r.lost} | {r.twice} | {r.recovery} | {r.note} |"
        for r in ROWS
    ]
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    REPORT.write_text("# Fault suite report\n\n" + table())
    terminalreporter.section("fault suite report")
    terminalreporter.write(table())
    terminalreporter.write_line(f"(written to {REPORT})")


def report(row: Row) -> None:
    ROWS.append(row)


class Ledger:
    """The file the jobs of one scenario append their numbers to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.touch()

    def __str__(self) -> str:
        return str(self.path)

    def counts(self) -> Counter[int]:
        return Counter(int(line) for line in self.path.read_text().split())

    def done(self) -> int:
        return sum(self.counts().values())

    def started(self) -> list[tuple[int, int]]:
        """(job number, pid) of each run that wrote a start line."""
        path = Path(f"{self.path}.started")
        if not path.exists():
            return []
        return [
            (int(n), int(pid))
            for n, pid in (line.split() for line in path.read_text().splitlines() if line)
        ]

    async def reach(self, count: int, timeout: float, what: str = "") -> float:
        """Wait until ``count`` runs are recorded; returns the seconds it took."""
        started = time.monotonic()
        while self.done() < count:
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{what or 'jobs'}: {self.done()} of {count} runs recorded after {timeout}s"
                )
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    async def grows(self, timeout: float) -> float:
        """Seconds until one more run is recorded than now."""
        return await self.reach(self.done() + 1, timeout, "the next run")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger")


async def enqueue_marks(
    queue: Queue, ledger: Ledger, total: int, func: Callable[..., Any], *args: Any, **options: Any
) -> dict[str, int]:
    """Enqueue ``func(ledger, n, *args)`` for n in ``range(total)``; job id -> n."""
    enqueued = await queue.enqueue_many(
        [(func, (str(ledger), n, *args)) for n in range(total)], **options
    )
    return {job.job_id: n for n, job in enumerate(enqueued)}


@dataclass(frozen=True, slots=True)
class Audit:
    jobs: int
    lost: int
    twice: int
    records: dict[str, ResultRecord]
    missing: list[str]
    """Job ids lost: "{id} #{n}: {why}", for the failure message."""

    def why(self) -> str:
        return "\n".join(self.missing[:20])


async def audit(queue: Queue, ids: dict[str, int], ledger: Ledger, timeout: float) -> Audit:
    """Wait for every job's final record; count the lost (no finished record, or never
    ran) and those run more than once."""
    client = await queue.connection()
    records: dict[str, ResultRecord] = {}
    waited = f"no final record within {timeout}s"
    try:
        async for record in iter_records(client, queue.layout, list(ids), timeout):
            records[record.job_id] = record
    except ResultTimeout as exc:  # those without a record are counted as lost below
        waited = str(exc)
    counts = ledger.counts()
    missing = []
    for job_id, n in ids.items():
        record = records.get(job_id)
        if counts[n] == 0 or record is None or record.status != "finished":
            state = waited if record is None else f"{record.status}: {record.error}"
            missing.append(f"{job_id} #{n}: ran {counts[n]} time(s), {state}")
    twice = sum(1 for n in ids.values() if counts[n] > 1)
    return Audit(len(ids), len(missing), twice, records, missing)


def rss(pid: int) -> int:
    """Resident memory of ``pid`` and its children, in bytes."""
    proc = psutil.Process(pid)
    return proc.memory_info().rss + sum(
        child.memory_info().rss for child in proc.children(recursive=True)
    )


SuperviseAt = Callable[..., Proc]


@pytest.fixture
def supervise_at(spawn: Spawn, namespace: str) -> SuperviseAt:
    """``naq-supervise`` against any server URL(s), the test's namespace, fast heartbeats."""

    def start(url: str, *args: str, **env: str) -> Proc:
        return spawn(
            NAQ_SUPERVISE,
            "--nats-url", url,
            "--namespace", namespace,
            "--heartbeat-interval", "0.5",
            "--pull-expires", "2",
            *args,
            **env,
        )  # fmt: skip

    return start


class Progress:
    """The ledger's count sampled every 20 ms while a scenario runs, to measure how long
    processing stood still after a fault."""

    EVERY = 0.02

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Progress:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _sample(self) -> None:
        while True:
            self._samples.append((time.monotonic(), self._ledger.done()))
            await asyncio.sleep(self.EVERY)

    def stall_after(self, moment: float) -> float:
        """The longest time after ``moment`` (a fault) during which no run was recorded."""
        longest, last_growth, last_count = 0.0, moment, None
        for at, count in self._samples:
            if at < moment:
                last_count = count
                continue
            if last_count is not None and count > last_count:
                longest = max(longest, at - last_growth)
                last_growth = at
            last_count = count
        return longest
