"""Next-fire rules of recurring schedules, without a server."""

from __future__ import annotations

import datetime

import pytest

from naq.cron import Spec, due, following, interval_seconds, next_after, parse_when
from naq.errors import ConfigurationError

T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC).timestamp()


def test_exactly_one_of_cron_and_interval() -> None:
    with pytest.raises(ConfigurationError):
        Spec()
    with pytest.raises(ConfigurationError):
        Spec(cron="* * * * *", interval=5)
    with pytest.raises(ConfigurationError):
        Spec(cron="not a cron")
    with pytest.raises(ConfigurationError):
        Spec(interval=0.5)
    with pytest.raises(ConfigurationError):
        Spec(cron="* * * * *", tz="Nowhere/Special")


def test_interval_fires_on_whole_seconds() -> None:
    assert next_after(Spec(interval=5), T0 + 0.3) == T0 + 6
    assert interval_seconds(datetime.timedelta(minutes=2)) == 120.0


def test_cron_is_utc_and_strictly_after() -> None:
    assert next_after(Spec(cron="*/15 * * * *"), T0) == T0 + 15 * 60
    assert next_after(Spec(cron="* * * * * */2"), T0 + 0.5) == T0 + 2  # seconds field


def test_cron_in_a_time_zone() -> None:
    # 09:00 in New York on 1 January is 14:00 UTC
    assert next_after(Spec(cron="0 9 * * *", tz="America/New_York"), T0) == T0 + 14 * 3600


def test_missed_ticks_catch_up_once_and_keep_the_cadence() -> None:
    spec = Spec(interval=10)
    assert following(spec, T0, T0 + 1) == T0 + 10
    assert following(spec, T0, T0 + 95) == T0 + 100
    assert following(Spec(cron="* * * * *"), T0, T0 + 3600 + 5) == T0 + 3660


def test_due_policy() -> None:
    assert not due(T0 + 1, T0, "run_once", 1.0)
    assert due(T0, T0 + 500, "run_once", 1.0)
    assert due(T0, T0 + 0.5, "skip", 1.0)
    assert not due(T0, T0 + 500, "skip", 1.0)


def test_parse_when() -> None:
    assert parse_when("2024-01-01T00:00:00") == T0
    assert parse_when(datetime.datetime(2024, 1, 1)) == T0
    assert parse_when(T0) == T0
    with pytest.raises(ConfigurationError):
        parse_when("soon")
