"""What every benchmark script shares: its own nats-server, one event loop, medians.

Each script starts the embedded server on a free port with a temporary store, runs its
measurements on one uvloop loop, and stops the server, so a run never depends on (or
disturbs) a server already running on the machine.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any

from naq.executors.registry import load_executor
from naq.settings import Settings
from naq.supervisor import Supervisor
from naq.transport.pool import new_event_loop
from naq.transport.server import EmbeddedCluster, EmbeddedServer, binary_version, free_port

READY = b"ready"
START_TIMEOUT = 60.0
"""Seconds a helper process (``Child``) may take to say it is ready."""
CHILD_TIMEOUT = 300.0
"""Seconds a helper process may take to stop and report once asked."""


def emit(line: str) -> None:
    print(line, flush=True)


def on_embedded_server[R](run: Callable[[EmbeddedServer, str], Coroutine[Any, Any, R]]) -> R:
    """``run(server, server_version)`` on a fresh embedded server, stopped afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="naq-bench-") as store,
        EmbeddedServer(free_port(), store) as server,
        asyncio.Runner(loop_factory=new_event_loop) as runner,
    ):
        return runner.run(run(server, binary_version()))


class Servers:
    """A single embedded server or an embedded cluster, behind one face: what a
    benchmark measuring both deployments starts, stops and crashes."""

    def __init__(self, nodes: int, store: Path, *, sync_always: bool) -> None:
        self.single: EmbeddedServer | None = None
        self.cluster: EmbeddedCluster | None = None
        if nodes == 1:
            self.single = EmbeddedServer(free_port(), store, sync_always=sync_always)
        else:
            self.cluster = EmbeddedCluster(nodes, store, sync_always=sync_always)

    @property
    def url(self) -> str:
        return self.single.url if self.single else self._cluster.url

    @property
    def _cluster(self) -> EmbeddedCluster:
        assert self.cluster is not None
        return self.cluster

    def start(self) -> None:
        if self.single:
            self.single.start()
        else:
            self._cluster.start()

    def crash_and_restart(self) -> None:
        """SIGKILL every server at once, then start them again on their stores."""
        if self.single:
            self.single.kill()
            self.single.start()
            return
        for node in self._cluster.nodes:
            node.kill()
        for node in self._cluster.nodes:
            node.start()
        self._cluster.wait_ready(60)

    def stop(self) -> None:
        if self.single:
            self.single.stop()
        else:
            self._cluster.stop()


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def write_json(path: Path | None, report: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        emit(f"\nwrote {path}")


# -- helper processes --------------------------------------------------------------------
class Child:
    """A process running a benchmark script with ``--role``: it prints ``ready`` once it
    can take messages, stops when its stdin closes, and prints what it measured on exit.
    Its stderr is kept in a file and shown if it fails.

    Why processes: a supervisor or a raw consumer sharing the benchmark's loop would be
    delayed by the producer's work, and several of them by each other, which a worker
    in production never is."""

    def __init__(self, proc: asyncio.subprocess.Process, errors: IO[bytes], what: str) -> None:
        self.proc = proc
        self.errors = errors
        self.what = what

    @classmethod
    async def start(cls, what: str, script: Path, *args: str) -> Child:
        errors = tempfile.TemporaryFile()  # noqa: SIM115 (open for the child's life; closed by finish or kill)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
        child = cls(proc, errors, what)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            await child.kill()
            raise RuntimeError(f"{what} was not ready in {START_TIMEOUT:.0f}s") from None
        if line.strip() != READY:
            await child.kill()
            raise RuntimeError(f"{what} exited before it was ready:\n{child.stderr()}")
        return child

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read().decode(errors="replace")[-4000:]

    async def finish(self, timeout: float = CHILD_TIMEOUT) -> bytes:
        """Close its stdin (asks it to stop), and return what it printed after ``ready``."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise RuntimeError(f"{self.what} did not stop in {timeout:.0f}s") from None
        if code != 0:
            raise RuntimeError(f"{self.what} exited with {code}:\n{self.stderr()}")
        self.errors.close()
        return out

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self.errors.close()


def say_ready() -> None:
    """What a ``--role`` process prints once it can take messages (``Child.start``)."""
    sys.stdout.buffer.write(READY + b"\n")
    sys.stdout.flush()


async def stdin_closed() -> None:
    """Returns when the benchmark closes this ``--role`` process's stdin: its stop."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


async def role_supervisor(settings: Settings) -> int:
    """A supervisor on its own: ``ready`` once it pulls; drains when stdin closes, then
    prints its counters as JSON."""
    sup = Supervisor(settings, load_executor(settings.executor)(settings.concurrency, settings))
    task = asyncio.create_task(sup.run())
    ready = asyncio.create_task(sup.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        await task  # raises what stopped it
        return 1
    say_ready()
    stop = asyncio.create_task(stdin_closed())
    await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    sup.request_stop()
    code = await task
    print(json.dumps({"processed": sup.counters.processed, "failed": sup.counters.failed}))
    return code
