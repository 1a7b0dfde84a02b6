"""Prometheus metrics of a supervisor or a scheduler, served at ``/metrics``.

Turned on by ``metrics_port`` (``--metrics-port``, ``NAQ_METRICS_PORT``; 0, the
default, is off) on ``metrics_host`` (default ``0.0.0.0``, so a container's port can
be published; narrow it to ``127.0.0.1`` where the port must stay local). Every name
starts with ``naq_``; the README lists them with their labels.

Why here, and why so:

- Counted in the supervisor, which sees every outcome whatever runs the job, so the
  process and interpreter executors need no multiprocess mode: each role has its own
  registry (``prometheus_client``'s global one is left alone, so several supervisors
  in one process, as in tests, count apart).
- Per-job counts come from the middleware seam (:class:`SupervisorMetrics` is a
  ``Middleware``), plus what no hook sees and the supervisor feeds: jobs
  dead-lettered without a run (unreadable, refused, killed their worker too often),
  reconnects. Gauges (jobs in progress, RSS, the queues' backlog) are read when
  scraped, not kept up to date on the job path.
- Labels are bounded and never carry job data: ``queue``, ``executor``, ``slot``, and
  for failures ``exception``, the exception's class (``Outcome.error_class``), never
  its message, which may carry a job's arguments.
- The queues' backlog, ack-pending and redelivered counts come from each queue's
  consumer info, read at most once per :data:`CONSUMER_INFO_TTL` however often and
  however many scrapers scrape (concurrent scrapes share one read, and a scrape
  waits for it :data:`SCRAPE_READ_TIMEOUT` at most); a failed read keeps the last
  values.
- The HTTP server runs on the role's own event loop (``asyncio.start_server``), so
  the collectors read the role's state without locks, and a scrape awaits the
  consumer info instead of blocking a thread on it. A scrape that fails answers 500
  and is logged; it never touches a job. A metrics hook that raises is isolated like
  any middleware's, and what the supervisor feeds is guarded the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from naq.errors import ConfigurationError
from naq.middleware import JobContext, Middleware
from naq.transport.connect import Client
from naq.transport.names import Layout

if TYPE_CHECKING:
    from naq.executors.base import Executor, Outcome

log = logging.getLogger(__name__)

CONSUMER_INFO_TTL = 5.0
"""Seconds a queue's consumer info is served from the cache: scrapes every second by
several Prometheus servers still read it from NATS once per this."""
SCRAPE_READ_TIMEOUT = 5.0
"""Seconds a scrape waits for fresh consumer info before it answers with the last."""
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
"""Job duration and queue wait, in seconds: from a no-op to a quarter of an hour."""
JOB_LABELS = ("queue", "executor")


def feed(count: Callable[..., None], *args: object) -> None:
    """Count what the role feeds (no hook sees it); a failure is logged, never raised
    into the role's path."""
    try:
        count(*args)
    except Exception:
        log.exception("metrics: counting failed; ignored")


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass(slots=True)
class QueueStats:
    """What a queue's consumer info says, as last read."""

    backlog: int
    ack_pending: int
    redelivered: int


class ConsumerStats:
    """Each queue's consumer info, read at most once per ``ttl`` seconds."""

    def __init__(
        self, client: Client, layout: Layout, queues: Iterable[str], ttl: float = CONSUMER_INFO_TTL
    ) -> None:
        self._client = client
        self._layout = layout
        self._queues = tuple(queues)
        self.ttl = ttl
        self._read_at = -float("inf")
        self._reading: asyncio.Task[None] | None = None
        self.stats: dict[str, QueueStats] = {}

    async def fresh(self) -> dict[str, QueueStats]:
        """The stats, read again first if older than the TTL (one read at a time)."""
        if time.monotonic() - self._read_at >= self.ttl:
            if self._reading is None:
                self._reading = asyncio.create_task(self._read())
                self._reading.add_done_callback(self._read_done)
            # asyncio.wait never cancels what it waits on: a scrape that gives up (or is
            # cut short) leaves the read to the others waiting on it
            await asyncio.wait([self._reading], timeout=SCRAPE_READ_TIMEOUT)
        return self.stats

    async def _read(self) -> None:
        for queue in self._queues:
            try:
                info = await self._client.js.consumer_info(
                    self._layout.stream, self._layout.consumer(queue)
                )
            except Exception as exc:  # reconnecting, say: the last values stand
                log.debug("metrics: reading the consumer of queue %s failed: %s", queue, exc)
                continue
            self.stats[queue] = QueueStats(
                info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0
            )
        self._read_at = time.monotonic()

    def _read_done(self, task: asyncio.Task[None]) -> None:
        self._reading = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("metrics: reading the queues' consumers failed: %r", exc)


