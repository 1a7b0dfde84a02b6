"""What naq tries again through NATS trouble, and how (``naq.transport.retry``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats.errors
import pytest
from nats.js import errors as js_errors

from naq.errors import PayloadTooLarge, PublishError
from naq.settings import Settings
from naq.transport import retry as retry_module
from naq.transport.publish import NoStream, Unacknowledged
from naq.transport.retry import Rejected, is_transient, retry, ride_through

TRANSIENT = [
    nats.errors.NoRespondersError(),
    js_errors.NoStreamResponseError(),
    nats.errors.TimeoutError(),
    TimeoutError(),
    js_errors.FetchTimeoutError(),
    nats.errors.ConnectionReconnectingError(),
    nats.errors.StaleConnectionError(),
    nats.errors.OutboundBufferLimitError(),
    js_errors.ServiceUnavailableError(),  # a bare 503 status: no leader
    js_errors.ServiceUnavailableError(code=503, err_code=10008),  # temporarily unavailable
    js_errors.ServiceUnavailableError(code=503, err_code=10004),  # incomplete results
    js_errors.APIError(code=500, err_code=10009),  # cluster cannot handle the request
    Rejected("publish refused", 503, 10008),
    NoStream("no stream"),
    Unacknowledged("no ack"),
]
FINAL = [
    nats.errors.ConnectionClosedError(),
    nats.errors.MaxPayloadError(),
    PayloadTooLarge("too big"),
    js_errors.BadRequestError(code=400, err_code=10003),
    js_errors.KeyWrongLastSequenceError(description="wrong last sequence"),
    js_errors.APIError(code=400, err_code=10071),  # wrong last sequence
    js_errors.NotFoundError(code=404, err_code=10059),  # stream not found
    js_errors.KeyNotFoundError(),
    js_errors.ServiceUnavailableError(code=503, err_code=10023),  # insufficient resources
    js_errors.ServiceUnavailableError(code=503, err_code=10076),  # JetStream not enabled
    js_errors.APIError(code=500, err_code=10047),  # insufficient storage
    Rejected("store full", 503, 10077),
    PublishError("connection closed while publishing"),
    ValueError("a bug"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_trouble_that_passes_is_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", FINAL, ids=lambda e: f"{type(e).__name__}")
def test_a_refusal_that_will_not_change_is_final(exc: BaseException) -> None:
    assert not is_transient(exc)


class _Refused:
    """A connection on which the server refused a subject: nats-py keeps the error."""

    last_error = nats.errors.Error('nats: Permissions Violation for Publish to "$JS.API.X"')


def test_a_timeout_after_a_permissions_violation_is_final() -> None:
    """The server never answers a request it forbids: waiting longer changes nothing."""
    assert not is_transient(nats.errors.TimeoutError(), _Refused())  # type: ignore[arg-type]


class Flaky:
    """An operation that fails ``failures`` times with ``error(n)``, then returns "done"."""

    def __init__(self, failures: int, error: Any = lambda n: TimeoutError(f"try {n}")) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.failed = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            self.failed.set()
            raise self.error(self.calls)
        return "done"


async def test_success_at_first_try_never_enters_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_loop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the retry loop was entered on success")

    monkeypatch.setattr(retry_module, "ride_through", no_loop)
    op = Flaky(0)
    assert await retry(op, what="a read") == "done"
    assert op.calls == 1


async def test_trouble_is_tried_again_until_it_passes(caplog: pytest.LogCaptureFixture) -> None:
    op = Flaky(3)
    assert await retry(op, what="a read", window=30) == "done"
    assert op.calls == 4
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, "one warning per run of trouble, not one per attempt"
    assert "a read" in warnings[0].getMessage()


async def test_a_final_error_is_raised_at_once() -> None:
    op = Flaky(5, lambda n: js_errors.BadRequestError(code=400, err_code=10003))
    with pytest.raises(js_errors.BadRequestError):
        await retry(op, what="a write", window=30)
    assert op.calls == 1


async def test_the_window_is_respected_and_the_last_error_raised() -> None:
    op = Flaky(10_000)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        await retry(op, what="a read", window=0.6)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.6
    assert op.calls >= 2
    assert str(raised.value) == f"try {op.calls}", "the last error, not the first"
    assert any("retry_window" in note for note in raised.value.__notes__)


async def test_a_window_of_zero_tries_once() -> None:
    op = Flaky(1)
    with pytest.raises(TimeoutError):
        await retry(op, what="a read", window=0)
    assert op.calls == 1


async def test_cancellation_ends_it_at_once() -> None:
    op = Flaky(10_000)
    task = asyncio.create_task(ride_through(op, TimeoutError(), what="a read", window=600))
    await asyncio.wait_for(op.failed.wait(), 10)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done, "the retry loop did not end on cancellation"
    assert task.cancelled()


def test_the_window_is_a_setting() -> None:
    assert Settings().retry_window >= 30.0
    assert Settings.from_env({"NAQ_RETRY_WINDOW": "5"}).retry_window == 5.0


async def test_each_run_of_trouble_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    """A run ends when nothing is being tried again any more, whether it got through or
    gave up: the next trouble is reported again. Operations retried together share one
    report."""
    caplog.set_level("INFO", logger=retry_module.__name__)
    with pytest.raises(TimeoutError):
        await retry(Flaky(10_000), what="a lost cause", window=0.3)
    together = await asyncio.gather(*(retry(Flaky(2), what="a read", window=30) for _ in range(5)))
    assert together == ["done"] * 5
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings
    assert "a lost cause" in warnings[0]
    assert "a read" in warnings[1]
    over = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    assert len(over) == 1, over
