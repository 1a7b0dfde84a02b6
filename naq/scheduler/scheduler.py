"""The scheduler role: one leader fires recurring jobs; the others stand by.

The leader watches the schedules KV (no scans), keeps every active schedule's next
fire in memory, and sleeps until the earliest is due or a schedule changes. A fire:

1. checks the lease is certainly still ours (else it steps down, firing nothing);
2. publishes the job to its queue with a new job id per run,
   ``{schedule_id}-{fire_unix_seconds}``, which is also its ``Nats-Msg-Id``, so two
   leaders at once (a frozen one waking, a partition) publish the same run once
   within the stream's duplicate window;
3. records the run (``last_run``, ``repeat``, ``next_run``) by compare-and-set on
   the fresh record, so a concurrent pause or modification stays.

Publishing before recording means a leader dying in between leaves a run that the
next leader publishes again, and the server drops as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from nats.js.kv import KeyValue

from naq import heartbeat
from naq.cron import due, following
from naq.errors import ConfigurationError
from naq.job import Job
from naq.metrics import MetricsServer, SchedulerMetrics, feed, serving
from naq.middleware import Middleware, Middlewares
from naq.scheduler.leader import Lease
from naq.settings import Settings
from naq.signing import JOB, SCHEDULE, SIGNATURE_HEADER
from naq.state import schedules as store
from naq.state.schedules import ACTIVE, FAILED, Schedule, ScheduleNotFound
from naq.supervised import finish, keep_running
from naq.transport.connect import Client, connect
from naq.transport.kv import stop_watch
from naq.transport.names import Layout
from naq.wire import BadMessage, decode_job, encode_job

log = logging.getLogger(__name__)

MISSED_GRACE = 1.0
"""Under the ``skip`` policy, a tick later than this is dropped, not run."""


def run_job_id(schedule_id: str, fire: float) -> str:
    return f"{schedule_id}-{int(fire)}"


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        scheduler_id: str | None = None,
        *,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        """``middleware``: instances whose producer hooks see every run this scheduler
        fires; by default those ``settings.middleware`` names."""
        self.settings = settings
        self._signer = settings.signer
        self.middleware = Middlewares.configured(settings.middleware_names, middleware)
        self.scheduler_id = scheduler_id or f"{os.uname().nodename}-{os.getpid()}-{id(self):x}"
        self.ready = asyncio.Event()
        """Connected and contending for the lease."""
        self.leading = asyncio.Event()
        """Set while this scheduler is the leader."""
        self.fired = 0
        self.metrics: SchedulerMetrics | None = None
        """With ``metrics_port`` set: whether it leads, what it fired, reconnects."""
        self._metrics_server: MetricsServer | None = None
        if settings.metrics_port:
            self.metrics = SchedulerMetrics(lambda: self.is_leader)
            self._metrics_server = MetricsServer(
                settings.metrics_host,
                settings.metrics_port,
                self.metrics.registry,
                self.metrics.refresh,
            )
        self._stop = asyncio.Event()
        self._schedules: dict[str, tuple[Schedule, int]] = {}
        self._changed = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        return await serving(self._metrics_server, self._run)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        if self.metrics is not None:
            feed(self.metrics.reconnects.inc)

    async def _run(self) -> int:
        nc = await connect(
            self.settings,
            name=f"naq-scheduler {self.scheduler_id}",
            reconnected_cb=self._on_reconnected,
        )
        client = Client(nc, self.settings)
        lease: Lease | None = None
        beats: asyncio.Task[None] | None = None
        try:
            layout = await client.layout(self.settings.namespace)
            lease = Lease(
                client,
                layout,
                self.scheduler_id,
                self.settings.scheduler_lock_ttl,
                self.settings.scheduler_lock_renew_interval,
            )
            await lease.start_watching()
            beats = asyncio.create_task(self._heartbeat(client, layout))
            self.ready.set()
            while not self._stop.is_set():
                if not await self._until_stopped(lease.acquire()):
                    break
                self.leading.set()
                await self._beat(client, layout)  # say at once who leads now
                try:
                    await self._lead(client, layout, lease)
                finally:
                    self.leading.clear()
                    await self._beat(client, layout)
        finally:
            if beats is not None:
                await finish([beats], cancel=True)
                if self.settings.worker_id_file:
                    heartbeat.clear_id_file(self.settings.worker_id_file, self.heartbeat_key)
                try:
                    await heartbeat.remove(client, layout, self.heartbeat_key)
                except Exception as exc:  # its TTL removes it anyway
                    log.warning("removing the scheduler's heartbeat failed: %s", exc)
            if lease is not None:
                await lease.stop_watching()
                if not self._stop.is_set():  # cancelled: leave the lease to its TTL
                    lease.step_down()
                await lease.release()
            await client.close()
        return 0

    @property
    def heartbeat_key(self) -> str:
        return f"scheduler-{self.scheduler_id}"

    async def _beat(self, client: Client, layout: Layout) -> None:
        """The scheduler's record in the workers KV, beside the supervisors': whether it
        leads, so ``naq workers`` shows which scheduler fires."""
        record = {
            "id": self.heartbeat_key,
            "role": "scheduler",
            "leader": self.is_leader,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "fired": self.fired,
            "schedules": len(self._schedules),
            "heartbeat_at": time.time(),
        }
        interval = self.settings.heartbeat_interval
        try:
            await heartbeat.beat(client, layout, record, interval * 3)
        except Exception as exc:  # a missed beat is no reason to stop firing
            log.warning("scheduler heartbeat failed: %s", exc)

    async def _heartbeat(self, client: Client, layout: Layout) -> None:
        await self._beat(client, layout)
        if self.settings.worker_id_file:  # which record is ours, for `naq health`
            heartbeat.write_id_file(self.settings.worker_id_file, self.heartbeat_key)
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            await self._beat(client, layout)

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` unless a stop comes first; True if it finished."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _lead(self, client: Client, layout: Layout, lease: Lease) -> None:
        kv = await store.bucket(client, layout)
        self._schedules.clear()
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(lease, lost))
        # A watch that fails is opened again; its replay brings the schedules back.
        watcher = asyncio.create_task(keep_running("naq-schedules-watch", lambda: self._watch(kv)))
        try:
            while not self._stop.is_set() and not lost.is_set():
                wait = await self._fire_due(client, layout, kv, lease)
                if wait is None:  # stepped down
                    return
                self._changed.clear()
                waiters = [
                    asyncio.create_task(self._changed.wait()),
                    asyncio.create_task(self._stop.wait()),
                    asyncio.create_task(lost.wait()),
                ]
                try:
                    await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            for task in (renewer, watcher):
                task.cancel()
            await asyncio.wait([renewer, watcher])
            for task in (renewer, watcher):
                if not task.cancelled() and (exc := task.exception()) is not None:
                    log.error("scheduler task ended: %r", exc, exc_info=exc)
            if lost.is_set():
                lease.step_down()

    async def _renew(self, lease: Lease, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(lease.renew_interval)
            if not await lease.renew():
                lost.set()
                return

    async def _watch(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                known = self._schedules.get(entry.key)
                if known is not None and entry.revision is not None and entry.revision <= known[1]:
                    continue
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self._schedules.pop(entry.key, None)
                elif entry.revision is not None:
                    try:
                        schedule = Schedule.from_json(entry.value)
                    except ValueError as exc:  # not a record naq wrote
                        log.warning(
                            "schedule record %s is unreadable (%s): skipped", entry.key, exc
                        )
                        self._schedules.pop(entry.key, None)
                        continue
                    self._schedules[entry.key] = (schedule, entry.revision)
                self._changed.set()
        finally:
            await stop_watch(watcher)

    async def _fire_due(
        self, client: Client, layout: Layout, kv: KeyValue, lease: Lease
    ) -> float | None:
        """Fire what is due; seconds until the next fire (or a minute), None if we stepped down."""
        while True:
            now = time.time()
            active = [s for s, _ in self._schedules.values() if s.status == ACTIVE]
            ready = sorted((s for s in active if s.next_run <= now), key=lambda s: s.next_run)
            if not ready:
                upcoming = min((s.next_run for s in active), default=now + 60.0)
                return max(0.0, upcoming - now)
            for schedule in ready:
                if not lease.valid():
                    log.warning("scheduler %s: lease not certain, stepping down", lease.holder_id)
                    lease.step_down()
                    return None
                await self._fire(client, layout, kv, schedule, now)

    async def _mark_failed(self, kv: KeyValue, schedule: Schedule, reason: str) -> None:
        """A schedule that can never fire: marked failed with the reason, once, so no
        leader tries it again (it used to take each leader down in turn)."""
        log.error("schedule %s failed: %s", schedule.schedule_id, reason)

        def mutate(current: Schedule) -> Schedule | None:
            return (
                None if current.status == FAILED else current.replace(status=FAILED, error=reason)
            )

        written = await store.change(kv, schedule.schedule_id, mutate)
        if written is not None:  # not fired again before the watch brings the change
            self._schedules[schedule.schedule_id] = written

    async def _fire(
        self, client: Client, layout: Layout, kv: KeyValue, schedule: Schedule, now: float
    ) -> None:
        fire = schedule.next_run
        forged = self._signer is not None and not self._signer.valid(
            SCHEDULE, schedule.job, schedule.signature
        )
        if forged:  # once per tick: the tick is dropped like a skipped one, below
            log.error(
                "schedule %s is unsigned or badly signed: not fired (re-create it with "
                "the signing key)",
                schedule.schedule_id,
            )
        if not forged and due(fire, now, schedule.missed, MISSED_GRACE):
            try:
                meta, payload = decode_job(schedule.job)
                job_subject = layout.job_subject(
                    schedule.queue, run_job_id(schedule.schedule_id, fire)
                )
            except (BadMessage, ConfigurationError) as exc:
                await self._mark_failed(kv, schedule, f"its job cannot be read: {exc}")
                return
            job_id = run_job_id(schedule.schedule_id, fire)
            body = encode_job(dataclasses.replace(meta, job_id=job_id, enqueue_time=now), payload)
            headers = {"Nats-Msg-Id": job_id}
            if self._signer is not None:
                headers[SIGNATURE_HEADER] = self._signer.sign(JOB, body)
            job = None
            if self.middleware:
                job = Job(
                    job_id, meta.function, schedule.queue, meta.options, now, layout.namespace
                )
                self.middleware.before_enqueue(job, headers)
            ack = await client.publisher.publish(job_subject, body, headers)
            if job is not None:
                self.middleware.emit_after("after_enqueue", job)
            if not ack.duplicate:
                self.fired += 1
                if self.metrics is not None:
                    feed(self.metrics.fires.labels(schedule.queue).inc)
            log.debug("fired %s (schedule %s)", job_id, schedule.schedule_id)

            def mutate(current: Schedule) -> Schedule | None:
                return current.after_fire(fire, time.time())
        else:  # skip policy, or a template that is not signed: drop the tick, keep the cadence

            def mutate(current: Schedule) -> Schedule | None:
                if current.next_run != fire:
                    return None
                return current.replace(next_run=following(current.spec, fire, time.time()))

        try:
            written = await store.change(kv, schedule.schedule_id, mutate)
        except ScheduleNotFound:
            self._schedules.pop(schedule.schedule_id, None)
            return
        if written is not None:
            record, revision = written
            known = self._schedules.get(schedule.schedule_id)
            if known is None or known[1] < revision:
                self._schedules[schedule.schedule_id] = (record, revision)
        else:  # nothing to write: the record moved on; take it as it is now
            record, revision = await store.read(kv, schedule.schedule_id)
            self._schedules[schedule.schedule_id] = (record, revision)
