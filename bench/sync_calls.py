"""The sync API over many calls: ``enqueue_sync`` N times (default 100,000) from one
thread, reporting the rate of each tenth, so a slowdown as calls accumulate (a new
loop or connection per call, a growing table) would show as a falling rate.

Next to it, the same number of sequential ``js.publish`` calls from a plain nats-py
client on its own loop: the raw limit of one-at-a-time publishing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import nats

import naq
from naq.transport.pool import new_event_loop
from naq.transport.server import EmbeddedServer, free_port


def noop() -> None:
    return None


async def raw_sequential(url: str, n: int, size: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="RAWSEQ", subjects=["rawseq.>"], retention="workqueue")
    payload = b"x" * size
    started = time.perf_counter()
    for i in range(n):
        await js.publish("rawseq.q", payload, headers={"Nats-Msg-Id": str(i)})
    rate = n / (time.perf_counter() - started)
    await nc.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store, EmbeddedServer(free_port(), store) as server:
        tenth = args.calls // 10
        rates = []
        for block in range(10):
            started = time.perf_counter()
            for _ in range(tenth):
                naq.enqueue_sync(noop, nats_url=server.url, result_ttl=0)
            rates.append(tenth / (time.perf_counter() - started))
            print(f"calls {block * tenth:>7,}-{(block + 1) * tenth:>7,}: {rates[-1]:>8,.0f}/s")
        naq.close_sync_connections()
        size = len(naq.Queue(nats_url=server.url).prepare(noop, result_ttl=0)[1].payload)
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            raw = runner.run(raw_sequential(server.url, tenth, size))
        print(
            f"enqueue_sync median {statistics.median(rates):,.0f}/s; first tenth "
            f"{rates[0]:,.0f}/s, last {rates[-1]:,.0f}/s (last/first {rates[-1] / rates[0]:.2f})"
        )
        print(
            f"raw sequential js.publish {raw:,.0f}/s; enqueue_sync / raw = "
            f"{statistics.median(rates) / raw:.2f}"
        )


if __name__ == "__main__":
    main()
