"""How often a supervisor asks for jobs (``Supervisor.free``, ``_pull_at_least``).

Short jobs in hand keep the slots busy, so a supervisor waits for room for a batch
instead of sending a pull of one for each job that ends; with long jobs (the
look-ahead closed) every slot that frees is asked for at once, so none idles
waiting for a batch that would take a long job's time to come."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from naq import Queue
from naq.supervisor import Supervisor
from naq.transport.connect import flush
from naq.transport.names import Layout, pull_subject
from tests import jobs
from tests.conftest import StartSupervisor, until
from tests.integration.test_deliveries import _record_until, _started

JOBS = 300


class Pulls:
    """The pull requests sent for one queue's consumer, as another client hears them."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def heard(self, msg: Msg) -> None:
        self.batches.append(int(json.loads(msg.data)["batch"]))


async def _listen_to_pulls(nc: Any, namespace: str, queue: str = "default") -> Pulls:
    layout = Layout(namespace)
    pulls = Pulls()
    await nc.subscribe(pull_subject(layout.stream, layout.consumer(queue)), cb=pulls.heard)
    await flush(nc)
    return pulls


async def test_short_jobs_are_pulled_in_batches_not_one_request_per_job(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    """300 no-op jobs on 4 threads with a look-ahead of 4 per slot (room for 20):
    without the threshold each job that ends frees a place or a few and a pull goes
    out for them (measured: 65-70 pulls, most of 1 to 8 jobs, even with the thread
    pool's outcomes handed back in batches); with it, about 27 of 10 or more."""
    slots, lookahead = 4, 4
    half_the_room = slots * (1 + lookahead) // 2
    await queue.enqueue_many([(jobs.noop, ()) for _ in range(JOBS)])
    pulls = await _listen_to_pulls(nc, namespace)
    sup = await start_supervisor(executor="thread", concurrency=slots, lookahead=lookahead)
    await asyncio.wait_for(sup.wait_until(lambda c: c.processed >= JOBS), 60)
    await flush(nc)
    assert (sup.counters.processed, sup.counters.failed) == (JOBS, 0)
    seen = f"{len(pulls.batches)} pulls for {JOBS} jobs, batches {pulls.batches}"
    assert len(pulls.batches) < JOBS / 6, seen
    # A pull of one is an idle puller's probe (nothing came of its last request);
    # any other asks for half the room at least.
    assert all(batch == 1 or batch >= half_the_room for batch in pulls.batches), seen


def _gates(tmp_path: Path, count: int) -> list[tuple[Path, Path]]:
    return [(tmp_path / f"gate-{i}", tmp_path / f"started-{i}") for i in range(count)]


async def test_with_long_jobs_every_free_slot_is_asked_for(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    """Jobs longer than ``lookahead_wait`` close the look-ahead; from then on a slot
    that frees is pulled for alone, though one job is far below a batch (half the
    room, 10 here): the job waiting in the stream starts while the other three slots
    still hold their long jobs."""
    slots = 4
    pulls = await _listen_to_pulls(nc, namespace)
    sup: Supervisor = await start_supervisor(
        executor="thread", concurrency=slots, lookahead=4, lookahead_wait=0.3, pull_expires=0.5
    )
    gates = _gates(tmp_path, slots + 2)
    try:
        long = [
            await queue.enqueue(jobs.wait_for_file, str(gate), str(started), 60.0)
            for gate, started in gates[:slots]
        ]
        for _, started in gates[:slots]:  # every slot got a job
            await _started(started)
        assert len(sup.running_jobs()) == slots

        # One more: held in the look-ahead, handed back after lookahead_wait, and the
        # look-ahead closes while its slots hold long jobs.
        gate, started = gates[slots]
        behind = await queue.enqueue(jobs.wait_for_file, str(gate), str(started), 60.0)
        handed = await _record_until(nc, namespace, behind.job_id, lambda r: True, 10)
        assert handed.status == "interrupted", handed
        assert not sup.executor.ahead_open

        async def nothing_asked() -> bool:
            """No slot or place free, and no pull request open (its credits would
            count against ``free``): a job can reach the supervisor only by a new pull."""
            return sup.jobs.room() == 0 and sup.free() == 0

        await until(nothing_asked, 10, "the open pull request to expire")
        await flush(nc)
        asked = len(pulls.batches)

        # A slot frees: the job waiting in the stream is asked for alone and starts,
        # the other three slots still busy.
        gates[0][0].touch()
        assert isinstance(await queue.fetch_result(long[0].job_id, timeout=20), int)
        await _started(started)
        assert sorted(sup.running_jobs()) == sorted(
            [job.job_id for job in long[1:]] + [behind.job_id]
        )
        await flush(nc)
        assert pulls.batches[asked:] == [1]  # one pull, for the one free slot

        # And again for the next slot that frees, a job enqueued while all are busy.
        gate, started = gates[slots + 1]
        last = await queue.enqueue(jobs.wait_for_file, str(gate), str(started), 60.0)
        gates[1][0].touch()
        assert isinstance(await queue.fetch_result(long[1].job_id, timeout=20), int)
        await _started(started)
        assert len(sup.running_jobs()) == slots
    finally:
        for gate, _ in gates:
            gate.touch()
    for job in [*long[2:], behind, last]:
        assert isinstance(await queue.fetch_result(job.job_id, timeout=20), int)
