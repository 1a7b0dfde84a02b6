"""No message naq builds can break its connection: on a server with a small
max_payload, a big job that fails for good lands whole in the failed stream and the
supervisor goes on; a result over the limit fails its job at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from naq import JobFailed, PayloadTooLarge, Queue, Settings
from naq.executors import load_executor
from naq.producer.failed import get_failed
from naq.state.store import read_record
from naq.supervisor.supervisor import Supervisor
from naq.transport.connect import Client, connect
from naq.transport.names import Layout
from naq.transport.server import EmbeddedServer, free_port
from tests import jobs
from tests.conftest import run_until_ready

MAX_PAYLOAD = 64 * 1024


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    conf = tmp_path / "nats.conf"
    conf.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    with EmbeddedServer(free_port(), tmp_path / "js", extra_args=["-c", str(conf)]) as server:
        yield server


@pytest.fixture
def small_settings(small_server: EmbeddedServer, settings: Settings) -> Settings:
    """The tests' usual settings, on the server with the small ``max_payload``."""
    return settings.replace(nats_url=small_server.url, ack_wait=2.0)


@pytest.fixture
async def small_supervisor(small_settings: Settings) -> AsyncIterator[Supervisor]:
    sup = Supervisor(small_settings, load_executor("asyncio")(2, small_settings))
    task = await run_until_ready(sup)
    yield sup
    sup.request_stop()
    assert await asyncio.wait_for(task, 15) == 0


async def test_a_big_job_failing_for_good_lands_whole_in_the_failed_stream(
    small_settings: Settings, small_supervisor: Supervisor
) -> None:
    big = "x" * (MAX_PAYLOAD - 2000)  # in the error and the traceback too
    async with Queue(settings=small_settings) as queue:
        job = await queue.enqueue(jobs.fail, big)
        with pytest.raises(JobFailed, match="xxxx"):
            await queue.fetch_result(job.job_id, timeout=15)
        # counted once its failed-stream copy is stored (the record comes first)
        await asyncio.wait_for(small_supervisor.wait_until(lambda c: c.failed == 1), 15)
        entry = await get_failed(
            job.job_id, nats_url=small_settings.nats_url, namespace=small_settings.namespace
        )
        assert big.encode() in entry.body  # the job whole
        assert entry.reason.startswith("ValueError: xxx")  # cut to fit, not dropped
        # The connection survived: the supervisor runs the next job.
        after = await queue.enqueue(jobs.add, 1, 2)
        assert await queue.fetch_result(after.job_id, timeout=15) == 3
    assert small_supervisor.counters.failed == 1


async def test_a_result_over_max_payload_fails_the_job_on_its_first_attempt(
    small_settings: Settings, small_supervisor: Supervisor
) -> None:
    async with Queue(settings=small_settings) as queue:
        job = await queue.enqueue(jobs.big_result, MAX_PAYLOAD + 10, max_retries=3)
        with pytest.raises(JobFailed, match=r"result too large: \d+ bytes"):
            await queue.fetch_result(job.job_id, timeout=15)
        await asyncio.wait_for(small_supervisor.wait_until(lambda c: c.failed == 1), 15)
        status = await queue.status(job.job_id)
        assert (status.status, status.attempt) == ("failed", 1)
        entry = await get_failed(
            job.job_id, nats_url=small_settings.nats_url, namespace=small_settings.namespace
        )
        assert "result too large" in entry.reason
        after = await queue.enqueue(jobs.add, 2, 2)
        assert await queue.fetch_result(after.job_id, timeout=15) == 4


async def test_the_publisher_refuses_a_message_whose_headers_take_it_over_the_limit(
    small_settings: Settings,
) -> None:
    nc = await connect(small_settings, name="naq-test")
    client = Client(nc, small_settings)
    try:
        payload = b"x" * (MAX_PAYLOAD - 100)  # nats-py alone would send it
        with pytest.raises(PayloadTooLarge, match="max_payload"):
            await client.publisher.publish("anything", payload, {"X-Pad": "y" * 200})
        assert nc.is_connected
        await nc.flush()
    finally:
        await client.close()


async def test_a_retry_with_an_error_over_max_payload_is_noted_and_retried(
    small_settings: Settings, small_supervisor: Supervisor, tmp_path: Path
) -> None:
    """The retrying note of a huge error keeps the error's start: the job is retried as
    asked, not taken for a crash."""
    tries = tmp_path / "tries"
    async with Queue(settings=small_settings) as queue:
        job = await queue.enqueue(
            jobs.fail_loudly, str(tries), MAX_PAYLOAD, max_retries=1, retry_delay=0.1
        )
        with pytest.raises(JobFailed):
            await queue.fetch_result(job.job_id, timeout=15)
        record = await read_record(
            await queue.connection(), Layout(small_settings.namespace), job.job_id
        )
        assert record is not None
        assert (record.status, record.attempt, record.crashes) == ("failed", 2, 0)
    assert len(tries.read_text().splitlines()) == 2
