"""What the dashboard keeps while it runs: the queues' rates over the last minutes.

The server keeps, per queue, how many jobs its consumer has delivered so far
(``naq.producer.info.delivered_counts``); the rate is that counter's change over time. The
dashboard samples it every ``SAMPLE_EVERY`` seconds and keeps ``HISTORY`` seconds of
samples; a chart starts when the dashboard starts (the counter itself is the
server's, so a restart loses the curve, never the totals).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from naq.producer.info import delivered_counts

SAMPLE_EVERY = 5.0
HISTORY = 600.0
CHART_WIDTH = 160
CHART_HEIGHT = 28


class Rates:
    """Samples of each queue's delivered counter, and the chart drawn from them."""

    def __init__(self, nats_url: str | None, namespace: str | None) -> None:
        self.target = {"nats_url": nats_url, "namespace": namespace}
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def add(self, now: float, delivered: dict[str, int]) -> None:
        self.samples.append((now, delivered))
        while self.samples and self.samples[0][0] < now - HISTORY:
            self.samples.popleft()

    async def sample(self) -> None:
        self.add(time.time(), await delivered_counts(**self.target))

    async def run(self) -> None:
        """Sample for ever (run under ``keep_running``)."""
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE_EVERY)

    def series(self, queue: str) -> list[float]:
        """Jobs per second between consecutive samples, oldest first."""
        points = []
        for (t0, a), (t1, b) in zip(self.samples, list(self.samples)[1:], strict=False):
            if queue in a and queue in b and t1 > t0:
                points.append(max(0, b[queue] - a[queue]) / (t1 - t0))
        return points

    def chart(self, queue: str) -> tuple[str, float]:
        """An SVG polyline's points for the queue's rate, and the last rate (jobs/s)."""
        points = self.series(queue)
        if not points:
            return "", 0.0
        top = max(max(points), 1e-9)
        step = CHART_WIDTH / max(len(points) - 1, 1)
        coords = " ".join(
            f"{i * step:.1f},{CHART_HEIGHT - (p / top) * (CHART_HEIGHT - 2) - 1:.1f}"
            for i, p in enumerate(points)
        )
        return coords, points[-1]
