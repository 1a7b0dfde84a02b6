"""Long-lived tasks under fault, against a real server: a bad record is skipped with a
log line and the task goes on; it is never the end of the task."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from naq import Queue, Settings
from naq.transport.names import Layout
from tests import jobs
from tests.conftest import StartSupervisor


async def test_the_dependency_watch_skips_a_bad_record_and_keeps_releasing(
    queue: Queue,
    settings: Settings,
    start_supervisor: StartSupervisor,
    nc: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A waited-on job whose stored record is garbage used to end the supervisor's
    dependency watch at its first replay, and no dependent was released after that."""
    await queue.connection()  # declares the namespace
    layout = Layout(settings.namespace)
    js = nc.jetstream()
    await js.publish(layout.kv_subject(layout.results_bucket, "bad-dep"), b"garbage")
    await js.publish(
        layout.kv_subject(layout.deps_bucket, layout.waiters_key("bad-dep")),
        json.dumps(["someone"]).encode(),
    )
    with caplog.at_level(logging.WARNING, logger="naq.state.dependencies"):
        await start_supervisor()
        first = await queue.enqueue(jobs.add, 1, 1)
        then = await queue.enqueue(jobs.add, 2, 2, depends_on=first)
        assert await queue.fetch_results([first.job_id, then.job_id], timeout=15) == {
            first.job_id: 2,
            then.job_id: 4,
        }
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped == [
        f"dependency watch: {layout.waiters_key('bad-dep')}: "
        "not a naq message: no metadata line; skipped"
    ]


async def test_the_scheduler_skips_an_unreadable_schedule_and_fails_an_unfirable_one(
    queue: Queue,
    settings: Settings,
    start_supervisor: StartSupervisor,
    nc: Any,
    target: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A schedule record that is not JSON, and one whose job cannot be decoded, used to
    end the leader's watch and its fire loop in turn; now the first is skipped and the
    second marked failed with its reason, and the good schedule still fires."""
    from naq.producer.schedules import list_schedules, schedule
    from naq.scheduler import Scheduler
    from naq.state.schedules import FAILED, Schedule

    await queue.connection()
    layout = Layout(settings.namespace)
    js = nc.jetstream()
    await js.publish(layout.kv_subject(layout.schedules_bucket, "not-json"), b"{oops")
    broken = Schedule(
        "broken", "default", "tests.jobs:add", b"not a job", None, 1.0, None, None, 0.0
    )
    await js.publish(layout.kv_subject(layout.schedules_bucket, "broken"), broken.to_json())
    sup = await start_supervisor()
    scheduler = Scheduler(settings)
    with caplog.at_level(logging.WARNING):
        task = asyncio.create_task(scheduler.run())
        try:
            await schedule(jobs.add, 1, 1, interval=1, repeat=1, **target)  # type: ignore[arg-type]
            await asyncio.wait_for(sup.wait_until(lambda c: c.processed == 1), 15)
            failed = await list_schedules(status=FAILED, **target)  # type: ignore[arg-type]
        finally:
            scheduler.request_stop()
            await asyncio.wait_for(task, 15)
    assert [s.schedule_id for s in failed] == ["broken"]
    assert failed[0].error is not None
    assert failed[0].error.startswith("its job cannot be read: not a naq message")
    messages = [r.getMessage() for r in caplog.records]
    assert any("schedule record not-json is unreadable" in m for m in messages)


async def test_a_frozen_server_is_noticed_within_a_few_ping_intervals(
    tmp_path: Any, namespace: str
) -> None:
    """A silent partition: the server stops answering without closing anything
    (SIGSTOP). With nats-py's default ping every two minutes it went unnoticed for about
    four; with ``ping_interval`` the client gives up on it within two missed pings and
    reconnects once the server answers again."""
    import os
    import signal
    import time

    from naq.transport.connect import connect
    from naq.transport.server import EmbeddedServer, free_port

    server = EmbeddedServer(free_port(), tmp_path / "js").start()
    assert server.process is not None
    lost, back = asyncio.Event(), asyncio.Event()

    async def on_lost() -> None:
        lost.set()

    async def on_back() -> None:
        back.set()

    settings = Settings(nats_url=server.url, namespace=namespace, ping_interval=0.5)
    nc = await connect(settings, disconnected_cb=on_lost, reconnected_cb=on_back)
    try:
        frozen_at = time.monotonic()
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            await asyncio.wait_for(lost.wait(), 10)
            noticed = time.monotonic() - frozen_at
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        await asyncio.wait_for(back.wait(), 15)
        assert noticed < 3.0, f"a frozen server was noticed after {noticed:.1f}s"
    finally:
        await nc.close()
        server.stop()


async def test_removal_markers_expire_rather_than_pile_up(
    settings: Settings, nc: Any, target: dict[str, str]
) -> None:
    """A clean stop removes the worker's heartbeat, and cancelling a schedule removes it,
    each with a purge marker; nats-py's purge leaves that marker for ever, so a
    supervisor restarting in a loop piled them up in the bucket every scan reads."""
    from naq.executors.registry import load_executor
    from naq.producer.schedules import cancel_recurring, schedule
    from naq.supervisor import Supervisor
    from naq.transport.names import kv_stream
    from tests.conftest import run_until_ready, stop_all

    layout = Layout(settings.namespace)
    sup = Supervisor(settings, load_executor("asyncio")(1, settings))
    await stop_all([(sup, await run_until_ready(sup))])
    schedule_id = await schedule(jobs.add, 1, 1, interval=60, **target)  # type: ignore[arg-type]
    assert await cancel_recurring(schedule_id, **target)
    js = nc.jetstream()
    for bucket, key in (
        (layout.workers_bucket, sup.worker_id),
        (layout.schedules_bucket, schedule_id),
    ):
        marker = await js.get_last_msg(kv_stream(bucket), layout.kv_subject(bucket, key))
        headers = marker.headers or {}
        assert headers.get("KV-Operation") == "PURGE", bucket
        assert headers.get("Nats-TTL") == "300s", bucket
