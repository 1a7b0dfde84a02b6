"""The failed-stream copy of a job always fits max_payload: the headers give way, the
job never does (naq.supervisor.settle.fit_failed_headers)."""

from __future__ import annotations

import json

from naq.supervisor.settle import failed_headers, fit_failed_headers
from naq.transport.publish import message_size

LIMIT = 64 * 1024


def _headers(error: str, traceback: str) -> dict[str, str]:
    headers = failed_headers(error, traceback, 1, "worker-1", {"Naq-Signature": "sig"})
    headers["Naq-Job-Id"] = "a" * 32
    return headers


def test_headers_that_fit_are_kept_as_they_are() -> None:
    headers = _headers("ValueError: bad", "Traceback...\nValueError: bad")
    assert fit_failed_headers(headers, b"x" * 1000, LIMIT) == headers


def test_the_traceback_is_cut_from_its_start_to_fit() -> None:
    traceback = '"\\\n' * 3000 + "ValueError: the end"  # JSON escapes double its size
    job = b"x" * (LIMIT - 5000)
    fitted = fit_failed_headers(_headers("ValueError: bad", traceback), job, LIMIT)
    assert fitted is not None
    assert message_size(job, fitted) <= LIMIT
    assert json.loads(fitted["Naq-Traceback"]).endswith("ValueError: the end")
    assert fitted["Naq-Reason"] == "ValueError: bad"


def test_the_reason_is_cut_then_the_rest_dropped_and_the_job_kept_whole() -> None:
    job = b"x" * (LIMIT - 300)
    fitted = fit_failed_headers(_headers("E" * 1000, "tb" * 100), job, LIMIT)
    assert fitted is not None
    assert message_size(job, fitted) <= LIMIT
    assert "Naq-Traceback" not in fitted
    assert fitted["Naq-Job-Id"] == "a" * 32
    assert fitted["Naq-Signature"] == "sig"


def test_a_job_with_no_room_for_its_id_gets_no_copy() -> None:
    assert fit_failed_headers(_headers("E", "tb"), b"x" * LIMIT, LIMIT) is None
