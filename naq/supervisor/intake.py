"""Taking in jobs that wait for dependencies: from ``{ns}.held.*`` into the deps bucket.

A producer publishes a job enqueued with ``depends_on=`` on its held subject in the
job stream and writes nothing else (see ``naq.state.dependencies``); every supervisor
pulls those messages through one shared consumer and moves each into the deps
bucket, where the dependencies' ends release or cancel it. The message is acked only
once the job is in the bucket, so a supervisor killed half-way leaves it to be taken
in again (taking in is idempotent). A message that is not a held job naq can take in
(unreadable, unsigned under a signing key) goes to the failed stream with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from naq.state.dependencies import take_in
from naq.transport import commands
from naq.transport.connect import Client
from naq.transport.names import HELD_CONSUMER, Layout
from naq.wire import BadMessage

log = logging.getLogger(__name__)

WAIT = 30.0
"""Seconds one pull waits on an empty subject before asking again."""
RETRY_AFTER = 1.0
"""Seconds before a message whose taking in failed (the server busy, say) comes back."""

Refuse = Callable[[Msg, str], Awaitable[None]]
"""Moves a message that is no held job naq can take in to the failed stream, and acks it."""


async def take_in_held(client: Client, layout: Layout, refuse: Refuse) -> None:
    """Run for the supervisor's life, taking every held job into the deps bucket."""
    sub = await client.js.pull_subscribe(
        layout.held_subjects,
        durable=HELD_CONSUMER,
        stream=layout.stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=WAIT),
    )
    while True:
        try:
            held = await sub.fetch(1, timeout=WAIT)
        except TimeoutError:
            continue
        for msg in held:
            await _one(client, layout, msg, refuse)


async def _one(client: Client, layout: Layout, msg: Msg, refuse: Refuse) -> None:
    try:
        await take_in(client, layout, msg.subject, msg.data, msg.headers or {})
    except BadMessage as exc:
        log.warning("a held job could not be taken in: %s", exc)
        await refuse(msg, str(exc))
        return
    except Exception:  # the server, say: leave it for the next try, here or elsewhere
        log.exception("taking in the held job on %s failed; it comes back", msg.subject)
        await commands.nak(msg, delay=RETRY_AFTER)
        return
    await commands.ack(msg)
