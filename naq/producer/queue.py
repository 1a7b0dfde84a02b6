"""``Queue``: a named queue in a namespace, and everything a producer does with it.

Enqueueing (now, later, after dependencies, many at once), purging, cancelling, and
reading results and status. A ``Queue`` holds a counted reference to the pooled
connection of its event loop (``naq.transport.pool``); the module-level functions of
``naq.producer.api`` share one ``Queue`` per arguments instead.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from naq.errors import (
    ConfigurationError,
    JobNotFound,
    JobPending,
    PayloadTooLarge,
    QueueFull,
)
from naq.job import (
    DEFAULT_OPTIONS,
    OPTION_NAMES,
    Job,
    JobOptions,
    new_job_id,
    take_options,
    validate_job_id,
)
from naq.middleware import Middleware, Middlewares
from naq.serializers import describe, get_serializer
from naq.settings import Settings, validate_name
from naq.signing import JOB, SIGNATURE_HEADER
from naq.state.cancel import cancel
from naq.state.dependencies import dependency_ids, hold
from naq.state.status import JobStatus, job_status
from naq.state.store import iter_records, unpack, wait_record
from naq.transport.connect import Client
from naq.transport.names import SCHEDULE_HEADER, SCHEDULE_TARGET_HEADER, Layout
from naq.transport.pool import acquire, release
from naq.transport.publish import Outgoing
from naq.transport.retry import retry
from naq.transport.streams import purge_subject
from naq.wire import JobMeta, encode_job

HEADER_ROOM = 512
"""Bytes kept free under ``max_payload`` for the subject and headers."""

CallSpec = (
    tuple[Callable[..., Any], Sequence[Any]]
    | tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]
)


class Queue:
    """A named queue in a namespace; holds a pooled connection until :meth:`close`."""

    def __init__(
        self,
        name: str | None = None,
        nats_url: str | None = None,
        *,
        namespace: str | None = None,
        serializer: str | None = None,
        settings: Settings | None = None,
        default_timeout: float | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        """``default_timeout``: the timeout of jobs enqueued here that set none (a per
        queue default; workers enforce it like any job timeout). ``middleware``:
        instances whose producer hooks see every job enqueued here; by default those
        ``NAQ_MIDDLEWARE`` names (``naq.middleware``)."""
        # Arguments override the environment before it is validated, as on the CLI.
        given: dict[str, Any] = {
            "nats_url": nats_url,
            "namespace": namespace,
            "job_serializer": serializer,
        }
        self.settings = (
            settings.replace(**given) if settings is not None else Settings.from_env(None, **given)
        )
        # Only None means the default: "" (an unset variable, say) is a bad name, not
        # the default queue, or `naq purge "$QUEUE"` would purge the default queue.
        self.name = validate_name("queue", self.settings.default_queue if name is None else name)
        self.layout = Layout(self.settings.namespace)
        self.default_timeout = default_timeout
        self._signer = self.settings.signer
        self.middleware = Middlewares.configured(self.settings.middleware_names, middleware)
        self._subject_prefix = self.layout.job_subject_prefix(self.name)  # + job id, per job
        self._client: Client | None = None
        self._sticky = False

    @classmethod
    def pooled(
        cls, name: str | None = None, nats_url: str | None = None, *, namespace: str | None = None
    ) -> Queue:
        """A Queue that never closes its pooled connection: the module-level API's,
        shared by every loop that calls it (each finds its own loop's client)."""
        queue = cls(name, nats_url, namespace=namespace)
        queue._sticky = True
        return queue

    def __repr__(self) -> str:
        return f"<Queue {self.settings.namespace}.{self.name} at {self.settings.safe_url}>"

    async def connection(self) -> Client:
        """The client this queue publishes on, its namespace declared: for naq's own
        modules that act on the queue's namespace (schedules, the read API)."""
        if self._sticky:  # shared between loops: the pool finds this loop's client
            client = await acquire(self.settings, sticky=True)
        elif self._client is None:
            client = self._client = await acquire(self.settings)
        else:
            client = self._client
        await client.layout(self.settings.namespace)
        return client

    def prepare(
        self,
        func: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        job_id: str | None = None,
        **options: Any,
    ) -> tuple[Job, Outgoing]:
        """Validate and encode one call: the job and the message that carries it.

        ``options`` are the job options (see ``naq.job.OPTION_NAMES``); an unknown one is
        an error here rather than a surprise in the worker.
        """
        return self._prepare(func, args, kwargs, job_id, self._options(options))

    def _options(self, options: dict[str, Any]) -> JobOptions:
        if options:
            unknown = options.keys() - OPTION_NAMES
            if unknown:
                raise ConfigurationError(f"unknown job option(s): {', '.join(sorted(unknown))}")
        if self.default_timeout is not None:
            options = {"timeout": self.default_timeout, **options}
        return JobOptions.build(**options) if options else DEFAULT_OPTIONS

    def _prepare(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        job_id: str | None,
        job_options: JobOptions,
    ) -> tuple[Job, Outgoing]:
        if not callable(func):
            raise ConfigurationError(f"cannot enqueue {func!r}: it is not callable")
        job_id = validate_job_id(job_id) if job_id is not None else new_job_id()
        serializer = get_serializer(self.settings.job_serializer)
        ref, is_async = describe(func)
        meta = JobMeta(
            job_id=job_id,
            function=ref,
            queue=self.name,
            serializer=serializer.name,
            enqueue_time=time.time(),
            options=job_options,
            is_async=is_async,
        )
        body = encode_job(meta, serializer.dumps_call(func, tuple(args), dict(kwargs or {})))
        job = Job(
            job_id, meta.function, self.name, job_options, meta.enqueue_time, self.layout.namespace
        )
        headers = {"Nats-Msg-Id": job_id}
        if self._signer is not None:
            headers[SIGNATURE_HEADER] = self._signer.sign(JOB, body)
        if self.middleware:
            self.middleware.before_enqueue(job, headers)
        return job, Outgoing(self._subject_prefix + job_id, body, headers)

    def _check_size(self, client: Client, jobs: list[Job], messages: list[Outgoing]) -> None:
        """Refuse a job the server or the stream would refuse, before anything is sent."""
        limit, what = client.nc.max_payload - HEADER_ROOM, "the server's max_payload"
        if self.settings.max_message_size and self.settings.max_message_size < limit:
            limit, what = self.settings.max_message_size, "max_message_size"
        for job, message in zip(jobs, messages, strict=True):
            if len(message.payload) > limit:
                raise PayloadTooLarge(
                    f"job {job.job_id} ({job.function}) encodes to {len(message.payload)} bytes, "
                    f"over {what} ({limit} bytes): pass large data by reference (a path, "
                    "a URL, an object-store key)"
                )

    async def _publish(self, jobs: list[Job], messages: list[Outgoing]) -> list[Job]:
        client = await self.connection()
        self._check_size(client, jobs, messages)
        await self._check_room(client, messages)
        # Trouble (a leader election, a restart, a deleted stream declared again) is
        # ridden through by the publisher, for the connection's retry_window.
        await self._send(client, messages)
        self._enqueued(jobs)
        return jobs

    async def _check_room(self, client: Client, messages: list[Outgoing]) -> None:
        """Refuse jobs the job stream has no room for, before sending any.

        The job stream cannot refuse them itself: message schedules (delayed jobs) rule
        out ``DiscardPolicy.NEW``, and a work-queue stream that discards old messages
        when full would drop jobs already queued. So the producer asks the stream's
        state first: one round trip per enqueue call, only when a limit is set. It is a
        soft limit (producers enqueueing at the same moment can pass it by their own
        calls); the hard bound is the account's JetStream storage limit, where the
        server refuses publishes and drops nothing.
        """
        limits = self.settings
        if not (limits.max_stream_msgs or limits.max_stream_bytes):
            return
        info = await retry(
            lambda: client.js.stream_info(self.layout.stream),
            what="reading the job stream's state",
            nc=client.nc,
        )
        state = info.state
        adding = sum(len(m.payload) for m in messages)
        if (limits.max_stream_msgs and state.messages + len(messages) > limits.max_stream_msgs) or (
            limits.max_stream_bytes and state.bytes + adding > limits.max_stream_bytes
        ):
            raise QueueFull(
                f"the job stream of namespace {self.layout.namespace} holds {state.messages} "
                f"jobs ({state.bytes} bytes); {len(messages)} more would pass max_stream_msgs="
                f"{limits.max_stream_msgs or 'none'} / max_stream_bytes="
                f"{limits.max_stream_bytes or 'none'}: nothing was sent"
            )

    def _enqueued(self, jobs: list[Job]) -> None:
        if self.middleware:
            for job in jobs:
                self.middleware.emit_after("after_enqueue", job)

    @staticmethod
    async def _send(client: Client, messages: list[Outgoing]) -> None:
        if len(messages) == 1:
            m = messages[0]
            await client.publisher.publish(m.subject, m.payload, m.headers)
        else:
            await client.publisher.publish_many(messages)

    async def enqueue(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Job:
        """Enqueue ``func(*args, **kwargs)``; job options are taken out of ``kwargs``.

        Options: ``max_retries``, ``retry_delay``, ``timeout``, ``result_ttl``,
        ``job_id``. A function whose own keywords clash uses :meth:`enqueue_call`.
        """
        options = take_options(kwargs)
        return await self.enqueue_call(func, args, kwargs, **options)

    async def enqueue_call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Like :meth:`enqueue`, with the call's ``args``/``kwargs`` given explicitly.

        ``depends_on`` (a Job, a job id, or a list of them) holds the job until every
        dependency has finished; if one fails or is cancelled, so is this job.
        """
        depends_on = dependency_ids(options.pop("depends_on", None))
        job, message = self.prepare(func, args, kwargs, **options)
        if depends_on:
            client = await self.connection()
            self._check_size(client, [job], [message])
            await self._check_room(client, [message])
            await hold(client, self.layout, job.job_id, message, depends_on)
            self._enqueued([job])
            return job
        return (await self._publish([job], [message]))[0]

    async def enqueue_at(
        self, when: datetime.datetime, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Job:
        """Run ``func(*args, **kwargs)`` at ``when`` (a naive datetime is UTC).

        The job waits on the server as a message schedule (``Nats-Schedule: @at``) on
        ``{ns}.sched.{job_id}``: it fires even when no naq process runs, survives every
        restart, and a time in the past fires at once.
        """
        options = take_options(kwargs)
        if "depends_on" in options:
            raise ConfigurationError("a scheduled job takes no depends_on")
        job, message = self.prepare(func, args, kwargs, **options)
        headers = {
            **(message.headers or {}),  # a middleware's headers travel with the scheduled job
            SCHEDULE_HEADER: f"@at {rfc3339(when)}",
            SCHEDULE_TARGET_HEADER: message.subject,
        }
        scheduled = Outgoing(self.layout.sched_subject(job.job_id), message.payload, headers)
        return (await self._publish([job], [scheduled]))[0]

    async def enqueue_in(
        self, delay: datetime.timedelta | float, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Job:
        """Run ``func`` after ``delay`` (a timedelta, or seconds)."""
        seconds = delay.total_seconds() if isinstance(delay, datetime.timedelta) else float(delay)
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        return await self.enqueue_at(when, func, *args, **kwargs)

    async def cancel_scheduled(self, job_id: str) -> bool:
        """Cancel a delayed job before it fires; False if it is not waiting (any more)."""
        validate_job_id(job_id)  # a wildcard would purge every delayed job
        client = await self.connection()
        return (
            await purge_subject(client, self.layout.stream, self.layout.sched_subject(job_id)) > 0
        )

    async def enqueue_many(self, calls: Iterable[CallSpec], **options: Any) -> list[Job]:
        """Enqueue many calls, pipelined, each publish checked; Jobs in order.

        ``calls`` holds ``(func, args)`` or ``(func, args, kwargs)`` tuples; ``options``
        (except ``job_id``) apply to every job.
        """
        if "depends_on" in options:
            raise ConfigurationError(
                "enqueue_many takes no depends_on: enqueue such jobs one by one"
            )
        if "job_id" in options:
            raise ConfigurationError(
                "enqueue_many gives each job its own id; job_id is not allowed"
            )
        jobs: list[Job] = []
        messages: list[Outgoing] = []
        job_options = self._options(options)  # once: every job of the batch shares it
        for spec in calls:
            if not isinstance(spec, tuple) or len(spec) not in (2, 3):
                raise ConfigurationError(
                    f"enqueue_many takes (func, args) or (func, args, kwargs) tuples, got {spec!r}"
                )
            job, message = self._prepare(
                spec[0], spec[1], spec[2] if len(spec) == 3 else None, None, job_options
            )
            jobs.append(job)
            messages.append(message)
        if not jobs:
            return []
        return await self._publish(jobs, messages)

    async def purge(self) -> int:
        """Remove every job waiting on this queue; returns how many were removed."""
        client = await self.connection()
        return await purge_subject(
            client, self.layout.stream, self.layout.queue_subjects(self.name)
        )

    async def fetch_result(self, job_id: str, timeout: float | None = None) -> Any:
        """The job's return value, waiting up to ``timeout`` for it.

        Raises ``JobFailed`` (failed or cancelled), ``ResultTimeout`` (still pending
        after ``timeout``), ``JobPending`` (pending and no ``timeout``), or
        ``JobNotFound`` (unknown, or its result expired).
        """
        validate_job_id(job_id)  # bad ids fail here, before anything connects
        client = await self.connection()
        try:
            record = await wait_record(client, self.layout, job_id, timeout)
        except JobNotFound:
            status = await job_status(client, self.layout, job_id)  # raises JobNotFound
            raise JobPending(
                f"job {job_id} is {status.status}: pass timeout= to wait for its result"
            ) from None
        return unpack(
            record,
            allow_pickle=self.settings.job_serializer == "pickle",
            signed=self._signer is not None,
        )

    async def status(self, job_id: str) -> JobStatus:
        """Where the job is: queued, scheduled, running, finished, failed or cancelled."""
        validate_job_id(job_id)
        return await job_status(await self.connection(), self.layout, job_id)

    async def cancel(self, job_id: str) -> bool:
        """Cancel the job: True if it will not run (or was stopped), False if it was
        unknown or already over."""
        validate_job_id(job_id)  # "*" or ">" would name every job of the namespace
        return await cancel(await self.connection(), self.layout, job_id)

    async def fetch_results(self, job_ids: Iterable[str], timeout: float) -> dict[str, Any]:
        """Wait for many results at once; value, or the ``JobFailed`` error, by job id."""
        return {job_id: value async for job_id, value in self.as_completed(job_ids, timeout)}

    async def as_completed(
        self, job_ids: Iterable[str], timeout: float
    ) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``(job_id, value)`` as results land; a failed job's value is its
        ``JobFailed`` error. Raises ``ResultTimeout`` if not all came in ``timeout``."""
        job_ids = [validate_job_id(job_id) for job_id in job_ids]
        client = await self.connection()
        allow_pickle = self.settings.job_serializer == "pickle"
        async for record in iter_records(client, self.layout, job_ids, timeout):
            try:
                yield (
                    record.job_id,
                    unpack(record, allow_pickle=allow_pickle, signed=self._signer is not None),
                )
            except Exception as exc:
                yield record.job_id, exc

    async def close(self) -> None:
        if self._client is not None and not self._sticky:
            await release(self._client)
        self._client = None

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def rfc3339(when: datetime.datetime) -> str:
    """UTC, to the millisecond, as the server's schedules take it; naive means UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
