"""Riding through NATS trouble: what is worth trying again, and trying it again.

Why: on a 3-node cluster a leader election made publishes fail with no-responders for
about 8 s, fetches return 503 for about 4 s and KV writes fail for about 7 s; a
restarted server takes a few seconds more. Nothing acknowledged was lost, so a
client that tries again with backoff loses nothing, and one that gives up at the
first ``nats: timeout`` (a producer declaring its namespace, a supervisor storing a
result) fails for nothing.

- :func:`is_transient` tells trouble that passes (no responders, a timeout, a 503, a
  JetStream API error meaning "no leader" or "not available now", a reconnect in
  progress) from a refusal that will not change (a closed connection, a message over
  ``max_payload``, a bad request, a stale revision, a full store: the last is left to
  the callers that handle a full server). A timeout on a connection the server has
  just refused permission to is a refusal too: the server never answers a request it
  forbids, so trying again would only wait longer for the same silence.
- :func:`ride_through` runs an operation again with ``naq.supervised.backoff``
  (0.25 s doubling to 5 s, jittered) until it succeeds or the connection's window
  (``Settings.retry_window``) is spent, then raises the last error with a note saying
  how long it was tried. Plain cancellation ends it at once, so a shutdown bounds it.
- Nothing is paid when the first try succeeds: callers make the first try
  themselves (or through :func:`retried`, one call frame) and enter the loop only on
  an exception.
- One warning per run of trouble, not per attempt and not per operation: the first
  operation to meet trouble says so, the one that gets through first says it is over.

The window belongs to the connection: ``naq.transport.connect.Client`` registers its
settings' window for its nats-py connection (:func:`set_window`), so helpers that get
only a KV handle or a JetStream context find it without every caller passing it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from naq.errors import PublishError
from naq.settings import DEFAULT_RETRY_WINDOW
from naq.supervised import backoff
from naq.transport import compat

log = logging.getLogger(__name__)

BASE = 0.25
CAP = 5.0
"""The backoff between tries: short at first (a leader election is over in seconds),
never more than ``CAP`` so the first try after the trouble comes soon after it ends."""

NOT_READY = frozenset({10004, 10008, 10009})
"""JetStream API error codes that mean "not now": incomplete results (503), the
JetStream system temporarily unavailable (503, no meta leader), and the cluster that
cannot handle the request (500, not the leader)."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    TimeoutError,  # nats.errors.TimeoutError and asyncio's are TimeoutError
)
FINAL_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.MaxPayloadError,
)
PERMISSIONS_VIOLATION = "permissions violation"


class Transient(PublishError):
    """Trouble that passes, raised by naq's own code (a publish whose ack did not come,
    no stream answered): tried again within the window."""


class Rejected(PublishError):
    """JetStream answered a publish with an error; ``err_code`` says which."""

    def __init__(self, message: str, code: int | None, err_code: int | None) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


def is_transient(exc: BaseException, nc: NATS | None = None) -> bool:
    """True when ``exc`` is trouble that passes: trying again may succeed.

    ``nc``: the connection the operation ran on; a timeout there after the server
    refused it permission is final.
    """
    if isinstance(exc, FINAL_ERRORS):
        return False
    if isinstance(exc, APIError | Rejected):
        # nats-py's KV errors set no code at all (getattr): not found, stale revision
        code = getattr(exc, "err_code", None)
        if isinstance(exc, ServiceUnavailableError) and code is None:
            return True  # a bare 503 status: no leader, or JetStream not ready yet
        return code in NOT_READY
    if isinstance(exc, TimeoutError) and nc is not None and _refused(nc):
        return False
    return isinstance(exc, (Transient, *TRANSIENT_ERRORS))


def _refused(nc: NATS) -> bool:
    """The server refused this connection a subject (nats-py keeps the last error, and
    forgets it on reconnect): a request there is never answered."""
    error = nc.last_error
    return error is not None and PERMISSIONS_VIOLATION in str(error).lower()


