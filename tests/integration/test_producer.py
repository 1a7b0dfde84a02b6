"""The producer API against a real server."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import naq
from naq import ConfigurationError, Queue, Settings
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor


async def test_enqueue_many_returns_jobs_in_order(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    created = await queue.enqueue_many(
        [(jobs.add, (i, 1)) for i in range(500)] + [(jobs.echo, (1,), {"k": "v"})]
    )
    assert len({j.job_id for j in created}) == 501
    await start_supervisor(concurrency=8)
    results = await queue.fetch_results([j.job_id for j in created], timeout=30)
    assert [results[j.job_id] for j in created[:500]] == [i + 1 for i in range(500)]
    assert results[created[-1].job_id] == [[1], {"k": "v"}]


async def test_options_are_not_passed_to_the_function(
    queue: Queue, start_supervisor: StartSupervisor
) -> None:
    await start_supervisor()
    job = await queue.enqueue(jobs.echo, 1, timeout=5, result_ttl=60, max_retries=1, x=2)
    assert await queue.fetch_result(job.job_id, timeout=10) == [[1], {"x": 2}]
    # enqueue_call passes keywords that clash with option names to the function
    job = await queue.enqueue_call(jobs.echo, (1,), {"timeout": 3}, result_ttl=60)
    assert await queue.fetch_result(job.job_id, timeout=10) == [[1], {"timeout": 3}]


async def test_invalid_options_fail_in_the_producer(queue: Queue) -> None:
    with pytest.raises(ConfigurationError, match="max_retries"):
        await queue.enqueue(jobs.noop, max_retries=-1)
    with pytest.raises(ConfigurationError, match="retry_delay"):
        await queue.enqueue(jobs.noop, retry_delay="soon")
    with pytest.raises(ConfigurationError, match="job_id"):
        await queue.enqueue(jobs.noop, job_id="a.b")
    with pytest.raises(ConfigurationError, match="queue"):
        Queue("no.dots")


async def test_purge_counts_removed_jobs(queue: Queue, nc: Any, namespace: str) -> None:
    await queue.enqueue_many([(jobs.noop, ()) for _ in range(7)])
    assert await queue.purge() == 7
    info = await nc.jetstream().stream_info(Layout(namespace).stream)
    assert info.state.messages == 0


async def test_result_ttl_zero_keeps_no_result(
    queue: Queue, start_supervisor: StartSupervisor, tmp_path: Any
) -> None:
    await start_supervisor()
    marks = str(tmp_path / "runs")
    job = await queue.enqueue(jobs.record_run, marks, result_ttl=0)
    after = await queue.enqueue(jobs.add, 1, 1)  # one slot at a time would also do
    assert await queue.fetch_result(after.job_id, timeout=10) == 2
    with pytest.raises(naq.JobNotFound):
        await queue.fetch_result(job.job_id)


@pytest.mark.parametrize("job_id", ["user:42", "order#7", "naïve", "ops@example"])
async def test_job_ids_outside_nats_pys_key_alphabet_work_throughout(
    queue: Queue, start_supervisor: StartSupervisor, job_id: str
) -> None:
    """nats-py's KV methods refuse keys outside ``[-/_=.a-zA-Z0-9]``; the server takes
    any subject token, and naq accepts such ids at enqueue, so every read and write
    of a job's keys must take them too."""
    first = await queue.enqueue(jobs.add, 1, 2, job_id=job_id)
    then = await queue.enqueue(jobs.add, 3, 4, job_id=f"{job_id}-then", depends_on=job_id)
    assert (await queue.status(job_id)).status == "queued"
    assert (await queue.status(then.job_id)).waiting_for == (job_id,)
    await start_supervisor()
    assert await queue.fetch_result(first.job_id, timeout=10) == 3
    assert await queue.fetch_results([job_id, then.job_id], timeout=10) == {
        job_id: 3,
        then.job_id: 7,
    }
    assert await queue.fetch_result(job_id) == 3
    assert (await queue.status(job_id)).status == "finished"
    assert await queue.cancel(job_id) is False


def test_sync_api_from_many_threads(
    settings: Settings, start_supervisor_sync: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One connection and one loop thread serve every producing thread."""
    url, ns = settings.url, settings.namespace
    monkeypatch.setenv("NAQ_NAMESPACE", ns)
    ids: list[str] = []
    lock = threading.Lock()

    def produce(n: int) -> None:
        for i in range(n):
            job = naq.enqueue_sync(jobs.add, i, 1, nats_url=url)
            with lock:
                ids.append(job.job_id)

    threads = [threading.Thread(target=produce, args=(100,)) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(ids)) == 400
        with start_supervisor_sync():
            results = naq.fetch_job_results_sync(ids, timeout=30, nats_url=url)
            assert sorted(results.values()) == sorted(i + 1 for i in range(100) for _ in range(4))
            assert 1 <= naq.fetch_job_result_sync(ids[0], timeout=5, nats_url=url) <= 100
    finally:
        naq.close_sync_connections()
