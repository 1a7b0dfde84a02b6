"""Settings that drifted from the server's streams and consumers are applied or
refused, never used silently (naq.transport.declare; leases from the consumer's
actual ack_wait)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from naq import ConfigurationError, Queue
from naq.executors import load_executor
from naq.settings import Settings
from naq.supervisor.supervisor import Supervisor
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor, run_until_ready


async def _start_and_stop(settings: Settings, **overrides: Any) -> None:
    """A supervisor that starts (setting the consumer up) and drains at once."""
    conf = settings.replace(**overrides)
    sup = Supervisor(conf, load_executor("asyncio")(2, conf))
    task = await run_until_ready(sup)
    sup.request_stop()
    assert await task == 0


async def _consumer(nc: Any, namespace: str) -> Any:
    layout = Layout(namespace)
    return (await nc.jetstream().consumer_info(layout.stream, layout.consumer("default"))).config


async def test_raising_ack_wait_lets_a_job_longer_than_the_old_one_run_once(
    settings: Settings,
    queue: Queue,
    start_supervisor: StartSupervisor,
    nc: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    await _start_and_stop(settings, ack_wait=1.0)  # the deployment as it was
    sup = await start_supervisor(ack_wait=6.0)  # the new one: its ack_wait applies
    assert (await _consumer(nc, namespace)).ack_wait == pytest.approx(6.0)
    assert await sup.lease_ack_wait() == pytest.approx(6.0)
    runs = tmp_path / "runs"
    job = await queue.enqueue(jobs.record_run, str(runs), 3.5)  # 3.5 x the old ack_wait
    assert await queue.fetch_result(job.job_id, timeout=30) == 1
    assert runs.read_text().splitlines() == ["run"], "the job was redelivered mid-run"
    status = await queue.status(job.job_id)
    assert status.status == "finished"


async def test_a_supervisor_learns_the_shorter_ack_wait_another_one_set(
    settings: Settings, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    sup = await start_supervisor(ack_wait=6.0)
    await _start_and_stop(settings, ack_wait=1.5)  # the last to start sets the consumer
    assert (await _consumer(nc, namespace)).ack_wait == pytest.approx(1.5)
    assert await sup.lease_ack_wait() == pytest.approx(1.5)


async def test_a_changed_max_deliver_is_applied_to_the_consumer(
    settings: Settings, nc: Any, namespace: str
) -> None:
    await _start_and_stop(settings, max_deliver=5)
    assert (await _consumer(nc, namespace)).max_deliver == 5
    await _start_and_stop(settings, max_deliver=2, max_ack_pending=7)
    config = await _consumer(nc, namespace)
    assert (config.max_deliver, config.max_ack_pending) == (2, 7)


async def test_a_changed_duplicate_window_is_applied_to_the_stream(
    settings: Settings, nc: Any, namespace: str
) -> None:
    async with Queue(settings=settings) as q:
        await q.enqueue(jobs.noop)
    async with Queue(settings=settings.replace(duplicate_window=30.0)) as q:
        await q.enqueue(jobs.noop)
    info = await nc.jetstream().stream_info(Layout(namespace).stream)
    assert info.config.duplicate_window == pytest.approx(30.0)


async def test_a_change_the_server_refuses_names_the_field_and_both_values(
    settings: Settings,
) -> None:
    async with Queue(settings=settings) as q:
        await q.enqueue(jobs.noop)
    # A single server cannot keep three replicas: the change is refused, not ignored.
    with pytest.raises(ConfigurationError) as info:
        async with Queue(settings=settings.replace(replicas=3)) as q:
            await q.enqueue(jobs.noop)
    message = str(info.value)
    assert "num_replicas from 1 (the server's) to 3 (configured)" in message
    conf = settings.replace(replicas=3)
    with pytest.raises(ConfigurationError, match="num_replicas"):
        await Supervisor(conf, load_executor("asyncio")(1, conf)).run()