class _Gauges(Collector):
    """Gauges computed when scraped, from a function of the role."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()

    def describe(self) -> Iterable[Metric]:
        return ()  # unchecked: the families depend on the role's state


class SupervisorMetrics(Middleware):
    """A supervisor's metrics: counted by its middleware hooks and fed by it."""

    def __init__(
        self,
        executor: Executor,
        running: Callable[[], Iterable[str]],
        consumers: Callable[[], ConsumerStats | None],
    ) -> None:
        """``running()``: the queue of each job running now; ``consumers()``: the
        consumer-info cache, once connected."""
        self.registry = _registry()
        self._executor = executor
        self._running = running
        self._consumers = consumers
        self._stats: dict[str, QueueStats] = {}
        self.reconnects = Counter(
            "naq_reconnects",
            "Reconnections to NATS after a lost connection",
            registry=self.registry,
        )
        r = self.registry
        self.started = Counter("naq_jobs_started", "Runs started", JOB_LABELS, registry=r)
        self.succeeded = Counter(
            "naq_jobs_succeeded", "Runs that succeeded", JOB_LABELS, registry=r
        )
        self.failed = Counter(
            "naq_jobs_failed",
            "Runs that failed (raised, timed out, crashed, could not load), by exception class",
            (*JOB_LABELS, "exception"),
            registry=r,
        )
        self.retried = Counter(
            "naq_jobs_retried", "Failed runs handed back for a retry", JOB_LABELS, registry=r
        )
        self.dead_lettered = Counter(
            "naq_jobs_dead_lettered",
            "Jobs moved to the failed stream (failed for good, refused or unreadable)",
            JOB_LABELS,
            registry=r,
        )
        self.redelivered = Counter(
            "naq_jobs_redelivered",
            "Runs of a job the server delivered before (retries, hand-backs, dead workers)",
            JOB_LABELS,
            registry=r,
        )
        self.duration = Histogram(
            "naq_job_duration_seconds",
            "Time from a run's start to its outcome",
            JOB_LABELS,
            registry=r,
            buckets=DURATION_BUCKETS,
        )
        self.queue_wait = Histogram(
            "naq_job_queue_wait_seconds",
            "Time from enqueue to the first run's start (a delayed job's delay included)",
            JOB_LABELS,
            registry=r,
            buckets=DURATION_BUCKETS,
        )
        r.register(_Gauges(self._gauges))

    async def refresh(self) -> None:
        """Before a scrape: the consumer info, read again if it is older than its TTL."""
        consumers = self._consumers()
        if consumers is not None:
            self._stats = dict(await consumers.fresh())

    # -- hooks -------------------------------------------------------------------------
    def before_job(self, job: JobContext) -> None:
        labels = (job.queue, self._executor.name)
        self.started.labels(*labels).inc()
        if job.delivered > 1:
            self.redelivered.labels(*labels).inc()
        else:
            self.queue_wait.labels(*labels).observe(max(0.0, job.started_at - job.enqueued_at))

    def after_outcome(self, job: JobContext, outcome: Outcome) -> None:
        labels = (job.queue, self._executor.name)
        self.duration.labels(*labels).observe(max(0.0, time.time() - job.started_at))
        failed = outcome.error_class
        if failed is not None:
            self.failed.labels(*labels, failed).inc()

    def after_settle(self, job: JobContext, outcome: Outcome, action: str) -> None:
        labels = (job.queue, self._executor.name)
        if outcome.status == "ok" and action in ("finished", "kept"):
            self.succeeded.labels(*labels).inc()
        elif action == "retry":
            self.retried.labels(*labels).inc()
        elif action == "failed":
            self.dead_lettered.labels(*labels).inc()

    # -- fed by the supervisor ---------------------------------------------------------
    def dead_lettered_unrun(self, queue: str) -> None:
        """A job moved to the failed stream without a run (no hook saw it)."""
        self.dead_lettered.labels(queue, self._executor.name).inc()

    # -- read when scraped -------------------------------------------------------------
    def _gauges(self) -> Iterator[Metric]:
        executor = self._executor.name
        in_progress = GaugeMetricFamily(
            "naq_jobs_in_progress", "Jobs running now", labels=JOB_LABELS
        )
        counts: dict[str, int] = {}
        for queue in self._running():
            counts[queue] = counts.get(queue, 0) + 1
        for queue in sorted(set(counts) | set(self._stats)):
            in_progress.add_metric([queue, executor], counts.get(queue, 0))
        yield in_progress
        yield from _queue_gauges(self._stats)
        slots = GaugeMetricFamily(
            "naq_slots", "Jobs the executor runs at once", labels=["executor"]
        )
        slots.add_metric([executor], self._executor.concurrency)
        yield slots
        yield from _rss_gauge(
            "naq_supervisor_rss_bytes", "Resident memory of the supervisor process"
        )
        children = GaugeMetricFamily(
            "naq_child_rss_bytes",
            "Resident memory of each executor child (process executor), by slot",
            labels=["executor", "slot"],
        )
        for slot in self._executor.slots():
            if slot.pid:
                children.add_metric([executor, str(slot.index)], slot.rss)
        yield children


