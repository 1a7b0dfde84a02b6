"""What runs inside a subinterpreter: one frame in, one frame out.

Imported in every subinterpreter of the interpreter executor, so it imports only
what loads there (psutil, for one, refuses to).
"""

from __future__ import annotations

from naq.executors.calls import run_blocking
from naq.executors.frames import HEADER, pack_outcome, unpack, unpack_call


def run(frame: bytes) -> bytes:
    outcome = run_blocking(unpack_call(*unpack(frame)))
    return pack_outcome(outcome, 0)[HEADER.size :]
