"""The real CLI in subprocesses: output read line by line, every process killed at teardown.

Waiting is driven by what the processes say (their log lines) and by the workers KV,
never by fixed sleeps, so a slow machine makes the tests slower, not flaky.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from naq import close_connections
from naq.producer.schedules import list_schedules
from naq.transport.names import Layout
from tests.conftest import first_json, subprocess_env

BIN = Path(sys.executable).parent
NAQ = str(BIN / "naq")
NAQ_SUPERVISE = str(BIN / "naq-supervise")
READY = r"supervisor (?P<id>\S+): queues"
"""The supervisor's INFO line once it is pulling."""


class Proc:
    """A CLI process in its own session, its stdout and stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.args = args
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: teardown reaches its children
        )
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self.popen.stdout), ("stderr", self.popen.stderr))
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self, name: str, pipe: Any) -> None:
        for line in pipe:
            with self._changed:
                self.lines[name].append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return (
                f"$ {' '.join(self.args)}\n--- stdout ---\n"
                + "\n".join(self.lines["stdout"])
                + "\n--- stderr ---\n"
                + "\n".join(self.lines["stderr"])
            )

    def _finished_reading(self) -> bool:
        return not any(reader.is_alive() for reader in self._readers)

    def wait_line(
        self, pattern: str, stream: str = "stderr", timeout: float = 15.0
    ) -> re.Match[str]:
        """The first line of ``stream`` matching ``pattern``; fails if the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[stream]:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if self._finished_reading() or remaining <= 0:
                    why = "ended" if self._finished_reading() else f"did not print it in {timeout}s"
                    raise AssertionError(
                        f"expected a line matching {pattern!r} on {stream}; the process {why}\n"
                        + self.output()
                    )
                self._changed.wait(min(remaining, 0.5))

    async def line(
        self, pattern: str, stream: str = "stderr", timeout: float = 15.0
    ) -> re.Match[str]:
        return await asyncio.to_thread(self.wait_line, pattern, stream, timeout)

    def matching(self, pattern: str, stream: str = "stderr") -> list[str]:
        with self._changed:
            return [line for line in self.lines[stream] if re.search(pattern, line)]

    def send(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """The exit code; fails (with the output) if the process still runs after ``timeout``."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the process still runs {timeout}s later\n{self.output()}"
            ) from None
        for reader in self._readers:
            reader.join(5)
        return code

    async def exit_code(self, timeout: float) -> int:
        return await asyncio.to_thread(self.wait_exit, timeout)

    def kill(self) -> None:
        """SIGKILL the process and its group while the group is known to be ours."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        for reader in self._readers:
            reader.join(5)


Spawn = Callable[..., Proc]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start CLI processes with ``subprocess_env``; all are killed when the test ends."""
    procs: list[Proc] = []

    def start(*args: str, cwd: Path | None = None, **env: str) -> Proc:
        proc = Proc(list(args), subprocess_env(**env), cwd)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


SuperviseFn = Callable[..., Proc]


@pytest.fixture
def supervise(spawn: Spawn, nats_url: str, namespace: str) -> SuperviseFn:
    """``naq-supervise`` on the session server and the test's namespace, fast heartbeats."""

    def start(*args: str, **env: str) -> Proc:
        return spawn(
            NAQ_SUPERVISE,
            "--nats-url", nats_url,
            "--namespace", namespace,
            "--heartbeat-interval", "0.2",
            "--pull-expires", "2",
            *args,
            **env,
        )  # fmt: skip

    return start


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


def stream_name(namespace: str) -> str:
    return Layout(namespace).stream


async def worker_record(
    js: JetStreamContext,
    namespace: str,
    worker_id: str,
    predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """The first heartbeat of ``worker_id`` that satisfies ``predicate``, through a KV watch."""
    kv = await js.key_value(f"{namespace}_workers")
    seen: list[dict[str, Any]] = []
    record = await first_json(kv, worker_id, predicate, timeout, seen)
    if record is not None:
        return record
    raise AssertionError(f"no matching heartbeat of {worker_id} in {timeout}s; saw {seen[-3:]}")


@pytest.fixture
async def target(nats_url: str, namespace: str) -> AsyncIterator[dict[str, str]]:
    """Connection arguments for naq's module-level functions; declares the layout."""
    conn = {"nats_url": nats_url, "namespace": namespace}
    await list_schedules(**conn)  # connects, and so declares every stream and bucket
    yield conn
    await close_connections()