class SchedulerMetrics:
    """A scheduler's metrics: whether it leads, what it fired, reconnects."""

    def __init__(self, leading: Callable[[], bool]) -> None:
        self.registry = _registry()
        self._leading = leading
        self.reconnects = Counter(
            "naq_reconnects",
            "Reconnections to NATS after a lost connection",
            registry=self.registry,
        )
        self.fires = Counter(
            "naq_scheduler_fires",
            "Runs of recurring jobs this scheduler published (duplicates not counted)",
            ["queue"],
            registry=self.registry,
        )
        self.registry.register(_Gauges(self._gauges))

    async def refresh(self) -> None:
        """Nothing to read before a scrape."""

    def _gauges(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily(
            "naq_scheduler_leader", "1 while this scheduler holds the lease and fires, else 0"
        )
        leader.add_metric([], 1.0 if self._leading() else 0.0)
        yield leader
        yield from _rss_gauge("naq_scheduler_rss_bytes", "Resident memory of the scheduler")


def _queue_gauges(stats: dict[str, QueueStats]) -> Iterator[Metric]:
    families = {
        "backlog": GaugeMetricFamily(
            "naq_queue_backlog",
            "Jobs waiting in the queue (consumer num_pending)",
            labels=["queue"],
        ),
        "ack_pending": GaugeMetricFamily(
            "naq_queue_ack_pending",
            "Jobs delivered and not acknowledged yet, across all supervisors",
            labels=["queue"],
        ),
        "redelivered": GaugeMetricFamily(
            "naq_queue_redelivered",
            "Jobs delivered more than once and not acknowledged yet",
            labels=["queue"],
        ),
    }
    for queue, stat in sorted(stats.items()):
        for name, family in families.items():
            family.add_metric([queue], getattr(stat, name))
    yield from families.values()


def _rss_gauge(name: str, help_text: str) -> Iterator[Metric]:
    gauge = GaugeMetricFamily(name, help_text)
    gauge.add_metric([], psutil.Process().memory_info().rss)
    yield gauge


class MetricsServer:
    """``/metrics`` over HTTP/1.0-style one-request connections, on the role's loop."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        refresh: Callable[[], Awaitable[None]],
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._refresh = refresh
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:  # taken, or an address this host does not have
            raise ConfigurationError(
                f"metrics port {self.host}:{self.port} cannot be served: {exc.strerror or exc}"
            ) from None
        log.info("metrics at http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(SCRAPE_READ_TIMEOUT * 2):
                status, body, kind = await self._answer(reader)
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError) as exc:  # went away, too slow,
            log.debug("metrics: a scrape ended early: %r", exc)  # or a line over 64 KiB
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        request = (await reader.readline()).decode("latin-1").split()
        while (await reader.readline()).strip():  # the request's headers: not needed
            pass
        text = "text/plain; charset=utf-8"
        if len(request) < 2 or request[0] not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"GET /metrics\n", text
        if request[1].partition("?")[0] != "/metrics":
            return "404 Not Found", b"metrics are at /metrics\n", text
        try:
            await self._refresh()
            body = generate_latest(self._registry)
        except Exception:  # a collector's bug: said here, never near a job
            log.exception("metrics: a scrape failed")
            return "500 Internal Server Error", b"scrape failed; see the log\n", text
        return "200 OK", b"" if request[0] == "HEAD" else body, CONTENT_TYPE_LATEST


async def serving(server: MetricsServer | None, role: Callable[[], Awaitable[int]]) -> int:
    """Run a role with its metrics served for its whole life (``server`` None: none).

    The port is opened first, so a port taken fails before anything connects."""
    if server is None:
        return await role()
    await server.start()
    try:
        return await role()
    finally:
        await server.stop()
