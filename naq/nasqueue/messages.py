"""What a NASQueue message is on the wire and when popped.

``push`` takes bytes as they are, encodes strings as UTF-8 and serializes anything
else as JSON; ``pop`` always returns the bytes, so a consumer decodes what it
expects (``msg["message"].decode()``, ``json.loads(...)``), as the seed shows.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypedDict

from naq.errors import ConfigurationError, PayloadTooLarge, SerializationError


class QueueMessage(TypedDict):
    """A popped message. ``timestamp`` is a naive local time, as ``datetime.now()``."""

    subject: str
    """The subject without the namespace."""
    message: bytes
    headers: dict[str, str] | None
    reply_to: str | None
    timestamp: datetime


def encode(message: Any) -> bytes:
    if isinstance(message, bytes):
        return message
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    if isinstance(message, str):
        return message.encode()
    try:
        return json.dumps(message).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot push a {type(message).__name__}: messages are bytes, str or "
            f"JSON-serializable objects ({exc})"
        ) from None


def check_headers(headers: Any) -> dict[str, str] | None:
    """NATS headers are text: refuse anything else here rather than in the client."""
    if headers is None:
        return None
    if not isinstance(headers, dict):
        raise ConfigurationError(f"headers must be a dict of str to str, not {type(headers)}")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise ConfigurationError(f"headers must map str to str; got {key!r}: {value!r}")
        if any(c in key for c in " :\r\n") or any(c in value for c in "\r\n"):
            raise ConfigurationError(f"invalid header {key!r}: {value!r}")
    return dict(headers) if headers else None


def received(
    subject: str,
    message: bytes,
    headers: dict[str, str] | None,
    reply_to: str | None = None,
    timestamp: datetime | None = None,
) -> QueueMessage:
    return {
        "subject": subject,
        "message": message,
        "headers": headers or None,
        "reply_to": reply_to or None,
        "timestamp": timestamp or datetime.now(),
    }


def too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a {size:,}-byte message is over the server's max_payload ({limit:,} bytes); "
        "store large data elsewhere and push a reference to it"
    )
