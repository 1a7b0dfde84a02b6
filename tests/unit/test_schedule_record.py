"""A stored schedule read back: what naq wrote round-trips, anything else is refused with
a ValueError naming the fault (found by the fault suite's fuzzing: a bare JSON number
once reached ``dict.pop`` and broke ``list_schedules``)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from naq.state.schedules import Schedule

GOOD = Schedule(
    schedule_id="s1",
    queue="default",
    function="tests.jobs:add",
    job=b"head\npayload",
    cron=None,
    interval=5.0,
    tz=None,
    repeat=3,
    next_run=1_800_000_000.0,
)


def raw(**changes: Any) -> bytes:
    data = json.loads(GOOD.to_json())
    for name, value in changes.items():
        if value is KeyError:
            del data[name]
        else:
            data[name] = value
    return json.dumps(data).encode()


def test_a_record_naq_wrote_round_trips() -> None:
    assert Schedule.from_json(GOOD.to_json()) == GOOD
    assert Schedule.from_json(raw(cron="*/5 * * * *", interval=None)).cron == "*/5 * * * *"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{", "not JSON"),
        (b"4", "a JSON int, not an object"),
        (b"[]", "a JSON list, not an object"),
        (raw(job=KeyError), "no 'job'"),
        (raw(cron=KeyError), "no 'cron'"),
        (raw(next_run="soon"), "'next_run' is a str"),
        (raw(next_run=float("nan")), "'next_run' is nan"),
        (raw(repeat=True), "'repeat' is a bool"),
        (raw(runs=1.5), "'runs' is a float"),
        (raw(queue=None), "'queue' is a NoneType"),
        (raw(status="sleeping"), "unknown status 'sleeping'"),
        (raw(missed="all"), "unknown missed policy 'all'"),
        (raw(job="not base64!"), "'job' is not base64"),
        (raw(interval=None), "exactly one of cron= and interval="),
        (raw(cron="every day", interval=None), "invalid cron expression"),
        (raw(interval=0.0), "interval must be at least"),
        (raw(tz="Mars/Olympus"), "unknown time zone"),
    ],
)
def test_anything_else_is_refused_with_its_fault(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace("*", r"\*")):
        Schedule.from_json(body)


def test_job_is_base64_in_the_record() -> None:
    assert json.loads(GOOD.to_json())["job"] == base64.b64encode(GOOD.job).decode()
