"""Long-lived tasks under fault, against a real server: a bad record is skipped with a
log line and the task goes on; it is never the end of the task."""

from __future__ import annotations

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
