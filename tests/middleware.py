"""Middleware the tests plug in; importable as ``tests.middleware`` by supervisors in
this process and in subprocesses (``--middleware tests.middleware:FileRecorder``)."""

from __future__ import annotations

import json
import os
from typing import Any

from naq.executors.base import Outcome
from naq.job import Job
from naq.middleware import JobContext, Middleware, WorkerInfo

HEADER = "X-Naq-Test"


class Recorder(Middleware):
    """Keeps every hook call as ``(hook, job id or worker id, detail)``, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.headers: dict[str, dict[str, str]] = {}

    def before_enqueue(self, job: Job, headers: dict[str, str]) -> None:
        self.events.append(("before_enqueue", job.job_id, None))

    def after_enqueue(self, job: Job) -> None:
        self.events.append(("after_enqueue", job.job_id, None))

    def on_start(self, worker: WorkerInfo) -> None:
        self.events.append(("on_start", worker.worker_id, worker.queues))

    def on_stop(self, worker: WorkerInfo) -> None:
        self.events.append(("on_stop", worker.worker_id, None))

    def before_job(self, job: JobContext) -> None:
        self.headers[job.job_id] = dict(job.headers)
        self.events.append(("before_job", job.job_id, job.attempt))

    def after_outcome(self, job: JobContext, outcome: Outcome) -> None:
        self.events.append(("after_outcome", job.job_id, outcome.status))

    def after_settle(self, job: JobContext, outcome: Outcome, action: str) -> None:
        self.events.append(("after_settle", job.job_id, action))

    def of(self, job_id: str) -> list[tuple[str, Any]]:
        return [(hook, detail) for hook, key, detail in self.events if key == job_id]


class Stamp(Middleware):
    """Sends a header with every job: what tracing and signing will do."""

    def before_enqueue(self, job: Job, headers: dict[str, str]) -> None:
        headers[HEADER] = f"stamped {job.job_id}"


class Forger(Middleware):
    """Tries to replace the message id naq set: it must not get through."""

    def before_enqueue(self, job: Job, headers: dict[str, str]) -> None:
        headers["Nats-Msg-Id"] = "forged"
        headers["Nats-TTL"] = "1s"


class Raising(Middleware):
    """Fails in every hook."""

    def before_enqueue(self, job: Job, headers: dict[str, str]) -> None:
        headers["X-Half-Done"] = "yes"
        raise RuntimeError("before_enqueue broke")

    def after_enqueue(self, job: Job) -> None:
        raise RuntimeError("after_enqueue broke")

    def on_start(self, worker: WorkerInfo) -> None:
        raise RuntimeError("on_start broke")

    def on_stop(self, worker: WorkerInfo) -> None:
        raise RuntimeError("on_stop broke")

    def before_job(self, job: JobContext) -> None:
        raise RuntimeError("before_job broke")

    def after_outcome(self, job: JobContext, outcome: Outcome) -> None:
        raise RuntimeError("after_outcome broke")

    def after_settle(self, job: JobContext, outcome: Outcome, action: str) -> None:
        raise RuntimeError("after_settle broke")


class FileRecorder(Middleware):
    """Appends one JSON line per hook to ``$NAQ_TEST_MIDDLEWARE_FILE``: for supervisors
    running as subprocesses."""

    def __init__(self) -> None:
        self.path = os.environ["NAQ_TEST_MIDDLEWARE_FILE"]

    def _write(self, *event: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")

    def on_start(self, worker: WorkerInfo) -> None:
        self._write("on_start", worker.worker_id)

    def before_job(self, job: JobContext) -> None:
        self._write("before_job", job.job_id, job.headers.get(HEADER))

    def after_settle(self, job: JobContext, outcome: Outcome, action: str) -> None:
        self._write("after_settle", job.job_id, action)

    def on_stop(self, worker: WorkerInfo) -> None:
        self._write("on_stop", worker.worker_id)


class NeedsArguments(Middleware):
    def __init__(self, required: str) -> None:
        self.required = required


class NotAMiddleware:
    pass
