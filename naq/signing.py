"""Signed jobs and results: HMAC-SHA256 over the whole message, checked before decoding.

Why: with pickle as the serializer, whoever can publish a job runs code on every
supervisor, and whoever can write a result runs code in the producer that unpickles
it. NATS permissions narrow who can publish; a shared secret proves that a message
came from a holder of the key. Celery and streaq sign for the same reason.

What is signed is the exact body naq publishes (the metadata line and the payload),
with a purpose prefix, so a signed result can never pass as a job nor the reverse;
the metadata names the job id and queue, and the supervisor checks both against the
subject the job arrived on, so a signed job cannot be replayed into another queue.
The signature travels in the ``Naq-Signature`` header as ``v1=<base64url digest>``.

Keys: ``NAQ_SIGNING_KEY`` signs and verifies; ``NAQ_SIGNING_KEYS_PREVIOUS`` (comma
separated) are still accepted when verifying, so a key can be rotated without
dropping jobs in flight: add the new key, move the old one to previous, and remove
it once nothing signed with it can arrive any more.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping, Sequence

from naq.errors import ConfigurationError

SIGNATURE_HEADER = "Naq-Signature"
VERSION = "v1="
JOB = b"naq-job\n"
RESULT = b"naq-result\n"
SCHEDULE = b"naq-schedule\n"
"""Purposes: a job message, a result record, a recurring job's stored template."""
MIN_KEY_LENGTH = 32
"""Characters a key needs at least: HMAC-SHA256 is as strong as its key."""


class Signer:
    """Signs with the current key; verifies with it and the previous ones."""

    __slots__ = ("_keys",)

    def __init__(self, key: str, previous: Sequence[str] = ()) -> None:
        keys = [key, *previous]
        for index, candidate in enumerate(keys):
            if len(candidate) < MIN_KEY_LENGTH:
                which = "signing_key" if index == 0 else "a key of signing_keys_previous"
                raise ConfigurationError(
                    f"{which} is too short: use at least {MIN_KEY_LENGTH} characters "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        self._keys = tuple(k.encode() for k in keys)

    def __repr__(self) -> str:
        return f"<Signer with {len(self._keys)} key(s)>"  # never the keys

    def sign(self, purpose: bytes, body: bytes) -> str:
        # hmac.digest is the one-shot C path: about a microsecond for a job's body.
        # base64url: 43 characters where hex would take 64, on every message.
        digest = hmac.digest(self._keys[0], purpose + body, "sha256")
        return VERSION + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def valid(self, purpose: bytes, body: bytes, signature: str | None) -> bool:
        """True when ``signature`` is one of the keys' for ``purpose`` and ``body``."""
        if not signature or not signature.startswith(VERSION):
            return False
        encoded = signature[len(VERSION) :]
        try:
            given = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            return False
        message = purpose + body
        return any(
            hmac.compare_digest(given, hmac.digest(key, message, "sha256")) for key in self._keys
        )

    def headers_valid(self, purpose: bytes, body: bytes, headers: Mapping[str, str] | None) -> bool:
        return self.valid(purpose, body, (headers or {}).get(SIGNATURE_HEADER))


def signer_for(key: str | None, previous: str | None) -> Signer | None:
    """The signer for the configured keys; None when signing is off (no key)."""
    if not key:
        if previous:
            raise ConfigurationError("signing_keys_previous is set but signing_key is not")
        return None
    return Signer(key, [k.strip() for k in (previous or "").split(",") if k.strip()])
