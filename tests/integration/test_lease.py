"""Taking the scheduler lease rides through NATS trouble like every other write.

Seen in the compose file's first start: the schedulers declared the namespace on a
cluster that had just formed, and taking the lease met "no responders" while the new
lease bucket had no leader yet; the scheduler died with a traceback. Here the bucket's
stream is gone for a moment instead, which answers the same way, on cue.
"""

from __future__ import annotations

import asyncio
import logging

from naq.scheduler.leader import Lease
from naq.settings import Settings
from naq.transport.connect import Client, connect
from naq.transport.declare import declare
from naq.transport.names import Layout, kv_stream


class Seen(logging.Handler):
    """Sets ``event`` when a record's message holds ``text``."""

    def __init__(self, text: str, event: asyncio.Event) -> None:
        super().__init__()
        self.text, self.event = text, event

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_taking_the_lease_waits_for_its_bucket_to_answer(settings: Settings) -> None:
    layout = Layout(settings.namespace)
    client = Client(await connect(settings, name="lease"), settings)
    trouble = asyncio.Event()
    seen = Seen("NATS trouble while taking the scheduler lease", trouble)
    logging.getLogger("naq.transport.retry").addHandler(seen)
    try:
        await declare(client.js, layout, settings)
        lease = Lease(client, layout, "first", ttl=30.0, renew_interval=10.0)
        await lease.kv()  # the handle, looked up while the bucket is there
        await client.js.delete_stream(kv_stream(layout.leader_bucket))

        taking = asyncio.create_task(lease.try_acquire())
        noticed = asyncio.create_task(trouble.wait())
        await asyncio.wait({taking, noticed}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert noticed.done(), taking.exception() if taking.done() else "no try in 10 s"
        assert not taking.done()

        await declare(client.js, layout, settings)  # the bucket is back
        assert await asyncio.wait_for(taking, 20) is True
        assert lease.revision is not None
        await lease.release()
    finally:
        logging.getLogger("naq.transport.retry").removeHandler(seen)
        await client.close()
