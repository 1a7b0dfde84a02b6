"""Job options are checked in the producer, so a bad option never reaches a worker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from naq.errors import ConfigurationError
from naq.job import KEEP_FOREVER, JobOptions, new_job_id, validate_job_id


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_retries": -1}, "max_retries must not be negative"),
        ({"max_retries": True}, "max_retries must be an int"),
        ({"max_retries": 1.5}, "max_retries must be an int"),
        ({"retry_delay": -1}, "retry_delay"),
        ({"retry_delay": []}, "retry_delay"),
        ({"retry_delay": "5"}, "retry_delay"),
        ({"retry_delay": [1, "2"]}, "retry_delay"),
        ({"retry_delay": [1, -2]}, "retry_delay"),
        ({"retry_delay": True}, "retry_delay"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"timeout": -3}, "timeout must be positive"),
        ({"timeout": "10"}, "timeout must be positive"),
        ({"result_ttl": -2}, "result_ttl"),
        ({"result_ttl": 1.5}, "result_ttl"),
        ({"result_ttl": True}, "result_ttl"),
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        JobOptions.build(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_retries": 0},
        {"max_retries": 5, "retry_delay": 0},
        {"retry_delay": [0, 1.5, 10]},
        {"timeout": 0.25},
        {"result_ttl": 0},
        {"result_ttl": KEEP_FOREVER},
        {"result_ttl": 3600},
    ],
)
def test_valid_options_are_accepted(kwargs: dict[str, Any]) -> None:
    JobOptions.build(**kwargs)


def test_retry_delay_for_a_number_is_constant() -> None:
    opts = JobOptions.build(max_retries=3, retry_delay=2.5)
    assert [opts.retry_delay_for(a) for a in (1, 2, 3, 10)] == [2.5, 2.5, 2.5, 2.5]


def test_retry_delay_for_a_list_repeats_the_last() -> None:
    opts = JobOptions.build(max_retries=5, retry_delay=[1, 2, 5])
    assert opts.retry_delay == (1, 2, 5)
    assert [opts.retry_delay_for(a) for a in (1, 2, 3, 4, 10)] == [1.0, 2.0, 5.0, 5.0, 5.0]
    assert all(isinstance(opts.retry_delay_for(a), float) for a in (1, 4))


def test_default_options_send_nothing() -> None:
    assert JobOptions().to_wire() == {}


@pytest.mark.parametrize(
    "opts",
    [
        JobOptions(),
        JobOptions.build(max_retries=3, retry_delay=1.5),
        JobOptions.build(
            max_retries=2, retry_delay=[1, 2, 4], timeout=9.5, result_ttl=KEEP_FOREVER
        ),
        JobOptions.build(timeout=1, result_ttl=0),
    ],
)
def test_options_round_trip_through_the_wire(opts: JobOptions) -> None:
    wire = json.loads(json.dumps(opts.to_wire()))
    assert JobOptions.from_wire(wire) == opts


@pytest.mark.parametrize(
    "job_id", ["a", "abc-123_XYZ", "a" * 128, "x:y", "user@example", new_job_id()]
)
def test_valid_job_ids(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "job_id", ["", "a.b", "a b", "a\tb", "a\nb", "a*", ">", "a>b", "a" * 129, 123, None]
)
def test_invalid_job_ids(job_id: Any) -> None:
    with pytest.raises(ConfigurationError, match="invalid job_id"):
        validate_job_id(job_id)


def test_new_job_ids_are_unique_and_valid() -> None:
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    for job_id in ids:
        validate_job_id(job_id)


def test_exponential_delays_with_a_cap_and_jitter() -> None:
    from naq.job import JobOptions

    opts = JobOptions.build(retry_delay=2, retry_strategy="exponential", retry_max_delay=10)
    assert [opts.retry_delay_for(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    jittered = JobOptions.build(retry_delay=8, retry_jitter=True)
    assert all(4 <= jittered.retry_delay_for(1) <= 8 for _ in range(100))
    listed = JobOptions.build(retry_delay=[1, 5], retry_strategy="exponential")
    assert [listed.retry_delay_for(n) for n in (1, 2, 3)] == [1, 5, 5]


def test_retry_filters_by_name_survive_the_wire() -> None:
    from naq.job import JobOptions, exception_name

    opts = JobOptions.build(retry_on=[OSError, "mypkg.errors:Flaky"], ignore_on="KeyError")
    assert opts.retry_on == ("builtins.OSError", "mypkg.errors.Flaky")
    assert opts.ignore_on == ("builtins.KeyError",)
    back = JobOptions.from_wire(json.loads(json.dumps(opts.to_wire())))
    assert back == opts
    assert back.should_retry(("builtins.ConnectionError", "builtins.OSError"))
    assert not back.should_retry(("builtins.KeyError", "builtins.LookupError"))
    assert not back.should_retry(("builtins.ValueError",))
    assert back.should_retry(())  # timeouts and crashes carry no exception
    assert exception_name(ValueError) == "builtins.ValueError"
    with pytest.raises(ConfigurationError, match="retry_on/ignore_on"):
        JobOptions.build(retry_on=[42])
    with pytest.raises(ConfigurationError, match="retry_strategy"):
        JobOptions.build(retry_strategy="fibonacci")  # type: ignore[arg-type]
