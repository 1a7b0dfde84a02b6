"""Signed jobs and results against a real server: what is signed runs, what is not is
dead-lettered before a byte of it is decoded, and a forged result is never unpickled."""

from __future__ import annotations

import asyncio
import datetime
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

from naq import ConfigurationError, Queue, Settings
from naq.errors import SignatureError
from naq.producer.failed import list_failed, requeue_failed
from naq.producer.schedules import schedule
from naq.scheduler import Scheduler
from naq.signing import JOB, RESULT, SIGNATURE_HEADER, Signer
from naq.state import record as records
from naq.state.record import RunFacts, encode_result
from naq.transport.names import Layout
from naq.transport.pool import close_connections
from naq.wire import JobMeta, encode_job
from tests import jobs
from tests.conftest import StartSupervisor

KEY = "k" * 16 + "signing-key-for-tests-0001"
OLD_KEY = "o" * 16 + "signing-key-for-tests-0000"
OTHER = "x" * 16 + "a-key-nobody-here-knows-00"


class Bomb:
    """Unpickling it writes a file: proof that something was (or was not) unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return jobs.mark, (self.path, "unpickled")


def _raw_job(layout: Layout, queue: str, job_id: str, payload: bytes) -> tuple[str, bytes]:
    meta = JobMeta(job_id, "tests.jobs:add", queue, "pickle", time.time(), _options(), False)
    return layout.job_subject(queue, job_id), encode_job(meta, payload)


def _options() -> Any:
    from naq.job import JobOptions

    return JobOptions()


@pytest.fixture
def signed(settings: Settings) -> Settings:
    return settings.replace(signing_key=KEY)


async def test_signed_jobs_run_and_their_signed_results_are_read(
    signed: Settings, start_supervisor: StartSupervisor
) -> None:
    sup = await start_supervisor(signing_key=KEY)
    async with Queue(settings=signed) as queue:
        now = await queue.enqueue(jobs.add, 1, 2)
        many = await queue.enqueue_many([(jobs.add, (2, 2)), (jobs.add, (3, 3))])
        later = await queue.enqueue_in(datetime.timedelta(milliseconds=200), jobs.add, 4, 4)
        held = await queue.enqueue(jobs.add, 5, 5, depends_on=now)
        ids = [now.job_id, *(j.job_id for j in many), later.job_id, held.job_id]
        assert await queue.fetch_results(ids, timeout=15) == {
            ids[0]: 3,
            ids[1]: 4,
            ids[2]: 6,
            ids[3]: 8,
            ids[4]: 10,
        }
    assert sup.counters.failed == 0


@pytest.mark.parametrize("signature", [None, "v1=00", "sig-of-another-key"])
async def test_an_unsigned_or_badly_signed_job_is_dead_lettered_before_decoding(
    signed: Settings,
    start_supervisor: StartSupervisor,
    nc: Any,
    tmp_path: Path,
    signature: str | None,
) -> None:
    marker = tmp_path / "unpickled"
    sup = await start_supervisor(signing_key=KEY)
    layout = Layout(signed.namespace)
    payload = pickle.dumps((Bomb(str(marker)), (), {}))
    subject, body = _raw_job(layout, "default", "forged-1", payload)
    headers = {"Nats-Msg-Id": "forged-1"}
    if signature == "sig-of-another-key":
        headers[SIGNATURE_HEADER] = Signer(OTHER).sign(JOB, body)
    elif signature is not None:
        headers[SIGNATURE_HEADER] = signature
    await nc.jetstream().publish(subject, body, headers=headers)
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed == 1), 10)
    (entry,) = await list_failed(nats_url=signed.url, namespace=signed.namespace)
    assert "unsigned or badly signed job" in entry.reason
    assert entry.body == body  # kept as it came, never decoded
    assert not marker.exists(), "the payload was unpickled"
    await close_connections()


async def test_a_signed_job_replayed_onto_another_queue_is_refused(
    signed: Settings, start_supervisor: StartSupervisor, nc: Any, tmp_path: Path
) -> None:
    sup = await start_supervisor(["other"], signing_key=KEY)
    layout = Layout(signed.namespace)
    marker = tmp_path / "ran"
    meta = JobMeta(
        "replayed", "tests.jobs:mark", "default", "pickle", time.time(), _options(), False
    )
    body = encode_job(meta, pickle.dumps((jobs.mark, (str(marker), "ran"), {})))
    headers = {SIGNATURE_HEADER: Signer(KEY).sign(JOB, body)}
    await nc.jetstream().publish(layout.job_subject("other", "replayed"), body, headers=headers)
    await asyncio.wait_for(sup.wait_until(lambda c: c.failed == 1), 10)
    (entry,) = await list_failed(nats_url=signed.url, namespace=signed.namespace)
    assert "is not its own subject" in entry.reason
    assert not marker.exists()
    await close_connections()


async def test_a_forged_result_is_refused_unread(signed: Settings, nc: Any, tmp_path: Path) -> None:
    """Whoever can write the results KV cannot make a producer with a key unpickle."""
    marker = tmp_path / "unpickled"
    layout = Layout(signed.namespace)
    forged = records.finished(
        "j-forged", RunFacts(serializer="pickle"), pickle.dumps(Bomb(str(marker)))
    )
    body = encode_result(forged)
    async with Queue(settings=signed) as queue:
        await queue.connection()  # declares the namespace
        for headers in ({}, {SIGNATURE_HEADER: Signer(OTHER).sign(RESULT, body)}):
            await nc.jetstream().publish(
                layout.kv_subject(layout.results_bucket, "j-forged"), body, headers=headers
            )
            with pytest.raises(SignatureError, match="refused unread"):
                await queue.fetch_result("j-forged")
            with pytest.raises(SignatureError):
                await queue.fetch_result("j-forged", timeout=5)
            (got,) = (await queue.fetch_results(["j-forged"], timeout=5)).values()
            assert isinstance(got, SignatureError)
    assert not marker.exists(), "a forged result was unpickled"


async def test_a_supervisor_without_the_key_writes_results_a_keyed_producer_refuses(
    settings: Settings, signed: Settings, start_supervisor: StartSupervisor
) -> None:
    await start_supervisor()  # no key: runs the job, its result is unsigned
    async with Queue(settings=settings) as unsigned_producer:
        job = await unsigned_producer.enqueue(jobs.add, 1, 1)
        assert await unsigned_producer.fetch_result(job.job_id, timeout=10) == 2
    async with Queue(settings=signed) as keyed:
        with pytest.raises(SignatureError):
            await keyed.fetch_result(job.job_id)


async def test_keys_rotate_without_dropping_jobs_in_flight(
    settings: Settings, start_supervisor: StartSupervisor
) -> None:
    """Jobs signed with the old key run on a supervisor that has the new key and keeps
    the old one as previous; producers with either key read its results."""
    await start_supervisor(signing_key=KEY, signing_keys_previous=OLD_KEY)
    async with Queue(settings=settings.replace(signing_key=OLD_KEY)) as old:
        job = await old.enqueue(jobs.add, 2, 3)
        with pytest.raises(SignatureError):  # the result is signed with the new key
            await old.fetch_result(job.job_id, timeout=10)
    rotated = settings.replace(signing_key=KEY, signing_keys_previous=OLD_KEY)
    async with Queue(settings=rotated) as new:
        assert await new.fetch_result(job.job_id, timeout=10) == 5


async def test_requeued_failed_jobs_keep_their_signature(
    signed: Settings, start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    marks = str(tmp_path / "runs")
    sup = await start_supervisor(signing_key=KEY)
    async with Queue(settings=signed) as queue:
        job = await queue.enqueue(jobs.flaky, marks, 1, max_retries=0)
        await asyncio.wait_for(sup.wait_until(lambda c: c.failed == 1), 10)
        assert await requeue_failed([job.job_id], nats_url=signed.url, namespace=signed.namespace)
        assert await queue.fetch_result(job.job_id, timeout=10) == 2
    await close_connections()


async def test_recurring_runs_are_signed_and_an_unsigned_template_never_fires(
    settings: Settings,
    signed: Settings,
    start_supervisor: StartSupervisor,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NAQ_SIGNING_KEY", KEY)  # the module-level schedule() reads NAQ_*
    sup = await start_supervisor(signing_key=KEY)
    scheduler = Scheduler(signed)
    task = asyncio.create_task(scheduler.run())
    target = {"nats_url": signed.url, "namespace": signed.namespace}
    try:
        with caplog.at_level(logging.ERROR, logger="naq.scheduler"):
            # Made without the key: the scheduler must not sign it into a runnable job.
            await _schedule_unsigned(settings)
            await schedule(jobs.add, 1, 1, interval=1, repeat=1, **target)  # type: ignore[arg-type]
            await asyncio.wait_for(sup.wait_until(lambda c: c.processed == 1), 15)
            refusals = [r for r in caplog.records if "badly signed: not fired" in r.message]
            assert refusals, "the unsigned schedule was not refused"
            assert len(refusals) <= 3, "refused once per tick, not in a loop"
    finally:
        scheduler.request_stop()
        await asyncio.wait_for(task, 15)
        await close_connections()
    assert sup.counters.processed == 1
    assert sup.counters.failed == 0


async def _schedule_unsigned(settings: Settings) -> None:
    from naq.state import schedules as store

    async with Queue(settings=settings) as queue:
        job, message = queue.prepare(jobs.add, (2, 2))
        client = await queue.connection()
        await store.create(
            await store.bucket(client, queue.layout),
            store.Schedule(
                "unsigned-template",
                queue.name,
                job.function,
                message.payload,
                cron=None,
                interval=1.0,
                tz=None,
                repeat=1,
                next_run=time.time(),
            ),
        )


def test_a_short_key_or_a_lone_previous_key_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="signing_key is too short"):
        Settings(signing_key="short")
    with pytest.raises(ConfigurationError, match="signing_keys_previous is set"):
        Settings(signing_keys_previous=OLD_KEY)
    shown = repr(Settings(signing_key=KEY, signing_keys_previous=OLD_KEY))
    assert KEY not in shown
    assert OLD_KEY not in shown
    assert KEY not in repr(Settings(signing_key=KEY).signer)
