"""A single publish whose ack does not come is failed by the publisher's one sweep
timer (``Publisher._expire``, no timer per publish) and tried again."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest

from naq.transport.publish import Publisher, Unacknowledged
from naq.transport.retry import set_window

WAIT = 15.0


async def test_an_unanswered_publish_is_tried_again_and_the_answer_to_a_later_try_counts(
    nats_url: str, namespace: str
) -> None:
    subject = f"{namespace}.slow"
    conn = await nats.connect(nats_url)
    heard = 0

    async def answer_the_second(msg: Any) -> None:
        nonlocal heard
        heard += 1
        if heard == 2:  # the first try is left unanswered: it must time out
            await conn.publish(msg.reply, b'{"stream":"SLOW","seq":7}')

    sub = await conn.subscribe(subject, cb=answer_the_second)
    await conn.flush()
    publisher = Publisher(conn, timeout=0.2)
    try:
        ack = await asyncio.wait_for(publisher.publish(subject, b"x", None), WAIT)
        assert ack.seq == 7
        assert heard == 2
        assert publisher._deadlines == {}, "an answered publish left its deadline behind"
    finally:
        await sub.unsubscribe()
        await publisher.close()
        await conn.close()


async def test_a_publish_never_answered_fails_once_the_window_is_spent(
    nats_url: str, namespace: str
) -> None:
    subject = f"{namespace}.silent"
    conn = await nats.connect(nats_url)
    set_window(conn, 1.0)
    sub = await conn.subscribe(subject)  # hears every try, answers none
    await conn.flush()
    publisher = Publisher(conn, timeout=0.2)
    try:
        with pytest.raises(Unacknowledged):
            await asyncio.wait_for(publisher.publish(subject, b"x", None), WAIT)
        assert sub.pending_msgs >= 2, "the publish was not tried again"
        assert publisher._deadlines == {}
    finally:
        await publisher.close()
        await conn.close()
