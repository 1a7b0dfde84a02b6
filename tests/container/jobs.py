"""Jobs for the image's tests, imported inside the container from /app/tests."""

from __future__ import annotations

import os
import time


def orphan(seconds: float) -> int:
    """Leave a process behind whose parent is gone (a double fork, as a daemonising
    tool does): it is re-parented to PID 1, which must reap it when it exits. Returns
    its pid."""
    read, write = os.pipe()
    if os.fork() == 0:  # the middle process: fork the orphan, say its pid, go
        os.close(read)
        pid = os.fork()
        if pid == 0:
            time.sleep(seconds)
            os._exit(0)
        os.write(write, str(pid).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        pid = int(pipe.read())
    os.wait()  # the middle process is ours to reap
    return pid
