"""The wire format is read by workers of other versions and by other tools: pin it."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from naq.job import KEEP_FOREVER, JobOptions
from naq.serializers import function_ref, get_serializer
from naq.state.record import ResultRecord, decode_result, encode_result
from naq.wire import BadMessage, JobMeta, decode_job, encode_job
from tests import jobs


def make_meta(**changes: Any) -> JobMeta:
    fields: dict[str, Any] = {
        "job_id": "j1",
        "function": function_ref(jobs.add),
        "queue": "default",
        "serializer": "pickle",
        "enqueue_time": 1_700_000_000.25,
        "options": JobOptions(),
        "is_async": False,
    }
    fields.update(changes)
    return JobMeta(**fields)


def head(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


VALID_HEAD = {"naq": 1, "id": "j1", "fn": "tests.jobs:add", "q": "default", "ser": "json", "t": 1}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in VALID_HEAD.items() if k != key}


@pytest.mark.parametrize("serializer", ["pickle", "json"])
@pytest.mark.parametrize("is_async", [False, True])
def test_job_round_trip(serializer: str, is_async: bool) -> None:
    func = jobs.async_add if is_async else jobs.add
    payload = get_serializer(serializer).dumps_call(func, (2, 3), {})
    options = JobOptions.build(
        max_retries=3, retry_delay=[1, 2.5], timeout=30, result_ttl=KEEP_FOREVER
    )
    meta = make_meta(
        function=function_ref(func), serializer=serializer, options=options, is_async=is_async
    )
    decoded, decoded_payload = decode_job(encode_job(meta, payload))
    assert decoded == meta
    assert decoded_payload == payload
    func_back, args, kwargs = get_serializer(serializer).loads_call(meta.function, payload)
    assert (func_back, args, kwargs) == (func, (2, 3), {})


def test_default_job_metadata_is_minimal_and_readable() -> None:
    body = encode_job(make_meta(), b"payload")
    line, _, payload = body.partition(b"\n")
    assert json.loads(line) == {
        "naq": 1,
        "id": "j1",
        "fn": "tests.jobs:add",
        "q": "default",
        "ser": "pickle",
        "t": 1_700_000_000.25,
    }
    assert payload == b"payload"


def test_payload_with_newlines_survives() -> None:
    payload = b"\n\nline\r\nmore\n"
    meta, decoded = decode_job(encode_job(make_meta(), payload))
    assert decoded == payload
    assert meta.job_id == "j1"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "no metadata line"),
        (b"\x00\x01garbage without a newline", "no metadata line"),
        (b"\x80\xff\xfe garbage\n\x00", "metadata is not JSON"),
        (b"not json at all\npayload", "metadata is not JSON"),
        (json.dumps(VALID_HEAD).encode(), "no metadata line"),
        (b"[1, 2]\npayload", "no format version"),
        (b'"text"\npayload', "no format version"),
        (head(**without("naq")), "no format version"),
        (head(**{**VALID_HEAD, "naq": 2}), "unsupported naq format version 2"),
        (head(**without("fn")), "lacks 'fn'"),
        (head(**without("id")), "lacks 'id'"),
        (head(**without("q")), "lacks 'q'"),
        (head(**{**VALID_HEAD, "t": "soon"}), "invalid naq job metadata"),
        (head(**{**VALID_HEAD, "fn": ""}), "names no function"),
        (head(**{**VALID_HEAD, "opts": {"timeout": -1}}), "timeout must be positive"),
        (head(**{**VALID_HEAD, "opts": {"priority": 1}}), "invalid naq job metadata"),
        (head(**{**VALID_HEAD, "opts": "fast"}), "invalid naq job metadata"),
    ],
)
def test_bad_job_messages_are_refused(body: bytes, expected: str) -> None:
    with pytest.raises(BadMessage, match=expected):
        decode_job(body)


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "a.b"},
        {"id": "*"},
        {"id": "a b"},
        {"id": ""},
        {"q": "a.b"},
        {"q": ">"},
        {"q": ""},
    ],
)
def test_ids_and_queues_that_cannot_be_subject_tokens_are_refused(fields: dict[str, str]) -> None:
    """The id becomes a KV key and the queue a failed-stream subject token.

    A producer naq did not write can put anything there, so the worker must refuse
    it as a bad message rather than build subjects from it.
    """
    with pytest.raises(BadMessage):
        decode_job(head(**{**VALID_HEAD, **fields}))


def test_finished_result_round_trip() -> None:
    value = {"answer": 42, "items": [1, 2, 3]}
    rec = ResultRecord(
        job_id="j1",
        status="finished",
        serializer="pickle",
        finished_at=1_700_000_001.5,
        payload=pickle.dumps(value),
    )
    decoded = decode_result(encode_result(rec))
    assert decoded == rec
    assert pickle.loads(decoded.payload) == value


def test_failed_result_round_trip() -> None:
    rec = ResultRecord(
        job_id="j2",
        status="failed",
        serializer="json",
        finished_at=1_700_000_002.0,
        error="ValueError: bad input",
        traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: bad input\n',
    )
    decoded = decode_result(encode_result(rec))
    assert decoded == rec
    assert decoded.payload == b""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "no metadata line"),
        (b"garbage\n", "metadata is not JSON"),
        (head(naq=2, id="j", status="finished", ser="json", t=1), "unsupported naq format"),
        (head(naq=1, id="j", ser="json", t=1), "lacks 'status'"),
        (head(naq=1, status="finished", ser="json", t=1), "lacks 'id'"),
    ],
)
def test_bad_result_records_are_refused(body: bytes, expected: str) -> None:
    with pytest.raises(BadMessage, match=expected):
        decode_result(body)


@pytest.mark.parametrize("t", ["soon", None, [1]])
def test_result_record_with_invalid_time_is_a_bad_message(t: Any) -> None:
    """Readers catch BadMessage; any other exception would escape fetch_result."""
    with pytest.raises(BadMessage):
        decode_result(head(naq=1, id="j", status="finished", ser="json", t=t))


def test_dumps_writes_what_the_compact_json_encoder_writes() -> None:
    """``wire.dumps`` keeps its C encoder between calls; its output is unchanged."""
    import json

    from naq.wire import dumps

    compact = json.JSONEncoder(separators=(",", ":")).encode
    for value in (
        {"naq": 1, "id": "a" * 32, "t": 1796110253.1602776, "opts": {"x": [1, None, True]}},
        {"error": 'é\n"quoted"\\', "nan": float("nan"), "big": 10**30},
        "alone",
        [],
    ):
        assert dumps(value) == compact(value)
