"""The benchmark scripts import each other by bare name (``harness``, ``benchjobs``), as
they do when run from bench/: their directory goes on ``sys.path`` for these tests."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
