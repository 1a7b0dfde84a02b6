"""Jobs of the fault suite: each completed run appends its number to a ledger file.

A ledger line is written when the job's body has run, so a number found twice is a
job whose effect happened twice (a run whose acknowledgement was lost), and a number
never found is a job lost. ``O_APPEND`` writes of one short line are atomic, so the
children of a process executor and the threads of a thread executor can share one
ledger.
"""

from __future__ import annotations

import asyncio
import os
import time


def _append(ledger: str, line: str) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def mark(ledger: str, n: int, seconds: float = 0.0) -> int:
    """Sleep ``seconds``, then record run ``n``. Before the sleep, a start line names
    the process, so a test can kill the one running a job."""
    if seconds:
        _append(ledger + ".started", f"{n} {os.getpid()}\n")
        time.sleep(seconds)
    _append(ledger, f"{n}\n")
    return n


async def amark(ledger: str, n: int, seconds: float = 0.0) -> int:
    """``mark`` for the asyncio executor: waits ``seconds`` (at least one turn of the
    loop), as real I/O would."""
    await asyncio.sleep(seconds)
    _append(ledger, f"{n}\n")
    return n
