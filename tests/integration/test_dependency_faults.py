"""Dependencies under faults: a release that fails is tried again, and a hold or a
release cut off half-way (a supervisor killed between two of its writes) never leaves
a job held for ever. The half-way states are made with naq's own functions, doing
only the first step."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from naq import Queue
from naq.state.held import pack_held
from naq.transport.names import Layout
from naq.transport.publish import Outgoing
from tests import jobs
from tests.conftest import StartSupervisor


class _Said(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def _job_stream_message_limit(nc: Any, namespace: str, size: int) -> None:
    js = nc.jetstream()
    config = (await js.stream_info(Layout(namespace).stream)).config
    config.max_msg_size = size
    await js.update_stream(config)


async def test_a_release_that_fails_is_tried_again(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str, tmp_path: Path
) -> None:
    """The job stream refuses the released job (its message size limit lowered while
    the dependency runs), then takes it again: the release goes through then."""
    said = _Said("message size exceeds")  # the refused release, logged
    logging.getLogger("naq.state.dependencies").addHandler(said)
    try:
        await start_supervisor()
        gate = tmp_path / "gate"
        parent = await queue.enqueue(jobs.wait_for_file, str(gate), None, 30.0)
        child = await queue.enqueue(jobs.echo, "x" * 4000, depends_on=parent)
        kv = await nc.jetstream().key_value(Layout(namespace).deps_bucket)
        watcher = await kv.watch(Layout(namespace).waiters_key(parent.job_id))
        try:  # taken in: its waiter is registered
            while (entry := await watcher.updates(timeout=10)) is None or not entry.value:
                pass
        finally:
            await watcher.stop()
        await _job_stream_message_limit(nc, namespace, 2000)
        gate.touch()
        await asyncio.wait_for(said.event.wait(), 20)  # the release was refused
        await _job_stream_message_limit(nc, namespace, -1)
        assert await queue.fetch_result(child.job_id, timeout=20) == [["x" * 4000], {}]
    finally:
        logging.getLogger("naq.state.dependencies").removeHandler(said)


async def _held_half_way(
    queue: Queue, nc: Any, namespace: str, parent_id: str, body: bytes | None = None
) -> str:
    """The first step of taking a held job in, and no other: its held record, naming
    ``parent_id``, with no waiter registered. ``body``: the held message's own body
    (else a new job, as if its held message were gone)."""
    layout = Layout(namespace)
    if body is None:
        job, message = queue.prepare(jobs.add, (2, 2))
        job_id, body, enqueued = job.job_id, message.payload, job.enqueue_time
    else:
        from naq.wire import decode_job

        meta, _ = decode_job(body)
        job_id, enqueued = meta.job_id, meta.enqueue_time
    message = Outgoing(layout.job_subject("default", job_id), body, {})
    kv = await nc.jetstream().key_value(layout.deps_bucket)
    await kv.create(layout.held_key(job_id), pack_held([parent_id], message, "default", enqueued))
    return job_id


async def test_a_take_in_cut_off_after_its_first_write_is_finished_when_it_comes_back(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    """Killed after writing the held record, before its waiters: the held message is
    not acked and comes back; taking it in again used to stop at "taken in already"."""
    layout = Layout(namespace)
    parent = await queue.enqueue(jobs.add, 1, 1)
    child = await queue.enqueue(jobs.add, 2, 2, depends_on=parent)
    held = await nc.jetstream().get_last_msg(layout.stream, layout.held_subject(child.job_id))
    assert await _held_half_way(queue, nc, namespace, parent.job_id, held.data) == child.job_id
    await start_supervisor()
    assert await queue.fetch_result(child.job_id, timeout=20) == 4


async def test_a_held_job_whose_dependency_ended_with_no_waiter_is_found_and_released(
    queue: Queue, start_supervisor: StartSupervisor, nc: Any, namespace: str
) -> None:
    """A held record whose dependency finished, and no waiter, no held message left
    to take in again: nothing would ever release it but the re-check of held jobs,
    made by every supervisor as it starts."""
    await start_supervisor()
    parent = await queue.enqueue(jobs.add, 1, 1)
    assert await queue.fetch_result(parent.job_id, timeout=20) == 2
    child_id = await _held_half_way(queue, nc, namespace, parent.job_id)
    await start_supervisor()  # a restart, say
    assert await queue.fetch_result(child_id, timeout=20) == 4
