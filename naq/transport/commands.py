"""The protocol commands naq sends per job (a publish, an ack), built in one step.

Why not ``Client.publish`` and ``Msg.ack``: nats-py checks the subject with a regex,
checks and encodes every header on every call, and runs four coroutines per message
to reach its pending buffer. A supervisor sends two of these per job (the result,
the ack) and a producer one, so that layer alone was a tenth of a supervisor's CPU.
Here a command is one ``bytes`` formatting and one plain call
(``compat.send_command``), with nats-py's own rules kept: header keys are the
token characters nats-py accepts (each distinct key checked once), values trimmed,
CR and LF in them turned into spaces; a subject with whitespace is refused, since
it would let a caller inject protocol commands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError

from naq.transport import compat

_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_BAD_SUBJECT = re.compile(r"[\s]")
_CHECKED_KEYS: set[str] = set()
"""Header keys found valid; a bounded memo (``_KEYS_REMEMBERED``), as keys repeat."""
_KEYS_REMEMBERED = 256

ACK = b"+ACK"
NAK = b"-NAK"


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The ``NATS/1.0`` header block of ``headers``, as nats-py would encode it."""
    lines = ["NATS/1.0\r\n"]
    for raw_key, value in headers.items():
        key = raw_key.strip()
        if not key:
            continue
        if key not in _CHECKED_KEYS:
            if not _KEY.fullmatch(key):
                raise BadHeaderError(key)
            if len(_CHECKED_KEYS) < _KEYS_REMEMBERED:
                _CHECKED_KEYS.add(key)
        lines.append(f"{key}: {value.strip().translate(_NEWLINES)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def publish_command(
    subject: str, reply: str, payload: bytes, headers: Mapping[str, str] | None
) -> bytes:
    """``PUB`` (or ``HPUB`` with headers) of ``payload`` to ``subject``, answered on
    ``reply`` (empty: none)."""
    if not subject or _BAD_SUBJECT.search(subject) or _BAD_SUBJECT.search(reply):
        raise BadSubjectError
    target = f"{subject} {reply}" if reply else subject
    if not headers:
        return b"PUB %s %d\r\n%s\r\n" % (target.encode(), len(payload), payload)
    head = encode_headers(headers)
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (
        target.encode(),
        len(head),
        len(head) + len(payload),
        head,
        payload,
    )


async def publish(
    nc: NATS,
    subject: str,
    payload: bytes,
    reply: str = "",
    headers: Mapping[str, str] | None = None,
) -> None:
    """``nc.publish`` in one step: the same errors (closed, draining, the reconnect
    buffer full, over ``max_payload``), and the same wait when the buffer is full."""
    if len(payload) > nc.max_payload:
        raise MaxPayloadError
    if compat.send_command(nc, publish_command(subject, reply, payload, headers)):
        await compat.flush_pending(nc)


ANSWER_WITHIN = 0.001
"""Seconds an ack or nak may wait to share a write with others (``compat.send_command``).
A crash in that millisecond leaves the job unacked, as a crash just before the ack
would: it runs again (at least once); its result was stored before."""


async def _reply(msg: Msg, body: bytes) -> None:
    """An answer on a JetStream message's ack subject (which the server made), with
    ``Msg.ack``'s checks: a message with no ack subject, or answered already, raises
    nats-py's own error."""
    compat.check_answerable(msg)
    nc = compat.msg_client(msg)
    assert msg.reply is not None  # checked above
    command = b"PUB %s %d\r\n%s\r\n" % (msg.reply.encode(), len(body), body)
    if compat.send_command(nc, command, ANSWER_WITHIN):
        await compat.flush_pending(nc)
    compat.mark_answered(msg)


async def ack(msg: Msg) -> None:
    """``msg.ack()`` in one step (a job settled: the hottest publish of all)."""
    await _reply(msg, ACK)


async def nak(msg: Msg, delay: float | None = None) -> None:
    """``msg.nak(delay)`` in one step."""
    await _reply(msg, NAK if not delay else NAK + b' {"delay":%d}' % int(delay * 10**9))
