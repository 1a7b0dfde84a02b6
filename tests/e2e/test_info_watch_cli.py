"""``naq info --watch`` as a real process: one plain block per interval when stdout is
a pipe, a screen redrawn in place under a pseudo-terminal, exit 0 on SIGINT and
SIGTERM, a clear error for a bad interval or a server that is not there, and a view
that says so, and goes on, when the server goes away mid-watch."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from naq import Queue, Settings
from naq.cli.view import ENTER, ERASE_BELOW, ERASE_LINE, HOME, LEAVE
from naq.scheduler import Scheduler
from naq.transport.server import EmbeddedServer, free_port
from tests import jobs
from tests.conftest import StartSupervisor, subprocess_env
from tests.e2e.conftest import NAQ, Proc, RunNaq, Spawn, table, worker_record

pytestmark = pytest.mark.e2e

INTERVAL = "0.3"
ROW = r"^{queue}\s+{waiting}\s+{running}\s+\d+\s+{failed}\s+{scheduled}\s+\d+$"
"""A queue's row in the table: waiting, running, redelivered, failed, scheduled,
consumers."""

WatchFn = Callable[..., Proc]


def blocks(lines: list[str]) -> list[list[str]]:
    """The watch's output cut into its blocks: each starts with ``namespace ... at``
    (the blank line after each is left out)."""
    found: list[list[str]] = []
    for line in lines:
        if line.startswith("namespace "):
            found.append([])
        if found:
            found[-1].append(line)
    return [block[: -1 if block[-1] == "" else None] for block in found]


@pytest.fixture
def watch(spawn: Spawn, nats_url: str, namespace: str) -> WatchFn:
    """Start ``naq info --watch`` (every 0.3 s) on the test's namespace and ARGS."""

    def start(*args: str, url: str = nats_url) -> Proc:
        return spawn(
            NAQ, "info", "--watch", "--interval", INTERVAL,
            "--nats-url", url, "--namespace", namespace, *args,
        )  # fmt: skip

    return start


@pytest.fixture
async def busy_queue(
    settings: Settings,
    start_supervisor: StartSupervisor,
    leader: Scheduler,
    js: JetStreamContext,
    namespace: str,
    tmp_path: Path,
) -> AsyncIterator[tuple[str, Path]]:
    """Known work on queue ``default``, served by one slot with no look-ahead: one job
    failed for good, one delayed an hour, one running until the gate opens, three
    waiting behind it. Yields the supervisor's id and the gate (opened at the end so
    the supervisor's drain is quick)."""
    gate = tmp_path / "gate"
    sup = await start_supervisor(["default"], concurrency=1, lookahead=0)
    async with Queue(settings=settings) as queue:
        await queue.enqueue(jobs.fail, "boom", max_retries=0)
        await asyncio.wait_for(sup.wait_until(lambda c: c.failed == 1), 10)
        await queue.enqueue_in(3600, jobs.add, 1, 2)
        await queue.enqueue(jobs.async_wait_for_file, str(gate), 60)
        await worker_record(js, namespace, sup.worker_id, lambda r: r["busy"] == 1)
        for i in range(3):
            await queue.enqueue(jobs.add, i, i)
    await worker_record(js, namespace, leader.heartbeat_key, lambda r: r["leader"])
    yield sup.worker_id, gate
    gate.touch()


async def test_without_a_terminal_each_interval_prints_one_plain_block(
    busy_queue: tuple[str, Path],
    watch: WatchFn,
    settings: Settings,
    leader: Scheduler,
) -> None:
    worker_id, _ = busy_queue
    proc = watch()
    await proc.line("^scheduler leader: ", stream="stdout")
    first = blocks(proc.lines["stdout"])[0]
    assert first[0].startswith(f"namespace {settings.namespace} at ")
    waiting, running, _, failed, scheduled, _ = table(first)["default"]
    assert (waiting, running, failed, scheduled) == (3, 1, 1, 1)
    assert "2 live workers" in first
    [line] = [line for line in first if line.strip().startswith(worker_id)]
    assert f"{worker_id}  asyncio 1/1 busy  queues=default  processed=0 failed=1" in line
    assert "rss=" in line
    assert " beat " in line
    assert first[-1].startswith(f"scheduler leader: {leader.scheduler_id} (host ")

    async with Queue(settings=settings) as queue:  # more work: the next blocks show it
        await queue.enqueue(jobs.add, 5, 5)
        await queue.enqueue(jobs.add, 6, 6)
    row = ROW.format(queue="default", waiting=5, running=1, failed=1, scheduled=1)
    await proc.line(row, stream="stdout")
    shown = blocks(proc.lines["stdout"])
    assert shown[0] == first
    assert next(i for i, block in enumerate(shown) if any(re.match(row, x) for x in block)) > 0
    assert all("\x1b" not in line for line in proc.lines["stdout"])  # no escape codes

    proc.send(signal.SIGINT)
    assert await proc.exit_code(15) == 0, proc.output()
    assert not any("Traceback" in line for line in proc.lines["stderr"]), proc.output()


