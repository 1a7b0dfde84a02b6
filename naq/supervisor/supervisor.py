"""The supervisor: pull jobs, hand them to the executor, settle their outcomes.

Data flow::

    JetStream NAQ_JOBS_{ns}               supervisor process
    ----------------------                   ------------------------------------------------
    {ns}.jobs.{queue} --pull(batch = free slots)--> Puller[queue] --Msg--> Jobs.dispatch()
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

One concept per module: ``jobs`` (one delivery, start to settle), ``puller`` (asking
the server for jobs), ``settle`` (outcome to NATS), ``leases``, ``memory``,
``signals``, ``deadletter`` (the ``max_deliver`` backstop); this module wires them
together and runs the supervisor's life.

Garbage collection: once ready, the supervisor freezes every object alive then
(``gc.freeze``: imports, the connection, the executor), so the collector's full
passes no longer walk them. They took 13 ms at a time every second or so under load,
a pause every job in hand waited out (the tail of the latency benchmark).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence

from nats.aio.msg import Msg

from naq import heartbeat
from naq.errors import EXIT_OK, EXIT_STOP_CUT, BrokenExecutor
from naq.executors.base import Executor
from naq.heartbeat import Counters, Heartbeat
from naq.metrics import ConsumerStats, MetricsServer, SupervisorMetrics, feed, serving
from naq.middleware import Middleware, Middlewares, WorkerInfo
from naq.settings import Settings, validate_name
from naq.state.dependencies import DependencyWatch
from naq.supervised import keep_running
from naq.supervisor import deadletter
from naq.supervisor.intake import take_in_held
from naq.supervisor.jobs import Jobs
from naq.supervisor.leases import keep_leases
from naq.supervisor.memory import MemoryWatch, total_rss
from naq.supervisor.puller import Puller
from naq.supervisor.settle import Settler
from naq.supervisor.signals import CLOSE_TIME, STOP_MARGIN, Stopping
from naq.transport.connect import Client, connect
from naq.transport.declare import ensure_consumer
from naq.transport.names import UNKNOWN_QUEUE, Layout

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        queues: list[str] | None = None,
        *,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        """``middleware``: instances to use; by default those ``settings.middleware``
        names (``--middleware``, ``NAQ_MIDDLEWARE``)."""
        self.settings = settings
        self.executor = executor
        # Checked here, before anything connects, so a bad name fails at once.
        self.queues = [validate_name("queue", q) for q in queues or [settings.default_queue]]
        self.layout = Layout(settings.namespace)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.middleware = Middlewares.configured(settings.middleware_names, middleware)
        self.client: Client | None = None
        self._consumer_stats: ConsumerStats | None = None
        self.metrics: SupervisorMetrics | None = None
        """With ``metrics_port`` set: the supervisor's metrics (a middleware, last)."""
        self._metrics_server: MetricsServer | None = None
        if settings.metrics_port:
            self.metrics = SupervisorMetrics(
                executor,
                lambda: [job.queue for job in self.jobs.running.values()],
                lambda: self._consumer_stats,
            )
            self.middleware = Middlewares([*self.middleware.items, self.metrics])
            self._metrics_server = MetricsServer(
                settings.metrics_host,
                settings.metrics_port,
                self.metrics.registry,
                self.metrics.refresh,
            )
        self._stopping = Stopping()
        self.jobs = Jobs(
            settings, executor, self.worker_id, self._stopping, self.middleware, self._fail_fatally
        )
        if self.metrics is not None:
            metrics = self.metrics
            self.jobs.on_dead_letter = lambda queue: feed(metrics.dead_lettered_unrun, queue)
        self._pull_at_least = self._smallest_pull()
        self._pullers: dict[str, Puller] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._ack_waits: dict[str, float] = {}
        """Each queue's consumer's ``ack_wait`` as last read: leases renew from it."""
        self._memory = MemoryWatch(settings.max_memory, executor, self._withdraw, self._resume)
        self.ready = asyncio.Event()
        """Set once the supervisor is pulling: tests and embedders wait on it."""
        self.fatal: BrokenExecutor | None = None
        """Set when the executor broke; ``run`` then ends with it raised."""
        self._cut = False
        """Set when the stop outran its deadline: the connection closes without a drain."""

    @property
    def counters(self) -> Counters:
        """Jobs processed, failed and retried so far."""
        return self.jobs.counters

    def running_jobs(self) -> list[str]:
        """Ids of the jobs running now (what the heartbeat reports), one per delivery."""
        return [job.meta.job_id for job in self.jobs.running.values()]

    async def wait_until(self, predicate: Callable[[Counters], bool]) -> None:
        """Wait until ``predicate(counters)`` holds; woken by each settled job, no polling."""
        await self.jobs.wait_until(predicate)

    async def wait_queue_idle(self, queue: str) -> None:
        """Return once ``queue``'s last pull request expired with nothing delivered: the
        queue holds one slot at most from then on (see ``naq.supervisor.puller``)."""
        await self.ready.wait()
        await self._pullers[queue].idle.wait()

    def total_rss(self) -> int:
        """RSS of the supervisor and its executor's children."""
        return total_rss(self.executor)

    # -- slots -------------------------------------------------------------------------
    def free(self) -> int:
        """Slots and look-ahead places not running, not about to run, and not promised
        to an open pull: jobs are asked for before slots free up, and each waits for one
        already leased (see ``Jobs.lookahead``)."""
        if self._stopping.draining or self._memory.paused or self.jobs.storage_full():
            return 0
        room = self.jobs.room() - sum(p.credits for p in self._pullers.values())
        if (
            room < self._pull_at_least
            and self.executor.ahead_open
            and self.jobs.unsettled() >= self._pull_at_least
        ):
            return 0  # short jobs in hand keep the slots busy: ask for a batch soon
        return room

    def _smallest_pull(self) -> int:
        """The smallest pull worth a request while jobs are in hand: half the
        room an idle supervisor has. Without it, each job that ends frees one place and
        a pull of one is sent for it, a request and a server round trip per job (the
        thread executor, whose jobs end one by one, spent half its time so). Only while
        the look-ahead is open: its jobs are short, so the room comes soon; with long
        jobs every free slot is asked for at once. Fixed for the supervisor's life, so
        worked out once, not on every ``free``."""
        if not self.settings.lookahead:  # no jobs held to feed the slots meanwhile
            return 1
        slots = self.executor.concurrency
        ahead = (
            slots * self.settings.lookahead if self.executor.queues_ahead else self.jobs.lookahead
        )
        return max(1, (slots + ahead) // 2)

    # -- lifecycle ---------------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: drain. Second call: stop at once."""
        if self._stopping.request():
            log.warning("second stop request: cutting running jobs short")
        else:
            log.info(
                "stopping: no new jobs; %d running get %.0fs",
                len(self.jobs.running),
                self.settings.shutdown_grace,
            )
        self.jobs.slots_changed.set()

    async def run(self) -> int:
        return await serving(self._metrics_server, self._run)

    async def _run(self) -> int:
        nc = await connect(
            self.settings,
            name=f"naq-supervisor {self.worker_id}",
            reconnected_cb=self._on_reconnected,
            disconnected_cb=self._on_disconnected,
        )
        self.client = client = Client(nc, self.settings)
        try:
            await client.layout(self.settings.namespace)
            self._consumer_stats = ConsumerStats(client, self.layout, self.queues)
            for queue in self.queues:
                consumer = await ensure_consumer(client.js, self.layout, queue, self.settings)
                self._ack_waits[queue] = float(consumer.config.ack_wait or self.settings.ack_wait)
            await self.executor.start()
            deps = DependencyWatch(client, self.layout)
            await deps.start()
            self.jobs.attach(
                client,
                Settler(
                    client,
                    self.layout,
                    self.settings.result_ttl,
                    self.worker_id,
                    on_final=deps.settled,
                    max_ttl=self.settings.max_result_ttl,
                    on_storage=self._on_storage,
                ),
            )
            await nc.subscribe(self.layout.cancel_subject, cb=self.jobs.on_cancel)
            if self.settings.max_memory:
                await self._memory.check()  # a supervisor born over the limit pulls nothing
            for queue in self.queues:
                puller = Puller(
                    nc,
                    queue,
                    self.layout.pull_subject(queue),
                    self.settings.pull_expires,
                    self.free,
                    self.jobs.slots_changed,
                    self.jobs.dispatch,
                    self._recreate_consumer,
                    self.jobs.hand_back,
                )
                await puller.start()
                self._pullers[queue] = puller
            info = Heartbeat(
                self.worker_id, self.queues, self.executor.name, self.executor.concurrency
            )
            background = self._start_background(client, info)
            worker = WorkerInfo(
                self.worker_id,
                self.settings.namespace,
                tuple(self.queues),
                self.executor.name,
                self.executor.concurrency,
            )
            self.middleware.emit("on_start", worker)
            await self._beat(info)  # listed by `naq workers` from the moment it is ready
            if self.settings.worker_id_file:
                heartbeat.write_id_file(self.settings.worker_id_file, self.worker_id)
            log.info(
                "supervisor %s: queues %s, executor %s x%d, namespace %s, %s",
                self.worker_id,
                ",".join(self.queues),
                self.executor.name,
                self.executor.concurrency,
                self.settings.namespace,
                self.settings.safe_url,
            )
            gc.freeze()  # see the module docstring: garbage collection
            self.ready.set()
            await self._stopping.requested.wait()
            code = EXIT_OK
            try:
                async with asyncio.timeout_at(self._stopping.deadline(self.settings) - CLOSE_TIME):
                    await self._stop(background, deps, worker)
            except TimeoutError:
                self._abandon()
                self._cut = True
                for task in background:  # before the connection closes under them
                    task.cancel()
                deps.abandon()
                await asyncio.wait(background, timeout=CLOSE_TIME)  # cancelled: quick
                code = EXIT_STOP_CUT
            if self.fatal is not None:
                raise self.fatal
            return code
        finally:
            if self.settings.worker_id_file:
                heartbeat.clear_id_file(self.settings.worker_id_file, self.worker_id)
            await self._close(client)

    async def _stop(
        self, background: list[asyncio.Task[None]], deps: DependencyWatch, worker: WorkerInfo
    ) -> None:
        """Everything a stop does before the connection closes: drain the jobs, end the
        background tasks and the dependency watch, remove the heartbeat."""
        assert self.client is not None
        await self._drain()
        for task in background:
            task.cancel()
        await asyncio.wait(background)  # each one's end was reported as it happened
        await deps.stop()
        self.middleware.emit_after("on_stop", worker)
        try:
            await heartbeat.remove(self.client, self.layout, self.worker_id)
        except Exception as exc:  # it expires by its TTL anyway
            log.warning("removing the heartbeat failed: %s", exc)

    def _abandon(self) -> None:
        """The stop outran its deadline (NATS frozen or gone, say): say what is left
        behind. Nothing is lost: a job not acked is redelivered after ``ack_wait``."""
        running = [job.meta.job_id for job in self.jobs.running.values()]
        log.error(
            "supervisor %s: stop deadline (shutdown_grace %.0fs + %.0fs) passed; exiting "
            "with %d job(s) not settled, left to redelivery after ack_wait%s",
            self.worker_id,
            self.settings.shutdown_grace,
            STOP_MARGIN,
            self.jobs.unsettled(),
            f" (running: {', '.join(running)})" if running else "",
        )

    async def _close(self, client: Client) -> None:
        """Close the connection, waiting for it until the stop deadline at most (at
        least ``CLOSE_TIME``): a frozen server must not hold the exit. A stop cut short
        closes without a drain (nats-py's drain outlives a cancellation by a flush of
        up to 10 s), as does a drain that overran."""
        loop = asyncio.get_running_loop()
        until = loop.time() + CLOSE_TIME
        if self._stopping.requested.is_set():
            until = max(until, self._stopping.deadline(self.settings))
        if not self._cut and await _within(client.close(), until - loop.time()):
            return
        if not self._cut:
            log.warning("draining the NATS connection did not end in time: closing it")
        if not await _within(client.nc.close(), max(CLOSE_TIME, until - loop.time())):
            log.warning("closing the NATS connection did not end in time; exiting without it")

    def _start_background(self, client: Client, info: Heartbeat) -> list[asyncio.Task[None]]:
        """Every long-lived task of the supervisor, each kept running: an error is logged
        with its traceback and the task starts again after a backoff (naq.supervised)."""
        running, waiting = self.jobs.running, self.jobs.waiting
        work: dict[str, Callable[[], Awaitable[None]]] = {
            f"naq-pull-{queue}": _restartable(puller) for queue, puller in self._pullers.items()
        }
        holding = self.jobs.settler.holding  # outcomes waiting for storage keep leases too
        work["naq-leases"] = lambda: keep_leases(
            lambda: (
                [job.msg for job in (*running.values(), *waiting.values())] + list(holding.values())
            ),
            self.lease_ack_wait,
        )
        work["naq-heartbeat"] = lambda: self._heartbeat(info)
        work["naq-dead-letter"] = lambda: deadletter.drain(
            client, self.layout, self.worker_id, self.settings, self.jobs.on_dead_letter
        )
        work["naq-held-intake"] = lambda: take_in_held(client, self.layout, self._refuse_held)
        if self.settings.max_memory:
            work["naq-memory"] = self._memory.run
        tasks = [
            asyncio.create_task(keep_running(name, run), name=name) for name, run in work.items()
        ]
        for task in tasks:
            task.add_done_callback(_report_death)
        return tasks

    async def _drain(self) -> None:
        self._stopping.draining = True
        self.jobs.hand_back_waiting()  # look-ahead jobs go back now, not after the grace
        self.executor.hand_back_queued()  # and those queued in the executor's children
        for puller in self._pullers.values():
            await puller.stop()
        await self.jobs.wait_all(self.settings.shutdown_grace)
        self.jobs.settler.give_up()  # outcomes still waiting for storage: handed back
        # Whatever still runs is cut short; its Outcome is "cancelled" and it is nak'd.
        await self.executor.shutdown(0.0)
        await self.jobs.settle_remaining()
        log.info(
            "supervisor %s stopped: %d processed, %d failed",
            self.worker_id,
            self.counters.processed,
            self.counters.failed,
        )

    async def _refuse_held(self, msg: Msg, reason: str) -> None:
        """A message on a held subject that is no job naq can take in: failed stream."""
        await self.jobs.settler.fail(msg, UNKNOWN_QUEUE, None, reason, None)
        self.jobs.count_failure(UNKNOWN_QUEUE)

    def _fail_fatally(self, exc: BrokenExecutor) -> None:
        if self.fatal is None:
            log.error("%s: stopping", exc)
            self.fatal = exc
            self.request_stop()

    # -- background --------------------------------------------------------------------
    async def _heartbeat(self, info: Heartbeat) -> None:
        """The heartbeat after the first (written before the supervisor is ready)."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            await self._beat(info)

    async def _beat(self, info: Heartbeat) -> None:
        assert self.client is not None
        state: heartbeat.State = "running"
        if self.fatal is not None:
            state = "broken"
        elif self._stopping.requested.is_set():
            state = "draining"
        record = info.record(
            self.executor,
            len(self.jobs.running),
            self.counters,
            state,
            None if self.fatal is None else str(self.fatal),
        )
        record["running"] = [
            {
                "job_id": job.meta.job_id,
                "function": job.meta.function,
                "queue": job.queue,
                "attempt": job.attempt,
                "started_at": job.started_at,
                "enqueued_at": job.meta.enqueue_time,
            }
            for job in list(self.jobs.running.values())
        ]
        ttl = self.settings.heartbeat_interval * 3
        try:
            await heartbeat.beat(self.client, self.layout, record, ttl)
        except Exception as exc:  # the next beat tries again; three missed and it expires
            log.warning("heartbeat failed: %s", exc)

    async def lease_ack_wait(self) -> float:
        """The ``ack_wait`` leases must beat: the smallest of the local setting and each
        queue's consumer's, read again now (another supervisor starting with other
        settings changes the consumer). A failed read keeps the last value known."""
        assert self.client is not None
        for queue in self.queues:
            try:
                info = await self.client.js.consumer_info(
                    self.layout.stream, self.layout.consumer(queue)
                )
            except Exception as exc:  # reconnecting, say: the last value known holds
                log.debug("reading the consumer of queue %s failed: %s", queue, exc)
                continue
            if info.config.ack_wait:
                self._ack_waits[queue] = float(info.config.ack_wait)
        return min([self.settings.ack_wait, *self._ack_waits.values()])

    async def _withdraw(self) -> None:
        for puller in self._pullers.values():
            await puller.withdraw()

    def _resume(self) -> None:
        self.jobs.slots_changed.set()

    def _on_storage(self, full: bool) -> None:
        """The server's storage turned full (stop pulling: end the open requests) or
        took a write again (pull again)."""
        if full:
            task = asyncio.get_running_loop().create_task(self._withdraw())
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
            task.add_done_callback(_report_death)
        else:
            self._resume()

    async def _on_disconnected(self) -> None:
        if not self._stopping.draining:
            log.warning("lost the NATS connection; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        if self.metrics is not None:
            feed(self.metrics.reconnects.inc)
        for puller in self._pullers.values():
            puller.reset()
        self.jobs.slots_changed.set()

    def _recreate_consumer(self, queue: str) -> None:
        if self.client is None or self._stopping.draining:
            return
        log.warning("consumer for queue %s was deleted; creating it again", queue)
        task = asyncio.get_running_loop().create_task(
            ensure_consumer(self.client.js, self.layout, queue, self.settings)
        )
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


async def _within(closing: Coroutine[None, None, None], seconds: float) -> bool:
    """Run ``closing`` for ``seconds`` at most; False if it did not end by then (it
    runs on, and a failure is logged). Not a cancellation: nats-py's drain swallows
    one and goes on flushing."""
    task = asyncio.ensure_future(closing)
    task.add_done_callback(_report_close)
    done, _ = await asyncio.wait({task}, timeout=max(0.0, seconds))
    return task in done


def _report_close(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("closing the NATS connection: %r", exc)


def _restartable(puller: Puller) -> Callable[[], Awaitable[None]]:
    """The puller's loop; after a failure it moves to a new inbox before asking again,
    so a request the failed run left open cannot deliver more than the free slots."""
    starts = 0

    async def run() -> None:
        nonlocal starts
        starts += 1
        if starts > 1:
            await puller.withdraw()
        await puller.run()

    return run


def _report_death(task: asyncio.Task[None]) -> None:
    """The last word of a background task that ended other than by being cancelled
    (a puller told to stop ends quietly; anything else is said with its traceback)."""
    if task.cancelled() or (exc := task.exception()) is None:
        return
    log.error("background task %s ended: %r", task.get_name(), exc, exc_info=exc)
