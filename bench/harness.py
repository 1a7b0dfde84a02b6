"""What every benchmark script shares: its own nats-server, one event loop, medians.

Each script starts the embedded server on a free port with a temporary store, runs its
measurements on one uvloop loop, and stops the server, so a run never depends on (or
disturbs) a server already running on the machine.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from naq.transport.pool import new_event_loop
from naq.transport.server import EmbeddedServer, binary_version, free_port


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


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def write_json(path: Path | None, report: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        emit(f"\nwrote {path}")
