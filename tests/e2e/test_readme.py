"""The first seed README's examples, run as written, with the worker it tells you to start.

The example files are kept verbatim (``my_func``, which the README leaves undefined,
gets one import line), so a change that breaks what the README promises fails here.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from naq import close_connections, fetch_job_result
from naq.queue import Queue
from tests.conftest import ROOT
from tests.e2e.conftest import NAQ, Spawn, stream_name

pytestmark = pytest.mark.e2e

TASKS_PY = """\
# tasks.py
import time

def count_words(text):
    print(f"Counting words in: '{text[:20]}...'")
    time.sleep(1) # Simulate work
    count = len(text.split())
    print(f"Word count: {count}")
    return count
"""

MAIN_PY = """\
# main.py
from naq import enqueue_sync
from tasks import count_words

print("Enqueuing job...")
# Enqueue synchronously (blocks until published)
job = enqueue_sync(count_words, "This is a sample text with several words.")

print(f"Job {job.job_id} enqueued.")
print("Run 'naq worker default' to process it.")
"""

ASYNC_PRODUCER_PY = """\
import asyncio
from naq.queue import Queue

async def produce(url: str):
    q = Queue(nats_url=url)
    for i in range(1000):
        await q.enqueue(my_func, i)
    await q.close()
"""

SYNC_PRODUCER_PY = """\
from naq.queue import enqueue_sync, close_sync_connections

for i in range(1000):
    enqueue_sync(my_func, i)

# Optionally close at the end of the batch
close_sync_connections()
"""

SAMPLE = "This is a sample text with several words."
RUN_ASYNC_PRODUCER_PY = """\
import asyncio
import sys

from producer import produce

