"""Reading a role's ``/metrics`` over real HTTP, and its samples by name and labels."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, frozenset[tuple[str, str]]]


async def scrape(port: int, path: str = "/metrics") -> str:
    """GET ``path`` from 127.0.0.1:``port``; the body of a 200 answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode()
    assert " 200 " in status + " ", f"{status}: {body.decode(errors='replace')}"
    return body.decode()


def samples(text: str) -> dict[Sample, float]:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    """The one sample ``name`` with exactly ``labels``, or None."""
    return samples(text).get((name, frozenset(labels.items())))


def named(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample called ``name``, by its labels."""
    return {labels: v for (n, labels), v in samples(text).items() if n == name}
