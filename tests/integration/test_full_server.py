"""A full server loses nothing: with JetStream storage exhausted, producers get a
clear error and supervisors hold the outcomes they cannot record, pulling nothing
more; once space returns every job ends once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from naq import Queue, ServerFull, Settings
from naq.executors import load_executor
from naq.supervisor.supervisor import Supervisor
from naq.transport.names import Layout
from naq.transport.server import EmbeddedServer
from tests import jobs
from tests.conftest import FILLER, fill_store, run_until_ready

JOBS = 12


async def test_jobs_enqueued_before_the_store_filled_each_end_once_after_it_is_freed(
    small_store: EmbeddedServer, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.replace(nats_url=small_store.url, concurrency=2)
    runs = tmp_path / "runs"
    nc = await nats.connect(small_store.url)
    try:
        async with Queue(settings=settings) as queue:
            enqueued = [await queue.enqueue(jobs.record_run, str(runs)) for _ in range(JOBS)]
            await fill_store(nc)
            with pytest.raises(ServerFull, match="storage is full"):
                await queue.enqueue(jobs.noop)

            sup = Supervisor(settings, load_executor("asyncio")(2, settings))
            task = await run_until_ready(sup)
            await asyncio.wait_for(sup.jobs.settler.full.wait(), 20)
            # Holding what it cannot record, it takes no more than it has room for: the
            # jobs in hand when the first write was refused (slots and look-ahead), and
            # those pulled as the first outcomes freed their slots.
            room = settings.concurrency * (1 + settings.lookahead)
            assert len(runs.read_text().splitlines()) <= room + settings.concurrency
            info = await nc.jetstream().stream_info(Layout(settings.namespace).stream)
            assert info.state.messages == JOBS, "a job was acked with its outcome unrecorded"

            await nc.jetstream().delete_stream(FILLER)
            ids = [job.job_id for job in enqueued]
            results = await queue.fetch_results(ids, timeout=60)
            assert sorted(results) == sorted(ids)
            for job_id in ids:
                status = await queue.status(job_id)
                assert (status.status, status.attempt) == ("finished", 1)
            assert len(runs.read_text().splitlines()) == JOBS, "a job ran twice"
            await asyncio.wait_for(sup.wait_until(lambda c: c.processed == JOBS), 10)
            assert sup.counters.failed == 0
            sup.request_stop()
            assert await asyncio.wait_for(task, 15) == 0
        info = await nc.jetstream().stream_info(Layout(settings.namespace).stream)
        assert info.state.messages == 0
        failed = await nc.jetstream().stream_info(Layout(settings.namespace).failed_stream)
        assert failed.state.messages == 0
    finally:
        await nc.close()
