"""The loop inside a process-executor child: read a Call, run it, write the Outcome.

Kept small and free of NATS so a forkserver can preload it cheaply. A child runs
one job at a time; it exits when its socket closes (the supervisor is gone or
wants it gone), so no child outlives its supervisor.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import socket
import threading
import traceback
from typing import TYPE_CHECKING, BinaryIO

import psutil

from naq.errors import EXIT_CHILD_ORPHANED, EXIT_CHILD_PRELOAD
from naq.executors.calls import run_blocking
from naq.executors.frames import HEADER, pack, pack_outcome, unpack, unpack_call

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import SynchronizedArray

    Turns = SynchronizedArray[int]


def _read_frame(incoming: BinaryIO) -> bytes | None:
    """The next frame, or None once the supervisor's end is closed. Buffered: a small
    frame costs one ``recv``, header and body together."""
    try:
        size = incoming.read(HEADER.size)
        if len(size) < HEADER.size:
            return None
        length = HEADER.unpack(size)[0]
        data = incoming.read(length)
    except ConnectionResetError:  # the supervisor is gone without closing: the same
        return None
    return data if len(data) == length else None


def _exit_with_supervisor(sock: socket.socket) -> None:
    """Exit the moment the supervisor's end of the socket closes, even mid-job.

    A supervisor killed with SIGKILL cannot stop its children, and the job a child
    holds is about to be redelivered elsewhere: an orphan finishing it would run it
    twice at once. A thread polls the socket for hang-up only (never for data, which
    belongs to the main loop) and ends the process when it comes.
    """
    if not hasattr(select, "POLLRDHUP"):  # not Linux: EOF in the main loop still ends us
        return

    def watch() -> None:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP)
        poller.poll()
        os._exit(EXIT_CHILD_ORPHANED)

    threading.Thread(target=watch, name="naq-orphan-watch", daemon=True).start()


def _batch_class() -> None:
    """Run as a batch task (Linux ``SCHED_BATCH``): the same share of CPU, but a child
    woken by a call no longer preempts the supervisor that wrote it. The supervisor
    feeds every child and answers NATS; on a busy machine each of its writes to a
    child used to hand the CPU to that child mid-turn (measured on 2 cores: a
    write's wall time 37 µs, 10 µs as a batch task). Nothing else changes for the
    job: it is the class the kernel has for non-interactive, CPU-bound work."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _withdrawn(turns: Turns | None, seq: int) -> bool:
    """Whether the supervisor took call ``seq`` back; if not, it is marked started.

    ``turns`` is shared with the supervisor: ``turns[0]`` is the last call started,
    ``turns[1 + seq % (len - 1)] == seq`` marks ``seq`` taken back. Both sides decide
    under its lock, so a queued call is either started here or taken back there,
    never both (and the supervisor needs no reply from a busy child to know)."""
    if turns is None:
        return False
    with turns.get_lock():
        if turns[1 + seq % (len(turns) - 1)] == seq:
            return True
        turns[0] = seq
    return False


def main(
    sock: socket.socket,
    preload: tuple[str, ...],
    report_rss: bool = False,
    turns: Turns | None = None,
    max_jobs: int = 0,
    max_rss: int = 0,
) -> None:
    """Entry point of a child process (the ``target`` of its ``Process``).

    ``report_rss``: send the RSS after each job, for a supervisor with a memory limit
    per child to check; without one its watch reads it once a second instead, and the
    job path makes no ``/proc`` read per job.

    Calls arrive in order and may be queued in the socket behind the running one; each
    is checked against ``turns`` (see :func:`_withdrawn`) before it starts. A call
    taken back gets no reply.

    After ``max_jobs`` jobs, or a job that left it over ``max_rss`` bytes, the child
    exits on its own once the outcome is sent: it never starts a call queued behind
    that job, which the supervisor then sends to the slot's next child."""
    _exit_with_supervisor(sock)
    # Ctrl-C, systemd's stop (KillMode=control-group) and ``kill 0`` signal the whole
    # process group: the supervisor's drain decides what stops, and ends a child by
    # closing its socket or with SIGKILL, never with these.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _batch_class()
    me = psutil.Process()
    try:
        for module in preload:
            importlib.import_module(module)
    except BaseException as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        sock.sendall(pack({"error": f"preloading {module!r} failed: {error}"}))
        os._exit(EXIT_CHILD_PRELOAD)
    sock.sendall(pack({"ready": os.getpid(), "rss": me.memory_info().rss}))
    incoming = sock.makefile("rb")
    done = 0
    while True:
        data = _read_frame(incoming)
        if data is None:
            return
        head, body = unpack(data)
        seq = int(head.get("seq", 0))
        if _withdrawn(turns, seq):
            continue
        outcome = run_blocking(unpack_call(head, body))
        rss = me.memory_info().rss if report_rss else 0
        sock.sendall(pack_outcome(outcome, rss, seq))
        done += 1
        if (max_jobs and done >= max_jobs) or (max_rss and rss > max_rss):
            os._exit(0)  # retired: the outcome is in the supervisor's socket already
