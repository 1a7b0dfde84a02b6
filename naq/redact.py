"""Masking secrets in anything naq shows: URLs, error messages, log lines, reprs.

Why one function: a NATS URL may carry a password (``nats://u:pw@host``) or a token
(``nats://tok@host``), and it travels into start-up logs, connection errors, reprs and
nats-py's own exception text. Every place that shows such text passes it through
:func:`redact`, so there is one rule to get right rather than one per message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s,]*)@")
"""A URL's ``scheme://userinfo@``. Greedy up to the last ``@`` before the host, as
``urllib.parse`` reads it, so a password with a raw ``@`` in it is masked whole; a
comma ends it because naq's server lists are comma-separated."""


def _mask(match: re.Match[str]) -> str:
    user, colon, _ = match.group("userinfo").partition(":")
    # "user:password@" keeps the user; a lone "token@" is all secret (NATS reads it
    # as a token).
    shown = f"{user}:{MASK}" if colon else MASK
    return f"{match.group('scheme')}{shown}@"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL's password or token masked, and every one of ``secrets``.

    ``secrets`` are the values known to be secret (a configured password or token):
    masked wherever they appear, for text that shows them outside a URL. The longest
    go first, so one secret that contains another is masked whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _USERINFO.sub(_mask, text)


def has_userinfo(url: str) -> bool:
    """True if any of the comma-separated ``url`` carries a user, password or token."""
    return _USERINFO.search(url) is not None
