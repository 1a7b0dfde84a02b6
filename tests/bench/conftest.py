"""The benchmark scripts import each other by bare name (``harness``, ``benchjobs``), as
they do when run from bench/: their directory goes on ``sys.path`` for these tests."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.conftest import subprocess_env

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


async def run_script(script: str, *args: str, timeout: float) -> tuple[int | None, bytes, bytes]:
    """Run ``bench/<script>`` as a user would, in its own process: its exit code and
    output; killed (and waited for) if it outlasts ``timeout``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / script),
        *args,
        env=subprocess_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, stdout, stderr
