"""Malformed input: 10,000 fuzzed messages on the job and held subjects and in the deps
and schedules KV, drawn by hypothesis (200 batches of 50).

Every message on a job or held subject must end in the failed stream with a reason (or,
should one happen to be a valid job, finished); a bad KV entry must be skipped; the
supervisor and the scheduler stay up, still run real work afterwards, and the
supervisor's memory stays flat (RSS at the end within 10% of after the first 1,000).
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from typing import Any

import nats
from hypothesis import HealthCheck, given, settings, strategies as st

from naq.producer.queue import Queue
from naq.producer.schedules import list_schedules, schedule
from naq.settings import Settings
from naq.state.schedules import DONE
from naq.transport.names import Layout
from tests.faults.conftest import Row, SuperviseAt, report, rss
from tests.jobs import add
from tests.procs import NAQ, READY, Proc, Spawn

BATCHES = 200
BATCH = 50
"""Hypothesis draws at most a few KiB per example, so 10,000 messages come in 200 small
batches."""
FIRST_THOUSAND = 1_000 // BATCH
MEMORY_SLACK = 0.10

TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=40)
TEXT = st.text(max_size=30)
HEADER_VALUE = st.text(alphabet=string.printable.strip(), max_size=80)
META = st.fixed_dictionaries(
    {},
    optional={
        "naq": st.one_of(st.just(1), st.integers(), TEXT),
        "id": st.one_of(TOKEN, TEXT),
        "fn": st.one_of(st.just("tests.jobs:add"), TEXT),
        "q": st.one_of(st.just("default"), TEXT),
        "ser": st.one_of(st.sampled_from(["json", "pickle"]), TEXT),
        "t": st.one_of(st.floats(), TEXT),
        "deps": st.lists(st.one_of(TOKEN, TEXT), max_size=3),
        "opts": st.dictionaries(TEXT, st.one_of(st.integers(), TEXT, st.none()), max_size=3),
    },
)
BODY = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda m, p: json.dumps(m).encode() + b"\n" + p, META, st.binary(max_size=60)),
    st.builds(lambda m, cut: json.dumps(m).encode()[:cut], META, st.integers(0, 200)),
)
HEADERS = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["Naq-Sig", "Naq-Depends-On", "X-Any"]), HEADER_VALUE),
)
WHERE = st.sampled_from(["job", "held", "deps", "schedules"])
MESSAGE = st.tuples(WHERE, TOKEN, BODY, HEADERS)


class Fuzzing:
    """What the batches sent and what the processes under test did with it."""

    def __init__(self, url: str, namespace: str, sup: Proc, scheduler: Proc) -> None:
        self.url = url
        self.layout = Layout(namespace)
        self.sup = sup
        self.scheduler = scheduler
        self.sent = {"job": 0, "held": 0, "deps": 0, "schedules": 0}
        self.rss: list[int] = []

    async def send(self, batch: list[tuple[str, str, bytes, dict[str, str] | None]]) -> None:
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            for where, token, body, headers in batch:
                await js.publish(self.subject(where, token), body, headers=headers or None)
                self.sent[where] += 1
            await self.until_settled(js)
        finally:
            await nc.close()
        self.rss.append(rss(self.sup.pid))

    def subject(self, where: str, token: str) -> str:
        layout = self.layout
        if where == "job":
            return layout.job_subject("default", token)
        if where == "held":
            return layout.held_subject(token)
        if where == "deps":
            key = layout.waiters_key(token) if len(token) % 2 else layout.held_key(token)
            return layout.kv_subject(layout.deps_bucket, key)
        return layout.kv_subject(layout.schedules_bucket, token)

    async def until_settled(self, js: Any) -> None:
        """Until every job and held message sent so far is in the failed stream (or has
        a finished record): each got an answer, none is stuck."""
        expected = self.sent["job"] + self.sent["held"]
        deadline = time.monotonic() + 120
        while True:
            failed = (await js.stream_info(self.layout.failed_stream)).state.messages
            results = (await js.stream_info(f"KV_{self.layout.results_bucket}")).state.messages
            if failed + results >= expected:
                assert failed + results == expected, (failed, results, expected)
                return
            assert self.sup.popen.poll() is None, self.sup.output()
            assert time.monotonic() < deadline, (
                f"{failed} failed + {results} results of {expected} sent\n{self.sup.output()}"
            )
            await asyncio.sleep(0.1)


def test_fuzzed_messages_are_dead_lettered_or_skipped(
    supervise_at: SuperviseAt, spawn: Spawn, nats_url: str, namespace: str
) -> None:
    """10,000 fuzzed messages in batches; after each batch, every job and held message
    has its answer; after all, both processes are up, a job and a schedule still run,
    and the supervisor's memory is where it was after the first 1,000."""

    async def start() -> tuple[Proc, Proc]:
        async with Queue(settings=Settings(nats_url=nats_url, namespace=namespace)) as q:
            await q.connection()  # declares the namespace's streams and buckets
        sup = supervise_at(nats_url, "-c", "32")
        await sup.line(READY)
        scheduler = spawn(NAQ, "scheduler", "--nats-url", nats_url, "--namespace", namespace)
        await scheduler.line(r"is the leader")
        return sup, scheduler

    sup, scheduler = asyncio.run(start())
    fuzzing = Fuzzing(nats_url, namespace, sup, scheduler)
    started = time.monotonic()

    @settings(
        max_examples=BATCHES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(MESSAGE, min_size=BATCH, max_size=BATCH))
    def one_batch(batch: list[tuple[str, str, bytes, dict[str, str] | None]]) -> None:
        asyncio.run(fuzzing.send(batch))

    one_batch()
    elapsed = time.monotonic() - started

    async def real_work() -> None:
        target = {"nats_url": nats_url, "namespace": namespace}
        async with Queue(settings=Settings(**target)) as q:
            job = await q.enqueue(add, 20, 22)
            assert await q.fetch_result(job.job_id, timeout=20) == 42
        await schedule(add, 1, 2, schedule_id="after-fuzz", interval=1, repeat=1, **target)
        deadline = time.monotonic() + 20
        while not [
            s
            for s in await list_schedules(**target)
            if s.schedule_id == "after-fuzz" and s.status == DONE
        ]:
            assert time.monotonic() < deadline, scheduler.output()
            await asyncio.sleep(0.1)

    asyncio.run(real_work())
    sent = sum(fuzzing.sent.values())
    growth = fuzzing.rss[-1] / fuzzing.rss[FIRST_THOUSAND - 1] - 1
    report(
        Row(
            "10,000 fuzzed messages (job, held, deps KV, schedules KV)",
            sent,
            0,
            0,
            f"{elapsed:.0f}s for all; supervisor RSS {growth:+.1%} from 1,000 to {sent:,}",
            ", ".join(f"{k} {v}" for k, v in fuzzing.sent.items()),
        )
    )
    assert sent == BATCHES * BATCH
    assert sup.popen.poll() is None
    assert scheduler.popen.poll() is None
    assert growth <= MEMORY_SLACK, fuzzing.rss
