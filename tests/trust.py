"""Helpers for the trust-boundary tests: hostile jobs published raw, the failed
stream's reasons heard as they come, and a working directory whose modules show
whether anything was imported or run."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from naq.job import DEFAULT_OPTIONS, new_job_id
from naq.transport.names import Layout
from naq.wire import JobMeta, encode_job

TASKS = """\
import os
from os import system

def add(a, b):
    return a + b
"""


async def publish_raw(
    nc: Any, namespace: str, function: str, args: list[Any], job_id: str | None = None
) -> str:
    """A json job message for ``function(*args)`` on its subject, as a hostile
    publisher would send it."""
    job_id = job_id or new_job_id()
    meta = JobMeta(job_id, function, "default", "json", time.time(), DEFAULT_OPTIONS, False)
    body = encode_job(meta, json.dumps([args, {}]).encode())
    subject = Layout(namespace).job_subject("default", job_id)
    await nc.jetstream().publish(subject, body, headers={"Nats-Msg-Id": job_id})
    return job_id


async def failed_reasons(sub: Any, job_ids: set[str], timeout: float = 15.0) -> dict[str, str]:
    """The failed stream's reason for each of ``job_ids``, heard as they are moved there."""
    reasons: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        while not job_ids <= reasons.keys():
            msg = await sub.next_msg(timeout=timeout)
            reasons[msg.headers["Naq-Job-Id"]] = msg.headers["Naq-Reason"]
    return reasons


class App:
    """The supervisor's working directory with its job module, a module outside it,
    and marker files that show whether anything was imported or run."""

    def __init__(self, tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.root = tmp_path / "app"
        elsewhere = tmp_path / "elsewhere"
        self.root.mkdir()
        elsewhere.mkdir()
        self.tasks = f"tasks_{tag}"
        self.outside = f"outside_{tag}"
        self.imported = tmp_path / "imported"
        self.ran = tmp_path / "ran"
        self.paths = (str(self.root), str(elsewhere))
        (self.root / f"{self.tasks}.py").write_text(TASKS)
        (elsewhere / f"{self.outside}.py").write_text(
            f"from pathlib import Path\nPath({str(self.imported)!r}).touch()\n\n"
            "def run(*args):\n    return 1\n"
        )

    def hostile(self) -> dict[str, tuple[list[Any], str]]:
        """function -> (arguments, what the failed stream's reason says)."""
        touch = f"touch {self.ran}"
        return {
            "os:system": ([touch], "module 'os' is not allowed"),
            "builtins:exec": ([f"open({str(self.ran)!r}, 'w')"], "'builtins' is not allowed"),
            "subprocess:run": ([["touch", str(self.ran)]], "'subprocess' is not allowed"),
            "importlib:import_module": ([self.outside], "'importlib' is not allowed"),
            f"{self.outside}:run": ([], f"'{self.outside}' is not allowed"),
            f".{self.tasks}:add": ([1, 2], "dotted identifiers"),
            f"{self.tasks}:os.system": ([touch], "'os' is a module"),
            f"{self.tasks}:system": ([touch], "defined in 'posix'"),
            f"{self.tasks}:add.__globals__": ([], "dunder names are not allowed"),
        }

    def assert_untouched(self) -> None:
        assert not self.imported.exists(), "a module outside the allow-list was imported"
        assert not self.ran.exists(), "a refused function ran"
        assert self.outside not in sys.modules


async def assert_hostile_jobs_refused(nc: Any, namespace: str, app: App) -> None:
    """Publish each of ``app.hostile()`` raw; each must reach the failed stream with its
    reason, and nothing refused may have been imported or run."""
    sub = await nc.subscribe(Layout(namespace).failed_subject(None))
    refused = {
        await publish_raw(nc, namespace, function, args): expected
        for function, (args, expected) in app.hostile().items()
    }
    reasons = await failed_reasons(sub, set(refused))
    await sub.unsubscribe()
    for job_id, expected in refused.items():
        assert expected in reasons[job_id], reasons[job_id]
    app.assert_untouched()