_windows: weakref.WeakKeyDictionary[NATS, float] = weakref.WeakKeyDictionary()


def set_window(nc: NATS, window: float) -> None:
    """Operations on ``nc`` are tried again for ``window`` seconds."""
    _windows[nc] = window


def window_of(nc: NATS | None) -> float:
    """The connection's window; the default for a connection naq did not make."""
    if nc is None:
        return DEFAULT_RETRY_WINDOW
    return _windows.get(nc, DEFAULT_RETRY_WINDOW)


class _Trouble:
    """A run of trouble lasts while at least one operation is being tried again: it is
    reported when it begins and once when something gets through, not per attempt nor
    per operation."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.retrying = 0
        self.told_over = False

    def began(self, what: str, exc: BaseException, window: float) -> None:
        self.retrying += 1
        if self.since is None:
            self.since, self.told_over = time.monotonic(), False
            log.warning(
                "NATS trouble while %s: %s; trying again for up to %.0fs",
                what,
                _describe(exc),
                window,
            )
        else:
            log.debug("NATS trouble while %s: %s", what, _describe(exc))

    def ended(self, what: str, through: bool) -> None:
        if through and not self.told_over and self.since is not None:
            self.told_over = True
            log.info(
                "NATS answers again (%s went through after %.1fs)",
                what,
                time.monotonic() - self.since,
            )
        self.retrying -= 1
        if self.retrying == 0:
            self.since = None  # the next trouble is a new run, reported again


_trouble = _Trouble()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def ride_through[T](
    attempt: Callable[[], Awaitable[T]],
    first: BaseException,
    *,
    what: str,
    nc: NATS | None = None,
    window: float | None = None,
) -> T:
    """``attempt()`` again after it failed with ``first``, until it succeeds or the
    window is spent; raises ``first`` at once when it is final.

    ``window`` defaults to ``nc``'s (:func:`window_of`). The last error is raised
    unchanged in type (callers still catch what they caught), with a note saying what
    was tried and for how long.
    """
    window = window_of(nc) if window is None else window
    if window <= 0 or not is_transient(first, nc):
        raise first
    deadline = time.monotonic() + window
    _trouble.began(what, first, window)
    failures, last, through = 1, first, False
    try:
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, backoff(failures, BASE, CAP)))
            try:
                result = await attempt()
            except Exception as exc:
                if not is_transient(exc, nc):
                    raise
                failures, last = failures + 1, exc
                log.debug("%s: try %d failed: %s", what, failures, _describe(exc))
                continue
            through = True
            return result
    finally:
        _trouble.ended(what, through)
    last.add_note(
        f"naq tried {what} {failures} time(s) over {window:.0f}s (retry_window) "
        "without getting through"
    )
    raise last


async def retry[T](
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    nc: NATS | None = None,
    window: float | None = None,
) -> T:
    """``attempt()``, tried again through transient trouble (:func:`ride_through`)."""
    try:
        return await attempt()
    except Exception as exc:
        return await ride_through(attempt, exc, what=what, nc=nc, window=window)


def retried[**P, T](
    what: str,
) -> Callable[
    [Callable[Concatenate[JetStreamContext, P], Coroutine[Any, Any, T]]],
    Callable[Concatenate[JetStreamContext, P], Coroutine[Any, Any, T]],
]:
    """Decorate an operation whose first argument is a JetStream context: the whole
    operation is tried again through trouble, with its connection's window."""

    def wrap(
        fn: Callable[Concatenate[JetStreamContext, P], Coroutine[Any, Any, T]],
    ) -> Callable[Concatenate[JetStreamContext, P], Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def run(js: JetStreamContext, /, *args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await fn(js, *args, **kwargs)
            except Exception as exc:
                return await ride_through(
                    lambda: fn(js, *args, **kwargs), exc, what=what, nc=compat.js_connection(js)
                )

        return run

    return wrap
