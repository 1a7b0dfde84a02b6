"""The paged reads the dashboard makes: by stream sequence, each entry once, filters
applied, and never more than a bounded scan per page (what keeps a page of 100,000
failed jobs as fast as a page of 100; bench/dashboard.py measures it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from naq.dashboard import app as views
from naq.dashboard.app import Dashboard
from naq.dashboard.live import Rates
from naq.dashboard.show import mask_secrets
from naq.producer.api import connected
from naq.producer.failed import failed_page
from naq.producer.info import list_workers, records_page, stored_jobs_page
from naq.queue import Queue
from naq.settings import Settings
from naq.transport.streams import page_back
from tests import jobs
from tests.conftest import until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from dashboard import QUEUES, fill  # the benchmark's bulk filler


async def test_failed_pages_cover_every_entry_once_newest_first(target: dict[str, str]) -> None:
    client, layout = await connected(**target)
    await fill(client, layout, failed=2500, finished=0)
    seqs: list[int] = []
    before = None
    while True:
        page = await failed_page(before=before, limit=400, **target)
        seqs += [entry.seq for _, entry in page.items]
        if page.older is None:
            break
        before = page.older
    assert seqs == list(range(2500, 0, -1))

    one_queue = await failed_page("reports", limit=1000, **target)
    assert {entry.queue for _, entry in one_queue.items} == {"reports"}
    assert len(one_queue.items) == 625
    rare = await failed_page(function="tasks:rare", limit=50, **target)
    assert [entry.job_id for _, entry in rare.items] == [f"f{i:07d}" for i in range(2400, -1, -100)]
    assert rare.older is None


async def test_a_page_scans_a_bounded_number_of_sequences(target: dict[str, str]) -> None:
    client, layout = await connected(**target)
    await fill(client, layout, failed=2500, finished=0)
    page = await page_back(
        client, layout.failed_stream, layout.failed_subject(None), lambda _: None, max_scan=500
    )
    assert page.items == []
    assert page.scanned == 500
    assert page.older == 2001  # where the next read goes on


async def test_record_pages_by_status_and_queue(target: dict[str, str]) -> None:
    client, layout = await connected(**target)
    await fill(client, layout, failed=0, finished=300)
    ids: list[str] = []
    before = None
    while True:
        page = await records_page(("finished",), before=before, limit=70, **target)
        ids += [record.job_id for _, record in page.items]
        if page.older is None:
            break
        before = page.older
    assert ids == [f"r{i:07d}" for i in range(299, -1, -1)]
    billing = await records_page(("finished",), "billing", limit=500, **target)
    assert len(billing.items) == 300 // len(QUEUES)
    assert (await records_page(("failed",), limit=10, **target)).items == []


async def test_waiting_jobs_page_oldest_first_with_a_function_filter(
    settings: Settings, target: dict[str, str]
) -> None:
    async with Queue("parked", settings=settings) as q:
        added = [(await q.enqueue(jobs.add, i, i)).job_id for i in range(5)]
        echoed = (await q.enqueue(jobs.echo, "x")).job_id
    first, after = await stored_jobs_page("parked", limit=4, **target)
    rest, end = await stored_jobs_page("parked", after=after or 0, limit=4, **target)
    assert [j.job_id for j in first + rest] == [*added, echoed]
    assert end is None
    only, _ = await stored_jobs_page("parked", function="tests.jobs:echo", **target)
    assert [(j.job_id, j.function, j.queue) for j in only] == [
        (echoed, "tests.jobs:echo", "parked")
    ]


async def test_records_and_heartbeats_name_the_function(
    settings: Settings, target: dict[str, str], start_supervisor: Any, tmp_path: Path
) -> None:
    """A record keeps its job's function after the message is gone, and a heartbeat
    names the function of each running job: the jobs page filters on both."""
    sup = await start_supervisor(["named"], executor="thread")
    gate, started = tmp_path / "gate", tmp_path / "started"
    async with Queue("named", settings=settings) as q:
        added = await q.enqueue(jobs.add, 1, 2)
        assert await q.fetch_result(added.job_id, timeout=10) == 3
        held = await q.enqueue(jobs.wait_for_file, str(gate), str(started))
        running = await until_running(target, held.job_id)
        assert running["function"] == "tests.jobs:wait_for_file"
        gate.touch()
        await q.fetch_result(held.job_id, timeout=10)
    page = await records_page(("finished",), function="tests.jobs:add", **target)
    assert [(r.job_id, r.function) for _, r in page.items] == [(added.job_id, "tests.jobs:add")]
    dash = Dashboard(settings, mask_secrets, Rates(**target))
    for function, expected in (("tests.jobs:add", [added.job_id]), ("tests.jobs:echo", [])):
        shown = await views.jobs(dash, {"state": "finished", "function": function})
        assert [row["job_id"] for row in shown["rows"]] == expected
    shown = await views.jobs(dash, {"state": "finished"})
    assert {(row["job_id"], row["function"]) for row in shown["rows"]} == {
        (added.job_id, "tests.jobs:add"),
        (held.job_id, "tests.jobs:wait_for_file"),
    }
    assert sup.counters.processed == 2


async def until_running(target: dict[str, str], job_id: str) -> dict[str, Any]:
    """The heartbeat's entry for a running job, once a heartbeat lists it."""
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        found[:] = [
            run
            for worker in await list_workers(**target)
            for run in worker.get("running", ())
            if run["job_id"] == job_id
        ]
        return bool(found)

    await until(listed, 10, f"a heartbeat listing {job_id}")
    return found[0]
