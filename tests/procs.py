"""Real CLI processes for tests: output read line by line, each in its own session, so
teardown reaches the children it started and nothing else."""

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        self, pattern: str, stream: str = "stderr", timeout: float = 15.0, start: int = 0
    ) -> re.Match[str]:
        """The first line of ``stream`` matching ``pattern`` (from its line ``start`` on);
        fails if the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[stream][start:]:
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
        self, pattern: str, stream: str = "stderr", timeout: float = 15.0, start: int = 0
    ) -> re.Match[str]:
        return await asyncio.to_thread(self.wait_line, pattern, stream, timeout, start)

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
