"""Job functions that only the end-to-end tests need; importable as ``tests.e2e.jobs``."""

from __future__ import annotations

import time
from pathlib import Path


def slow_first_run(marker: str, seconds: float) -> str:
    """Sleeps on its first run only, so a job handed back mid-run is quick to run again."""
    path = Path(marker)
    if path.exists():
        return "second run"
    path.touch()
    time.sleep(seconds)
    return "first run"
