"""Publish acks: the usual shape is read without a JSON parse, every other shape as
before (``naq.transport.publish._parse_ack``)."""

from __future__ import annotations

from nats.aio.msg import Msg

from naq.errors import ServerFull
from naq.transport.publish import Ack, _parse_ack
from naq.transport.retry import Rejected


def _reply(data: bytes) -> Msg:
    return Msg(_client=None, subject="_INBOX.x.1", data=data)  # type: ignore[arg-type]


def test_the_usual_ack_is_read() -> None:
    assert _parse_ack(_reply(b'{"stream":"KV_a_results","seq":12}'), "s") == Ack(12, False)


def test_other_shapes_are_parsed_as_json() -> None:
    duplicate = _reply(b'{"stream":"S","seq":3,"duplicate":true}')
    assert _parse_ack(duplicate, "s") == Ack(3, True)
    assert _parse_ack(_reply(b'{"stream":"S","domain":"hub","seq":4}'), "s") == Ack(4, False)
    spaced = _reply(b'{"stream": "S", "seq": 5}')
    assert _parse_ack(spaced, "s") == Ack(5, False)


def test_errors_are_still_errors() -> None:
    wrong = _reply(
        b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},'
        b'"stream":"S","seq":0}'
    )
    refused = _parse_ack(wrong, "s")
    assert isinstance(refused, Rejected)
    assert refused.err_code == 10071
    full = _reply(b'{"error":{"code":503,"err_code":10047,"description":"no space"}}')
    assert isinstance(_parse_ack(full, "s"), ServerFull)