async def test_with_json_each_interval_prints_one_object_and_sigterm_ends_it(
    watch: WatchFn, namespace: str, target: dict[str, str]
) -> None:
    proc = watch("--json")
    await proc.line(r'^\{"at": ', stream="stdout")
    await proc.line(r'^\{"at": ', stream="stdout", start=1)  # the next interval's
    proc.send(signal.SIGTERM)
    assert await proc.exit_code(15) == 0, proc.output()
    states = [json.loads(line) for line in proc.lines["stdout"]]
    assert len(states) >= 2
    assert {state["namespace"] for state in states} == {namespace}
    assert states[0]["at"] < states[1]["at"]
    assert set(states[0]) == {"at", "namespace", "queues", "workers", "leader"}


def run_in_pty(args: list[str], env: dict[str, str], frames: int, timeout: float) -> bytes:
    """Run ``args`` on a pseudo-terminal; once ``frames`` redraws were seen, SIGINT it
    and read to the end. Returns all it wrote; fails with it if the exit code is not 0."""
    pid, fd = pty.fork()
    if pid == 0:  # the child, in its own session: exec at once
        os.execve(args[0], args, env)
    out = b""
    try:
        deadline = time.monotonic() + timeout
        while out.count(HOME.encode()) < frames:
            assert time.monotonic() < deadline, f"{frames} frames not seen: {out!r}"
            if select.select([fd], [], [], 0.2)[0]:
                out += os.read(fd, 65536)
        os.kill(pid, signal.SIGINT)
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        assert code == 0, f"exit {code}: {out!r}"
        return out
    finally:
        os.close(fd)
        try:
            os.killpg(pid, signal.SIGKILL)  # only if it is still there
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


async def test_on_a_terminal_it_redraws_in_place_and_gives_the_screen_back(
    busy_queue: tuple[str, Path], nats_url: str, namespace: str
) -> None:
    args = [NAQ, "info", "--watch", "--interval", INTERVAL, "-u", nats_url, "-n", namespace]
    out = (await asyncio.to_thread(run_in_pty, args, subprocess_env(), 2, 30)).decode()
    assert out.startswith(ENTER)  # the alternate screen, cursor hidden
    assert out.endswith(LEAVE)  # the shell's screen and the cursor back
    frames = out.removeprefix(ENTER).removesuffix(LEAVE).split(HOME)[1:]
    assert len(frames) >= 2
    for frame in frames:
        assert frame.endswith(ERASE_BELOW)
        lines = frame.removesuffix(ERASE_BELOW).split("\r\n")
        assert all(line.endswith(ERASE_LINE) for line in lines)
        text = [line.removesuffix(ERASE_LINE) for line in lines]
        assert text[0].startswith(f"namespace {namespace} at ")
        assert "Ctrl-C quits" in text[0]
        assert table(text)["default"][:4] == [3, 1, 0, 1]


async def test_a_bad_interval_or_no_server_is_a_clear_error(naq: RunNaq) -> None:
    for bad in ("0", "-1", "soon"):
        proc = await naq("info", "--watch", "--interval", bad, code=2)
        assert any("Invalid value for '--interval'" in line for line in proc.lines["stderr"])
    alone = await naq("info", "--interval", "1", code=2)
    assert any("--interval applies to --watch only" in line for line in alone.lines["stderr"])
    down = await naq("info", "--watch", code=3, url=f"nats://127.0.0.1:{free_port()}")
    assert down.lines["stdout"] == []
    assert any("cannot connect to NATS at" in line for line in down.lines["stderr"])
    assert not any("Traceback" in line for line in down.lines["stderr"]), down.output()


async def test_a_server_gone_mid_watch_is_shown_and_the_watch_goes_on(
    tmp_path: Path, watch: WatchFn
) -> None:
    """The server stops after the first view: the blocks say since when the reads fail
    and why; once it is back (same port, same store), whole views again. Stopped while
    the server is gone, the watch still exits 0 (the connection's close used to fail
    on what nats-py buffered meanwhile: ``compat.drop_pending``)."""
    port = free_port()
    server = EmbeddedServer(port, tmp_path / "store").start()
    try:
        proc = watch(url=server.url)
        await proc.line("^scheduler leader: none$", stream="stdout")
        server.stop()
        trouble = await proc.line(r"^cannot read from NATS since \S+Z \(\d+s\): ", "stdout", 30)
        assert trouble.string.endswith("; trying again every 0.3s")
        await proc.line("^last warning: nats: ", "stdout", 30)  # the reconnects say why
        assert proc.popen.poll() is None
        server = EmbeddedServer(port, tmp_path / "store").start()
        after = len(proc.lines["stdout"])
        await proc.line("^scheduler leader: none$", "stdout", 30, start=after)

        server.stop()  # gone again, and Ctrl-C meanwhile: exit 0 all the same
        after = len(proc.lines["stdout"])
        await proc.line("^cannot read from NATS since ", "stdout", 30, start=after)
        proc.send(signal.SIGINT)
        assert await proc.exit_code(15) == 0, proc.output()
        assert not any("Traceback" in line for line in proc.lines["stderr"]), proc.output()
    finally:
        server.stop()
