"""The supervisor: pull jobs, hand them to the executor, settle their outcomes.

Data flow::

    JetStream NAQ_JOBS_{ns}               supervisor process
    ----------------------                   ------------------------------------------------
    {ns}.jobs.{queue} --pull(batch = free slots)--> Puller[queue] --Msg--> _handle()
            ^                                                            |  decode metadata
            |                                                            |  (bad: dead-letter)
            |                                                            v
            |                                                  Executor.run(Call) -> Outcome
            |                                                            |
            +------ ack / nak(delay) ------- Settler <------------------+
                                               |-- results KV {ns}_results (per-key TTL)
                                               '-- failed stream NAQ_FAILED_{ns}
    leases:    in_progress() on every running job each ack_wait/3 (long jobs never redeliver)
    heartbeat: workers KV {ns}_workers each heartbeat_interval, removed on clean exit

The supervisor owns all NATS I/O; executors see only ``Call`` and ``Outcome``.
Shutdown (first SIGTERM/SIGINT): stop pulling, let running jobs finish within
``shutdown_grace``, hand back (nak) whatever was cut short, exit 0. A second
signal cuts running jobs short at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil
from nats.aio.msg import Msg

from naq import heartbeat
from naq.errors import BrokenExecutor
from naq.executors.base import Call, Executor, Outcome
from naq.heartbeat import Counters, Heartbeat
from naq.settings import Settings, validate_name
from naq.state import record as records
from naq.state.dependencies import DependencyWatch
from naq.state.record import ResultRecord
from naq.state.store import read_record
from naq.supervisor import deadletter
from naq.supervisor.puller import Puller
from naq.supervisor.settle import Delivery, Settler
from naq.transport.connect import Client, connect
from naq.transport.declare import ensure_consumer
from naq.transport.names import Layout
from naq.wire import BadMessage, JobMeta, decode_job

log = logging.getLogger(__name__)

MEMORY_CHECK_INTERVAL = 1.0
CANCELLED_REMEMBERED = 10_000


class Supervisor:
    def __init__(
        self, settings: Settings, executor: Executor, queues: list[str] | None = None
    ) -> None:
        self.settings = settings
        self.executor = executor
        # Checked here, before anything connects, so a bad name fails at once.
        self.queues = [validate_name("queue", q) for q in queues or [settings.default_queue]]
        self.layout = Layout(settings.namespace)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.counters = Counters()
        self.client: Client | None = None
        self._pullers: dict[str, Puller] = {}
        self._running: dict[str, Delivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._slots_changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self._stopping = False
        self.ready = asyncio.Event()
        """Set once the supervisor is pulling: tests and embedders wait on it."""
        self._settled = asyncio.Event()
        self.fatal: BrokenExecutor | None = None
        """Set when the executor broke; ``run`` then ends with it raised."""
        self._memory_paused = False
        self._cancelled: dict[str, None] = {}
        """Job ids whose cancellation was broadcast lately (oldest first, bounded)."""

    # -- slots -------------------------------------------------------------------------
    def free(self) -> int:
        """Slots not running, not about to run, and not promised to an open pull."""
        if self._stopping or self._memory_paused:
            return 0
        taken = self._starting + sum(p.credits for p in self._pullers.values())
        return self.executor.free_slots() - taken

    # -- lifecycle ---------------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: drain. Second call: stop at once."""
        if self._stop.is_set():
            log.warning("second stop request: cutting running jobs short")
            self._hard_stop.set()
        else:
            log.info(
                "stopping: no new jobs; %d running get %.0fs",
                len(self._running),
                self.settings.shutdown_grace,
            )
            self._stop.set()
        self._slots_changed.set()

    async def run(self) -> int:
        nc = await connect(
            self.settings,
            name=f"naq-supervisor {self.worker_id}",
            reconnected_cb=self._on_reconnected,
            disconnected_cb=self._on_disconnected,
        )
        self.client = client = Client(nc, self.settings)
        try:
            await client.layout(self.settings.namespace)
            for queue in self.queues:
                await ensure_consumer(client.js, self.layout, queue, self.settings)
            await self.executor.start()
            self._deps = DependencyWatch(client, self.layout)
            await self._deps.start()
            settler = Settler(
                client,
                self.layout,
                self.settings.result_ttl,
                self.worker_id,
                on_final=self._deps.settled,
            )
            info = Heartbeat(
                self.worker_id, self.queues, self.executor.name, self.executor.concurrency
            )
            await nc.subscribe(self.layout.cancel_subject, cb=self._on_cancel)
            if self.settings.max_memory:
                await self._check_memory()  # a supervisor born over the limit pulls nothing
            for queue in self.queues:
                puller = Puller(
                    nc,
                    queue,
                    self.layout.pull_subject(queue),
                    self.settings.pull_expires,
                    self.free,
                    self._slots_changed,
                    lambda q, m: self._dispatch(q, m, settler),
                    self._recreate_consumer,
                )
                await puller.start()
                self._pullers[queue] = puller
            background = [
                asyncio.create_task(p.run(), name=f"naq-pull-{q}") for q, p in self._pullers.items()
            ]
            background.append(asyncio.create_task(self._keep_leases(), name="naq-leases"))
            background.append(asyncio.create_task(self._heartbeat(info), name="naq-heartbeat"))
            background.append(
                asyncio.create_task(
                    deadletter.drain(client, self.layout, self.worker_id, self.settings.result_ttl),
                    name="naq-dead-letter",
                )
            )
            if self.settings.max_memory:
                background.append(asyncio.create_task(self._watch_memory(), name="naq-memory"))
            log.info(
                "supervisor %s: queues %s, executor %s x%d, namespace %s, %s",
                self.worker_id,
                ",".join(self.queues),
                self.executor.name,
                self.executor.concurrency,
                self.settings.namespace,
                self.settings.url,
            )
            self.ready.set()
            await self._stop.wait()
            await self._drain()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._deps.stop()
            with contextlib.suppress(Exception):
                await heartbeat.remove(client, self.layout, self.worker_id)
            if self.fatal is not None:
                raise self.fatal
            return 0
        finally:
            await client.close()

    async def _drain(self) -> None:
        self._stopping = True
        for puller in self._pullers.values():
            await puller.stop()
        if self._tasks:
            all_done = asyncio.gather(*self._tasks, return_exceptions=True)
            hard = asyncio.create_task(self._hard_stop.wait())
            waiters: list[asyncio.Future[Any]] = [all_done, hard]
            await asyncio.wait(
                waiters,
                timeout=self.settings.shutdown_grace,
                return_when=asyncio.FIRST_COMPLETED,
            )
            hard.cancel()
        # Whatever still runs is cut short; its Outcome is "cancelled" and it is nak'd.
        await self.executor.shutdown(0.0)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info(
            "supervisor %s stopped: %d processed, %d failed",
            self.worker_id,
            self.counters.processed,
            self.counters.failed,
        )

    # -- jobs --------------------------------------------------------------------------
    def _dispatch(self, queue: str, msg: Msg, settler: Settler) -> None:
        self._starting += 1
        task = asyncio.create_task(self._handle(queue, msg, settler))
        self._tasks.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots_changed.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("settling a job failed: %r", exc, exc_info=exc)

    async def _handle(self, queue: str, msg: Msg, settler: Settler) -> None:
        started = False
        try:
            try:
                meta, payload = decode_job(msg.data)
            except BadMessage as exc:
                if self._stopping:
                    await msg.nak()
                else:
                    await settler.fail(msg, queue, None, str(exc), None)
                    self._count_failure()
                return
            job = Delivery(msg, queue, meta, _attempt(msg))
            if self._stopping:  # reached us during the drain: hand it back, uncounted
                await self._history(job)
                job.interruptions += 1
                await settler.note(job, records.interrupted, "handed back by a stopping supervisor")
                await msg.nak()
                return
            if job.attempt > 1 and not await self._resume(settler, job):
                return
            if meta.job_id in self._cancelled:
                await msg.ack()  # cancelled while on its way here: it never runs
                return
            refusal = self._refuse(meta)
            if refusal:
                await settler.fail(msg, queue, job, refusal, None)
                self._count_failure()
                return
            call = Call(
                meta.job_id,
                meta.function,
                meta.serializer,
                payload,
                meta.options.timeout,
                meta.is_async,
                job.attempt,
                keep_result=meta.options.result_ttl != 0,
            )
            job.started_at = time.time()
            self._running[meta.job_id] = job
            self._starting -= 1
            started = True
            try:
                outcome = await self.executor.run(call)
            except BrokenExecutor as exc:
                await msg.nak()  # not the job's fault: hand it back untouched
                self._fail_fatally(exc)
                return
            finally:
                self._running.pop(meta.job_id, None)
            await self._settle(settler, job, outcome)
        finally:
            if not started:
                self._starting -= 1

    async def _resume(self, settler: Settler, job: Delivery) -> bool:
        """A redelivered job: read what its earlier deliveries left; False if it must not run.

        Finished (its ack was lost) or cancelled: ack and stop. Otherwise count the
        earlier deliveries that ended without a word (the worker died: a job that kills
        its supervisor every time) and dead-letter the job once they exceed its
        retries, so a poison job is never redelivered for ever.
        """
        record, previous_ended = await self._history(job)
        if record is not None and record.final:
            await job.msg.ack()
            return False
        if job.crashes > job.meta.options.max_retries:
            job.attempt -= 1  # this delivery does not run: count the runs there were
            await settler.fail(
                job.msg,
                job.queue,
                job,
                f"its worker died while running it {job.crashes} time(s); it is not run again",
                None,
            )
            self._count_failure()
            return False
        if not previous_ended:  # leave a trace, so the next delivery can count this one
            await settler.note(job, records.running, "the worker running it before died")
        return True

    async def _on_cancel(self, msg: Msg) -> None:
        """``cancel_job`` broadcast: stop the job if it runs here; skip it if it arrives."""
        job_id = msg.data.decode(errors="replace")
        self._cancelled[job_id] = None
        if len(self._cancelled) > CANCELLED_REMEMBERED:
            del self._cancelled[next(iter(self._cancelled))]
        if job_id in self._running and await self.executor.cancel(job_id):
            log.info("job %s cancelled while running", job_id)

    async def _history(self, job: Delivery) -> tuple[ResultRecord | None, bool]:
        """Fill in the job's crashes, interruptions and countable attempt from its record;
        also returns the record and whether the previous delivery ended with a word."""
        delivery = job.attempt
        if delivery == 1:
            return None, True
        record = await read_record(self.client_or_fail(), self.layout, job.meta.job_id)
        previous_ended = record is not None and record.ended_delivery() == delivery - 1
        job.crashes = (record.crashes if record else 0) + (0 if previous_ended else 1)
        job.interruptions = record.interruptions if record else 0
        job.attempt = delivery - job.interruptions
        return record, previous_ended

    def client_or_fail(self) -> Client:
        assert self.client is not None, "the supervisor is not connected"
        return self.client

    async def _settle(self, settler: Settler, job: Delivery, outcome: Outcome) -> None:
        if self._hard_stop.is_set() and outcome.status == "cancelled":
            log.info("job %s cut short by shutdown: handed back", job.meta.job_id)
        job.cancel_requested = job.meta.job_id in self._cancelled
        done = await settler.settle(job, outcome)
        if done == "finished":
            self.counters.processed += 1
        elif done == "failed":
            self.counters.failed += 1
        elif done == "retry":
            self.counters.retried += 1
        self._settled.set()

    def _fail_fatally(self, exc: BrokenExecutor) -> None:
        if self.fatal is None:
            log.error("%s: stopping", exc)
            self.fatal = exc
            self.request_stop()

    def _count_failure(self) -> None:
        self.counters.failed += 1
        self._settled.set()

    async def wait_until(self, predicate: Callable[[Counters], bool]) -> None:
        """Wait until ``predicate(counters)`` holds; woken by each settled job, no polling."""
        while not predicate(self.counters):
            self._settled.clear()
            await self._settled.wait()

    def _refuse(self, meta: JobMeta) -> str | None:
        if self.settings.job_serializer == "json" and meta.serializer != "json":
            return (
                f"job {meta.job_id} is serialized with {meta.serializer!r}; this supervisor "
                "runs with NAQ_JOB_SERIALIZER=json and never unpickles"
            )
        return None

    # -- background --------------------------------------------------------------------
    async def _keep_leases(self) -> None:
        """``in_progress()`` keeps a running job's message from being redelivered."""
        interval = max(0.2, self.settings.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            for running in list(self._running.values()):
                with contextlib.suppress(Exception):
                    await running.msg.in_progress()

    async def _heartbeat(self, info: Heartbeat) -> None:
        assert self.client is not None
        interval = self.settings.heartbeat_interval
        while True:
            record = info.record(self.executor, len(self._running), self.counters)
            record["running"] = [
                {
                    "job_id": job_id,
                    "queue": job.queue,
                    "attempt": job.attempt,
                    "started_at": job.started_at,
                    "enqueued_at": job.meta.enqueue_time,
                }
                for job_id, job in list(self._running.items())
            ]
            try:
                await heartbeat.beat(self.client, self.layout, record, interval * 3)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(interval)

    def total_rss(self) -> int:
        """RSS of the supervisor and its executor's children."""
        own = psutil.Process().memory_info().rss
        return own + sum(slot.rss for slot in self.executor.slots())

    async def _watch_memory(self) -> None:
        """Pause pulling while the total RSS is over ``max_memory``; resume below it."""
        while True:
            await asyncio.sleep(MEMORY_CHECK_INTERVAL)
            await self._check_memory()

    async def _check_memory(self) -> None:
        limit = self.settings.max_memory
        rss = self.total_rss()
        if rss > limit and not self._memory_paused:
            log.warning("memory %s over the limit of %s: not pulling jobs", _mib(rss), _mib(limit))
            self._memory_paused = True
            for puller in self._pullers.values():
                await puller.withdraw()
        elif rss <= limit and self._memory_paused:
            log.info("memory %s back under the limit: pulling again", _mib(rss))
            self._memory_paused = False
            self._slots_changed.set()

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            log.warning("lost the NATS connection; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        for puller in self._pullers.values():
            puller.reset()
        self._slots_changed.set()

    def _recreate_consumer(self, queue: str) -> None:
        if self.client is None or self._stopping:
            return
        log.warning("consumer for queue %s was deleted; creating it again", queue)
        task = asyncio.get_running_loop().create_task(
            ensure_consumer(self.client.js, self.layout, queue, self.settings)
        )
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _attempt(msg: Msg) -> int:
    """The delivery count, read straight off the ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (v1) or
    ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>...`` (v2); nats-py's
    ``msg.metadata`` parses the same with regexes, at several times the cost.
    """
    tokens = (msg.reply or "").split(".")
    try:
        return int(tokens[4] if len(tokens) == 9 else tokens[6])
    except (IndexError, ValueError):
        return 1
