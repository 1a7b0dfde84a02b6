"""``naq health``'s verdict on one heartbeat record (the CLI's real runs are in
tests/e2e/test_health_cli.py; a broken executor stops its supervisor within moments,
so the record that says so is judged here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from naq.cli.health import Unhealthy, judge
from naq.errors import ConfigurationError
from naq.heartbeat import clear_id_file, read_id_file, write_id_file
from naq.settings import Settings

SETTINGS = Settings(heartbeat_interval=5.0)


def record(**fields: object) -> dict[str, object]:
    return {"id": "w1", "heartbeat_at": 1000.0, "state": "running", "broken": None, **fields}


def test_a_fresh_running_record_is_healthy() -> None:
    assert judge(record(), SETTINGS, 1001.0) == "worker w1: running, heartbeat 1.0s ago"
    assert judge(record(state="draining"), SETTINGS, 1000.0).startswith("worker w1: draining")


def test_a_broken_executor_is_unhealthy_with_its_reason() -> None:
    broken = record(state="broken", broken="process executor: children keep dying")
    with pytest.raises(Unhealthy, match="executor broken: process executor: children keep"):
        judge(broken, SETTINGS, 1000.0)


def test_a_record_older_than_three_intervals_is_stale() -> None:
    assert judge(record(), SETTINGS, 1015.0)
    with pytest.raises(Unhealthy, match=r"last heartbeat 15.1s ago \(limit 15s\)"):
        judge(record(), SETTINGS, 1015.1)


def test_the_id_file_is_checked_and_cleared_only_by_its_writer(tmp_path: Path) -> None:
    path = str(tmp_path / "id")
    write_id_file(path, "host.example-12-abc")
    assert read_id_file(path) == "host.example-12-abc"
    clear_id_file(path, "another-13-def")  # a newer supervisor's file stays
    assert read_id_file(path) == "host.example-12-abc"
    clear_id_file(path, "host.example-12-abc")
    assert not Path(path).exists()
    clear_id_file(path, "host.example-12-abc")  # gone already: nothing to do
    Path(path).write_text("a b*\n")
    with pytest.raises(ConfigurationError, match="holds no worker id"):
        read_id_file(path)


def test_an_id_file_that_cannot_be_written_is_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "missing-dir" / "id")
    write_id_file(path, "w1")
    assert "cannot write the worker id file" in caplog.text
    assert not Path(path).exists()