asyncio.run(produce(sys.argv[1]))
"""
MY_FUNC_PY = "def my_func(i):\n    return i * 2\n"
IMPORT_MY_FUNC = "from my_funcs import my_func\n"


EXECUTORS = {
    "default": [],
    "process": ["--executor", "process", "-c", "8"],
    "interpreter": ["--executor", "interpreter", "-c", "2"],
}


def _worker_args(executor: str) -> list[str]:
    return [NAQ, "worker", "default", *EXECUTORS[executor]]


UNSUPPORTED = sys.version_info < (3, 13)
"""Subinterpreters with their own GIL came in 3.13: below it the executor is refused."""


async def _refused(spawn: Spawn, target: dict[str, str]) -> None:
    worker = spawn(*_worker_args("interpreter"), **target)
    assert await worker.exit_code(15) == 2, worker.output()
    assert "needs Python 3.13 or newer" in worker.output()


@pytest.mark.parametrize("executor", list(EXECUTORS))
async def test_basic_usage(
    spawn: Spawn, tmp_path: Path, nats_url: str, namespace: str, executor: str
) -> None:
    (tmp_path / "tasks.py").write_text(TASKS_PY)
    (tmp_path / "main.py").write_text(MAIN_PY)
    target = {"NAQ_NATS_URL": nats_url, "NAQ_NAMESPACE": namespace}
    if executor == "interpreter" and UNSUPPORTED:
        return await _refused(spawn, target)

    producer = spawn(sys.executable, "main.py", cwd=tmp_path, **target)
    assert await producer.exit_code(30) == 0, producer.output()
    out = producer.lines["stdout"]
    assert out[0] == "Enqueuing job...", producer.output()
    assert out[2] == "Run 'naq worker default' to process it.", producer.output()
    job_id = (await producer.line(r"^Job (\w+) enqueued\.$", stream="stdout"))[1]

    # Run where the README's reader runs it: in the folder that holds tasks.py.
    worker = spawn(*_worker_args(executor), cwd=tmp_path, **target)
    try:
        result = await fetch_job_result(job_id, timeout=15, nats_url=nats_url, namespace=namespace)
    finally:
        await close_connections()
    assert result == len(SAMPLE.split()) == 8
    await worker.line(r"^Word count: 8$", stream="stdout")
    worker.send(signal.SIGTERM)
    assert await worker.exit_code(10) == 0, worker.output()


async def _job_ids(js: JetStreamContext, namespace: str) -> list[str]:
    """Every waiting job's id, read from the stream in order (the examples print none)."""
    stream = stream_name(namespace)
    state = (await js.stream_info(stream)).state
    ids = []
    for seq in range(state.first_seq, state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        assert msg.headers is not None
        ids.append(msg.headers["Nats-Msg-Id"])
    return ids


@pytest.mark.parametrize("executor", list(EXECUTORS))
@pytest.mark.parametrize("example", ["async", "sync"])
async def test_batching_examples(
    spawn: Spawn,
    tmp_path: Path,
    js: JetStreamContext,
    queue: Queue,
    nats_url: str,
    namespace: str,
    example: str,
    executor: str,
) -> None:
    (tmp_path / "my_funcs.py").write_text(MY_FUNC_PY)
    target = {"NAQ_NATS_URL": nats_url, "NAQ_NAMESPACE": namespace}
    if executor == "interpreter" and UNSUPPORTED:
        return await _refused(spawn, target)
    if example == "async":
        (tmp_path / "producer.py").write_text(IMPORT_MY_FUNC + ASYNC_PRODUCER_PY)
        (tmp_path / "run_producer.py").write_text(RUN_ASYNC_PRODUCER_PY)
        producer = spawn(sys.executable, "run_producer.py", nats_url, cwd=tmp_path, **target)
    else:
        (tmp_path / "producer.py").write_text(IMPORT_MY_FUNC + SYNC_PRODUCER_PY)
        producer = spawn(sys.executable, "producer.py", cwd=tmp_path, **target)
    assert await producer.exit_code(30) == 0, producer.output()
    assert producer.lines == {"stdout": [], "stderr": []}, producer.output()

    ids = await _job_ids(js, namespace)
    assert len(set(ids)) == 1000

    # PYTHONPATH, not the working directory, so this checks batching and nothing else.
    pythonpath = os.pathsep.join([str(tmp_path), str(ROOT)])
    spawn(*_worker_args(executor), cwd=tmp_path, PYTHONPATH=pythonpath, **target)
    results = await queue.fetch_results(ids, timeout=30)
    assert [results[job_id] for job_id in ids] == [i * 2 for i in range(1000)]


SCHEDULE_EXAMPLE_PY = """\
# schedule_example.py
import datetime
from naq import enqueue_at_sync, enqueue_in_sync
from tasks import count_words

now = datetime.datetime.now(datetime.timezone.utc)
run_at = now + datetime.timedelta(seconds=10)
run_in = datetime.timedelta(minutes=1)

# Schedule to run at a specific time (UTC recommended)
job_at = enqueue_at_sync(run_at, count_words, "Job scheduled for a specific time.")
print(f"Job {job_at.job_id} scheduled for {run_at}")

# Schedule to run after a delay
job_in = enqueue_in_sync(run_in, count_words, "Job scheduled after a delay.")
print(f"Job {job_in.job_id} scheduled to run in {run_in}")

print("Run 'naq scheduler' and 'naq worker default' to process scheduled jobs.")
"""

SCHEDULE_NAIVE_PY = """\
# schedule_example_naive.py
import datetime
from naq import enqueue_at_sync
from tasks import count_words

# This datetime is naive (no timezone info)
# naq will interpret this as UTC.
naive_run_time = datetime.datetime(2024, 12, 25, 10, 30, 0)

job_naive = enqueue_at_sync(naive_run_time, count_words, "Job scheduled with a naive datetime (treated as UTC).")
print(f"Job {job_naive.job_id} scheduled for {naive_run_time} (interpreted as UTC).")
"""


async def test_scheduling_examples(
    spawn: Spawn, tmp_path: Path, queue: Queue, nats_url: str, namespace: str
) -> None:
    """The seed's scheduling examples as written: two jobs wait on the server's
    schedules (10 s and 1 min ahead), and a naive date in the past runs at once."""
    (tmp_path / "tasks.py").write_text(TASKS_PY)
    (tmp_path / "schedule_example.py").write_text(SCHEDULE_EXAMPLE_PY)
    (tmp_path / "schedule_example_naive.py").write_text(SCHEDULE_NAIVE_PY)
    target = {"NAQ_NATS_URL": nats_url, "NAQ_NAMESPACE": namespace}
    example = spawn(sys.executable, "schedule_example.py", cwd=tmp_path, **target)
    assert await example.exit_code(30) == 0, example.output()
    at_id = (await example.line(r"^Job (\w+) scheduled for ", stream="stdout"))[1]
    in_id = (await example.line(r"^Job (\w+) scheduled to run in 0:01:00$", stream="stdout"))[1]
    for job_id in (at_id, in_id):
        assert (await queue.status(job_id)).status == "scheduled"

    naive = spawn(sys.executable, "schedule_example_naive.py", cwd=tmp_path, **target)
    assert await naive.exit_code(30) == 0, naive.output()
    naive_id = (await naive.line(r"^Job (\w+) scheduled for 2024-12-25 10:30:00", "stdout"))[1]
    spawn(*_worker_args("default"), cwd=tmp_path, **target)
    assert await queue.fetch_result(naive_id, timeout=15) == 9  # due long ago: runs now
    assert await queue.cancel_scheduled(at_id)
    assert await queue.cancel_scheduled(in_id)
