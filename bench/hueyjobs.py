"""The huey side of bench/peers.py: the huey instance and its no-op task.

``huey_consumer`` imports this module by name (``hueyjobs.huey``), in the consumer
and in each worker process it forks, so it may not live in the script's ``__main__``.
It is configured by the environment peers.py sets before it imports this module or
starts the consumer: the Redis port of the run, and the FIFO each finished task
writes one byte to.

``results=False``: huey stores no result, as naq's figure runs with ``result_ttl=0``.
A completion is counted by one byte written to a FIFO that peers.py reads (one
``write`` syscall, a microsecond or two, not a Redis round trip), so counting costs
huey about what naq's in-process counters cost it.
"""

from __future__ import annotations

import os

from huey import RedisHuey

PORT_ENV = "BENCH_PEERS_REDIS_PORT"
FIFO_ENV = "BENCH_PEERS_DONE_FIFO"

huey = RedisHuey("naqpeers", host="127.0.0.1", port=int(os.environ[PORT_ENV]), results=False)

_done: list[int] = []
"""The FIFO, opened by the first task a worker process runs (each worker opens its own)."""


@huey.task()
def noop_counted() -> None:
    if not _done:
        _done.append(os.open(os.environ[FIFO_ENV], os.O_WRONLY))
    os.write(_done[0], b".")
