"""The one-screen view's pieces that need no server: heartbeat records typed (odd ones
included), the frames shown while reads fail, and the terminal's redraw cut to its
size. The view against real processes is ``tests/e2e/test_info_watch_cli.py``."""

from __future__ import annotations

import io

import pytest

from naq.cli.view import ERASE_BELOW, ERASE_LINE, HOME, Frame, Terminal, text_frame
from naq.state.overview import LeaderInfo, LiveWorker, Overview
from naq.state.queues import QueueInfo

NOW = 1_800_000_000.0


def test_heartbeat_records_are_typed_and_an_odd_one_does_not_break_the_view() -> None:
    supervisor = LiveWorker.from_record(
        {
            "id": "w1",
            "host": "h",
            "pid": 7,
            "busy": 2,
            "slots": 4,
            "rss": 9,
            "heartbeat_at": NOW - 1.5,
        },
        NOW,
    )
    assert (supervisor.role, supervisor.busy, supervisor.slots, supervisor.rss) == (
        "supervisor", 2, 4, 9,
    )  # fmt: skip
    assert supervisor.heartbeat_age == 1.5
    assert not supervisor.leader
    scheduler = LiveWorker.from_record({"id": "s", "role": "scheduler", "leader": True}, NOW)
    assert (scheduler.role, scheduler.leader, scheduler.heartbeat_age) == ("scheduler", True, None)
    # Written by something else: wrong types and missing fields read as zero or unknown.
    odd = LiveWorker.from_record({"pid": "x", "busy": True, "heartbeat_at": "soon"}, NOW)
    assert (odd.id, odd.pid, odd.busy, odd.slots, odd.heartbeat_age) == ("", 0, 0, 0, None)
    ahead = LiveWorker.from_record({"id": "c", "heartbeat_at": NOW + 3}, NOW)  # a clock ahead
    assert ahead.heartbeat_age == 0.0
    assert LeaderInfo.from_record({"id": "s", "since": "?"}).since is None


def view() -> Overview:
    return Overview(
        namespace="ns",
        taken_at=NOW - 10,
        queues=[QueueInfo("default", 3, 1, 0, 1, 1, 1)],
        workers=[],
        leader=None,
    )


def test_while_reads_fail_a_plain_block_says_so_without_stale_counts() -> None:
    failing = Frame(view(), NOW, 2.0, failing_since=NOW - 4, problem="nats: timeout")
    plain = text_frame(failing, live=False)
    assert plain == [
        "namespace ns at 2027-01-15T08:00:00Z",
        "cannot read from NATS since 2027-01-15T07:59:56Z (4s): nats: timeout; "
        "trying again every 2s",
    ]
    live = text_frame(failing, live=True)
    assert live[0].endswith("(every 2s; Ctrl-C quits)")
    assert "last read at 2027-01-15T07:59:50Z:" in live  # the last good view, marked
    assert any(line.startswith("default") for line in live)


def test_the_terminal_frame_is_cut_to_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10")
    monkeypatch.setenv("LINES", "3")
    out = io.StringIO()
    screen = Terminal(out)
    out.seek(0)
    out.truncate()
    screen.show(["0123456789abc", "two", "three", "four"])
    frame = out.getvalue()
    assert frame.startswith(HOME)
    assert frame.endswith(ERASE_BELOW)
    lines = frame.removeprefix(HOME).removesuffix(ERASE_BELOW).split("\n")
    assert lines == [
        "012345678" + ERASE_LINE,  # one column short of the edge
        "two" + ERASE_LINE,
        "... 2 mor" + ERASE_LINE,  # the note, cut like any line
    ]
