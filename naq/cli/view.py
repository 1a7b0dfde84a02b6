"""The one-screen view as text: ``naq info`` prints it once, ``naq info --watch`` again
every interval, ``naq workers`` prints its worker lines.

Everything shown comes from one ``naq.producer.info.overview`` call per screen, so the
CLI and a dashboard read the same thing. On a terminal ``--watch`` redraws in place
with a handful of ANSI sequences (the alternate screen, cursor home, erase to the end
of each line and below), as ``watch(1)`` and ``top`` do: the view is a plain text
table that the same functions print without ``--watch``, so a rendering library such
as rich would add a dependency (and its own dependencies) to every install, workers
included, for one command, and buy nothing the table needs. When stdout is not a
terminal, each interval prints one plain block instead, with no escape sequences, so
``naq info --watch > log`` and pipes read like repeated ``naq info`` calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TextIO

from naq.producer.info import LeaderInfo, LiveWorker, Overview, QueueInfo
from naq.state.overview import SCHEDULER_ROLE

QUEUE_COLUMNS = tuple(f.name for f in dataclasses.fields(QueueInfo) if f.name != "name")
"""The table's count columns, in the dataclass's order, so a new count shows up by itself."""

ENTER = "\x1b[?1049h\x1b[?25l"
"""Switch to the alternate screen (the shell's screen comes back at the end) and hide
the cursor."""
LEAVE = "\x1b[?25h\x1b[?1049l"
HOME = "\x1b[H"
ERASE_LINE = "\x1b[K"
ERASE_BELOW = "\x1b[J"

MIN_REFRESH_WAIT = 10.0
"""The least time a refresh may take before it counts as failed. Reads ride through
NATS trouble for ``retry_window`` (a minute by default); a view must say sooner that
it cannot read, and try again."""


def stamp(epoch: float) -> str:
    """A moment as ISO 8601 UTC to the second: sortable, one token, no locale."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def worker_line(worker: LiveWorker) -> str:
    """One worker as one line: a supervisor's load and size, or a scheduler's role;
    then how old its heartbeat is."""
    record = worker.record
    if worker.role == SCHEDULER_ROLE:
        line = (
            f"{worker.id}  scheduler {'LEADER' if worker.leader else 'standby'}  "
            f"schedules={record.get('schedules', '?')}  fired={record.get('fired', '?')}"
        )
    else:
        line = (
            f"{worker.id}  {record.get('executor', '?')} {worker.busy}/{worker.slots} busy  "
            f"queues={','.join(record.get('queues') or [])}  "
            f"processed={record.get('processed', '?')} failed={record.get('failed', '?')}  "
            f"rss={worker.rss // 1024**2}MiB"
        )
    if worker.heartbeat_age is not None:
        line += f"  beat {worker.heartbeat_age:.1f}s ago"
    return line


def queue_table(infos: list[QueueInfo]) -> list[str]:
    """The queues as aligned columns, a header first."""
    rows = [("queue", *QUEUE_COLUMNS)] + [
        (info.name, *(str(getattr(info, column)) for column in QUEUE_COLUMNS)) for info in infos
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def leader_line(leader: LeaderInfo | None, now: float) -> str:
    if leader is None:
        return "scheduler leader: none"
    held = f", leading for {int(now - leader.since)}s" if leader.since else ""
    return f"scheduler leader: {leader.id} (host {leader.host}, pid {leader.pid}{held})"


def overview_lines(view: Overview, heading: str = "") -> list[str]:
    """``naq info``'s text: the namespace (and ``heading``), the queue table, the live
    workers, the leader; blank lines between them."""
    count = len(view.workers)
    return [
        f"namespace {view.namespace}{heading}",
        "",
        *(queue_table(view.queues) if view.queues else ["no queues"]),
        "",
        f"{count} live worker{'s' * (count != 1)}" if count else "no live workers",
        *(f"  {worker_line(worker)}" for worker in view.workers),
        "",
        leader_line(view.leader, view.taken_at),
    ]


def overview_json(view: Overview) -> dict[str, Any]:
    """``naq info --json``'s object: the records as the read API's other calls return
    them, so a script written against ``list_workers`` reads the same fields."""
    return {
        "namespace": view.namespace,
        "queues": [dataclasses.asdict(info) for info in view.queues],
        "workers": [worker.record for worker in view.workers],
        "leader": None if view.leader is None else view.leader.record,
    }


@dataclasses.dataclass(slots=True)
class Frame:
    """What one interval shows: the latest view read, and the trouble if the last
    refresh failed (then ``view`` is the last good one)."""

    view: Overview
    now: float
    interval: float
    failing_since: float | None = None
    problem: str = ""
    warning: str = ""


def text_frame(frame: Frame, live: bool) -> list[str]:
    """The view with the moment in its first line. While refreshes fail, a line says
    since when and why; a terminal (``live``) keeps the last good view below it,
    marked with its time, where a plain block shows no stale counts that a reader
    could take for current ones."""
    heading = f" at {stamp(frame.now)}"
    if live:
        heading += f"  (every {frame.interval:g}s; Ctrl-C quits)"
    if frame.failing_since is None:
        return overview_lines(frame.view, heading)
    trouble = [
        f"namespace {frame.view.namespace}{heading}",
        f"cannot read from NATS since {stamp(frame.failing_since)} "
        f"({frame.now - frame.failing_since:.0f}s): {frame.problem}; "
        f"trying again every {frame.interval:g}s",
    ]
    if frame.warning:
        trouble.append(f"last warning: {frame.warning}")
    if not live:
        return trouble
    stale = overview_lines(frame.view)[1:]
    return [*trouble, "", f"last read at {stamp(frame.view.taken_at)}:", *stale]


def json_frame(frame: Frame) -> list[str]:
    """One JSON object per interval: ``naq info --json``'s with ``at``; while refreshes
    fail, ``error`` and ``failing_since`` instead of the counts."""
    if frame.failing_since is None:
        return [json.dumps({"at": frame.now, **overview_json(frame.view)})]
    return [
        json.dumps(
            {
                "at": frame.now,
                "namespace": frame.view.namespace,
                "error": frame.problem,
                "failing_since": frame.failing_since,
            }
        )
    ]


class Display(Protocol):
    def show(self, lines: list[str]) -> None: ...

    def close(self) -> None: ...


class Plain:
    """One block per interval, a blank line after each, flushed at once (a pipe would
    otherwise hold the blocks in its buffer)."""

    def __init__(self, out: TextIO, blank_line: bool = True) -> None:
        self.out = out
        self.end = "\n\n" if blank_line else "\n"

    def show(self, lines: list[str]) -> None:
        self.out.write("\n".join(lines) + self.end)
        self.out.flush()

    def close(self) -> None:
        pass


class Terminal:
    """The view redrawn in place on the alternate screen. Lines are cut to the
    terminal's width (a wrapped line would push the rest down) and to its height,
    read again at every frame, so a resize takes effect at the next one."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.out.write(ENTER)
        self.out.flush()

    def show(self, lines: list[str]) -> None:
        width, height = shutil.get_terminal_size()
        if len(lines) > height:
            more = len(lines) - height + 1
            lines = [*lines[: height - 1], f"... {more} more lines: enlarge the terminal"]
        # One column short of the edge: at the last column a terminal waits to wrap,
        # and erasing the line there would erase the last character.
        body = "\n".join(line[: max(1, width - 1)] + ERASE_LINE for line in lines)
        self.out.write(HOME + body + ERASE_BELOW)
        self.out.flush()

    def close(self) -> None:
        self.out.write(LEAVE)
        self.out.flush()


class LastWarning(logging.Handler):
    """Keeps the last warning logged (nats-py's reconnect attempts among them, which
    say why better than a read's timeout) for the view to show while reads fail. On a
    terminal it is the only place they show: a line written to stderr would land in
    the middle of the redrawn screen and be erased by the next frame."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


async def unless_stopped[T](work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None once ``stop`` is set first (``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait([task])  # its cancellation is ours, not an error to raise
    if task.cancelled():
        return None
    return task.result()


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` for ``stop``; True if it was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def watch(
    read: Callable[[], Awaitable[Overview]],
    *,
    interval: float,
    as_json: bool,
    redact: Callable[[str], str],
    out: TextIO | None = None,
) -> None:
    """Show ``read()`` every ``interval`` seconds until SIGINT or SIGTERM.

    The first read's error is raised (NATS unreachable at the start: the command
    exits with its message, and no screen was taken over). Later errors, and reads
    with no answer within ``MIN_REFRESH_WAIT`` (or three intervals), are shown in
    the view with the time they started, and the next interval tries again: a watch
    is left running through a server restart, and says so meanwhile.
    """
    out = out or sys.stdout
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        first = await unless_stopped(read(), stop)
        if first is None:
            return
        await _refresh(read, first, stop, interval, as_json, redact, out)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _refresh(
    read: Callable[[], Awaitable[Overview]],
    view: Overview,
    stop: asyncio.Event,
    interval: float,
    as_json: bool,
    redact: Callable[[str], str],
    out: TextIO,
) -> None:
    live = out.isatty() and not as_json
    display: Display = Terminal(out) if live else Plain(out, blank_line=not as_json)
    warnings = LastWarning()
    root = logging.getLogger()
    handlers: list[logging.Handler] = [warnings]
    if not live and not root.handlers:
        # Python writes warnings to stderr only while no handler is set: keep that.
        handlers.append(_stderr_handler())
    for handler in handlers:
        root.addHandler(handler)
    limit = max(MIN_REFRESH_WAIT, 3 * interval)
    frame = Frame(view, view.taken_at, interval)
    try:
        while True:
            try:
                display.show(json_frame(frame) if as_json else text_frame(frame, live))
            except BrokenPipeError:  # the reader went away (``| head``): nothing to show to
                _silence(out)
                return
            if await stopped_within(stop, interval):
                return
            started = time.time()
            try:
                fresh = await unless_stopped(asyncio.wait_for(read(), limit), stop)
            except Exception as exc:  # shown in the view, and tried again next interval
                problem = redact(str(exc)) or (
                    f"no answer in {limit:g}s"
                    if isinstance(exc, TimeoutError)
                    else type(exc).__name__
                )
            else:
                if fresh is None:
                    return  # stopped while reading
                frame = Frame(fresh, fresh.taken_at, interval)
                continue
            frame = Frame(
                frame.view,
                time.time(),
                interval,
                failing_since=frame.failing_since or started,
                problem=problem,
                warning=redact(warnings.message),
            )
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        try:
            display.close()
        except BrokenPipeError:
            _silence(out)


def _stderr_handler() -> logging.Handler:
    """What Python does with a warning when no handler is set (``logging.lastResort``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    return handler


def _silence(out: TextIO) -> None:
    """Point a closed stdout at /dev/null, so the interpreter's flush at exit does not
    fail on the pipe the reader closed."""
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not a real file (a test's buffer): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
