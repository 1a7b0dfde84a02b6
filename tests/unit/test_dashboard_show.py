"""What the dashboard shows of a job's arguments: decoded without importing or running
anything the payload names, masked for secrets, cut to length."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from naq.dashboard.show import (
    MAX_SHOWN,
    decode_call,
    load_redactor,
    mask_secrets,
    show_call,
    show_value,
)
from naq.errors import ConfigurationError
from naq.job import JobOptions
from naq.wire import JobMeta, encode_job
from tests import jobs


class Explodes:
    """Unpickling it with ``pickle.loads`` would create ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def body(payload: bytes, serializer: str = "pickle", function: str = "tests.jobs:echo") -> bytes:
    meta = JobMeta("j1", function, "default", serializer, 0.0, JobOptions(), False)
    return encode_job(meta, payload)


def test_a_pickled_payload_is_shown_without_running_what_it_names(tmp_path: Path) -> None:
    target = tmp_path / "made"
    payload = cloudpickle.dumps((jobs.echo, (Explodes(str(target)), "<b>"), {"n": 3}))
    shown = show_call(body(payload), mask_secrets)
    assert not target.exists()  # pickle.loads would have made it
    assert "<posix:mkdir(" in shown or "<os:mkdir(" in shown
    assert "'<b>'" in shown
    assert "n=3" in shown


def test_json_arguments_and_the_default_redaction() -> None:
    payload = json.dumps([["user@example.com"], {"api_key": "sk-1", "count": 2}]).encode()
    shown = show_call(body(payload, "json"), mask_secrets)
    assert shown == "tests.jobs:echo('user@example.com', api_key='***', count=2)"


def test_a_long_call_is_cut_and_a_foreign_payload_is_named_not_shown() -> None:
    payload = pickle.dumps((None, tuple("x" * 250 for _ in range(20)), {}))
    assert len(show_call(body(payload), mask_secrets)) <= MAX_SHOWN
    assert show_call(body(b"\x80garbage"), mask_secrets).startswith("(arguments not readable:")
    assert show_call(b"not a job", mask_secrets).startswith("(")


def test_a_redaction_hook_replaces_the_arguments_and_a_failing_one_hides_them() -> None:
    payload = json.dumps([["secret-value"], {}]).encode()

    def hide_all(function: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return ("…",), {}

    def broken(function: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise KeyError("boom")

    assert "secret-value" not in show_call(body(payload, "json"), hide_all)
    assert "secret-value" not in show_call(body(payload, "json"), broken)
    assert decode_call("json", payload) == (("secret-value",), {})
    assert load_redactor("") is mask_secrets
    assert load_redactor("tests.jobs:echo") is jobs.echo
    with pytest.raises(ConfigurationError):
        load_redactor("tests.jobs:nothing_here")


def test_a_result_is_shown_without_running_what_it_names(tmp_path: Path) -> None:
    target = tmp_path / "made"
    shown = show_value("pickle", cloudpickle.dumps({"ok": Explodes(str(target))}))
    assert not target.exists()
    assert shown.startswith("{'ok': <")
    assert show_value("json", b'{"n": [1, 2]}') == "{'n': [1, 2]}"
    assert show_value("pickle", b"garbage").startswith("(result not readable")
