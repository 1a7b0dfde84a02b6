"""Result writes one by one against JetStream atomic batches, on the server here.

Why: one ack for many records (ADR-50's atomic batch, nats-server 2.12+,
``allow_atomic``) looks like a way to make results cheaper. This measures what the
server does with it: N records of a no-op result's size, each with its ``Nats-TTL``
and its ``Nats-Expected-Last-Subject-Sequence`` guard, written to a results bucket
as naq declares it (plus ``allow_atomic``), either pipelined one publish and one ack
each (what naq does) or as atomic batches of ``--batch`` messages, one ack each.
On nats-server 2.15.1 here the batches were several times slower, so naq keeps
single, pipelined publishes (docs/architecture.md, "Publishing").

    python bench/result_batches.py [--records N] [--batch B ...] [--runs K]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
import uuid

import nats
from harness import emit, median_of, on_embedded_server
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from naq.settings import Settings
from naq.transport.declare import _kv_config
from naq.transport.names import kv_stream, kv_subject
from naq.transport.server import EmbeddedServer

RECORD = b"r" * 235
"""A no-op job's finished record is about this long."""


async def write(nc: NATS, bucket: str, n: int, batch: int) -> float:
    """Seconds to store ``n`` records; ``batch`` 1: one publish and one ack each, all in
    flight at once; above 1: atomic batches of that many, their commits in flight at once."""
    inbox = nc.new_inbox()
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future[Msg]] = {}

    async def answered(msg: Msg) -> None:
        future = waiting.pop(msg.subject, None)
        if future is not None:
            future.set_result(msg)

    sub = await nc.subscribe(f"{inbox}.*", cb=answered)
    started = time.perf_counter()
    for first in range(0, n, batch):
        size = min(batch, n - first)
        batch_id = uuid.uuid4().hex
        for number in range(1, size + 1):
            headers = {"Nats-TTL": "3600s", "Nats-Expected-Last-Subject-Sequence": "0"}
            if batch > 1:
                headers["Nats-Batch-Id"] = batch_id
                headers["Nats-Batch-Sequence"] = str(number)
                if number == size:
                    headers["Nats-Batch-Commit"] = "1"
            reply = ""
            if batch == 1 or number == size:
                reply = f"{inbox}.{first + number}"
                waiting[reply] = loop.create_future()
            key = kv_subject(bucket, f"{first + number:032x}")
            await nc.publish(key, RECORD, reply=reply, headers=headers)
    answers = await asyncio.wait_for(asyncio.gather(*waiting.values()), 120)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    for answer in answers:
        if "error" in json.loads(answer.data):
            raise RuntimeError(f"a write was refused: {answer.data!r}")
    return elapsed


async def one_run(url: str, args: argparse.Namespace) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    rates: dict[str, float] = {}
    try:
        for batch in [1, *args.batch]:
            bucket = f"rb{uuid.uuid4().hex[:8]}"
            config = _kv_config(bucket, Settings(nats_url=url))
            await js.add_stream(dataclasses.replace(config, allow_atomic=True))
            rates[f"batch_{batch}"] = args.records / await write(nc, bucket, args.records, batch)
            stored = (await js.stream_info(kv_stream(bucket))).state.messages
            if stored != args.records:
                raise RuntimeError(f"{stored} of {args.records} records stored")
            await js.delete_stream(kv_stream(bucket))
    finally:
        await nc.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.records < 1 or args.runs < 1 or any(b < 2 or b > 1000 for b in args.batch):
        parser.error("records and runs at least 1; each batch from 2 to 1,000")

    async def run(server: EmbeddedServer, version: str) -> None:
        emit(f"{args.records:,} result writes per figure, nats-server {version}")
        runs = [await one_run(server.url, args) for _ in range(args.runs)]
        median = median_of(runs)
        for key, rate in median.items():
            size = int(key.removeprefix("batch_"))
            what = "one by one, pipelined" if size == 1 else f"atomic batches of {size}"
            emit(f"  {what:<28}{rate:>10,.0f}/s{rate / median['batch_1']:>8.2f}")

    on_embedded_server(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
