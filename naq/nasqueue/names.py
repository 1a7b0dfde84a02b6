"""NASQueue's namespaces and subjects: what is valid, and how a subject maps to NATS.

A namespace is a subject prefix: ``push("orders", ...)`` in namespace ``myapp``
publishes on ``myapp.orders``. Namespaces may have several dot-separated tokens
(the seed suggests ``f"{service}.{environment}"``); each token is letters, digits,
``_`` and ``-``, the same characters naq allows in its own names. Because a
namespace is a prefix, ``svc`` and ``svc.prod`` overlap (``svc``'s subject
``prod.x`` is ``svc.prod``'s ``x``); namespaces that are not a token prefix of one
another never share a message.

The durable store names a stream after the namespace, and stream names cannot hold
dots, so a durable namespace is a single token.

Subjects naq itself uses inside a namespace (its job, schedule, failed-job and
control subjects, and the durable store's) are refused, so a NASQueue push can never
land in naq's streams as a malformed job. The check is made at the absolute token
positions: naq's namespaces are one token, so ``{t0}.jobs...`` is naq's for namespace
``t0`` whether ``jobs`` comes from the subject (namespace ``t0``) or from the
namespace itself (``t0.jobs``, refused as a whole).
"""

from __future__ import annotations

import functools
import re

from naq.errors import ConfigurationError
from naq.transport.names import RESERVED_TOKENS

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_SUBJECT_TOKEN = re.compile(r"[^\s.*>]+")


def validate_namespace(namespace: str, *, durable: bool = False) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError(f"invalid namespace {namespace!r}: it must be a non-empty string")
    tokens = namespace.split(".")
    if not all(_TOKEN.fullmatch(t) for t in tokens):
        raise ConfigurationError(
            f"invalid namespace {namespace!r}: use tokens of letters, digits, '_' and '-' "
            "separated by single dots"
        )
    if len(tokens) > 1 and tokens[1] in RESERVED_TOKENS:
        raise ConfigurationError(
            f"namespace {namespace!r} is reserved: naq uses '{tokens[0]}.{tokens[1]}.' "
            f"subjects for its namespace {tokens[0]!r}"
        )
    if durable and (len(tokens) > 1 or len(namespace) > 240):
        raise ConfigurationError(
            f"invalid durable namespace {namespace!r}: a durable queue's namespace names "
            "its stream, so it must be one token (letters, digits, '_' and '-') of at most 240"
        )
    return namespace


def validate_subject(subject: str, *, wildcards: bool = False) -> str:
    """A subject relative to the namespace; wildcards only where a subscription takes them."""
    if not isinstance(subject, str) or not subject:
        raise ConfigurationError(f"invalid subject {subject!r}: it must be a non-empty string")
    return _checked(subject, wildcards)


@functools.lru_cache(maxsize=4096)
def _checked(subject: str, wildcards: bool) -> str:
    """Cached: a queue pushes to a few subjects many times (about a tenth of an
    in-memory push was spent here before)."""
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if wildcards and (token == "*" or (token == ">" and i == len(tokens) - 1)):
            continue
        if not _SUBJECT_TOKEN.fullmatch(token):
            allowed = " ('*' and a final '>' are allowed when subscribing)" if wildcards else ""
            raise ConfigurationError(
                f"invalid subject {subject!r}: tokens are separated by single dots and hold "
                f"no spaces, '*' or '>'{allowed}"
            )
    size = RESERVED_TOKENS.get(tokens[0])
    if size is not None and (size == 0 or len(tokens) == size or tokens[-1] == ">"):
        raise ConfigurationError(
            f"subject {subject!r} is reserved: naq uses '{tokens[0]}.' subjects in a namespace"
        )
    return subject


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)
