"""The middleware seam without a server: isolation, order, headers, and finding classes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from naq import ConfigurationError, Settings
from naq.executors.base import Outcome
from naq.job import Job
from naq.middleware import (
    JobContext,
    Middleware,
    Middlewares,
    WorkerInfo,
    available_middleware,
    load_middleware,
)
from tests.middleware import Forger, Raising, Recorder, Stamp

JOB = Job("j1", "tests.jobs:add", "default")
WORKER = WorkerInfo("w1", "naq", ("default",), "asyncio", 4)


def _context() -> JobContext:
    return JobContext("j1", "tests.jobs:add", "default", 1, 0.0, JOB.options, {}, "w1")


def test_the_base_class_hooks_do_nothing() -> None:
    plain = Middleware()
    headers = {"Nats-Msg-Id": "j1"}
    plain.before_enqueue(JOB, headers)
    plain.after_enqueue(JOB)
    plain.on_start(WORKER)
    plain.before_job(_context())
    plain.after_outcome(_context(), Outcome("j1", "ok"))
    plain.after_settle(_context(), Outcome("j1", "ok"), "finished")
    plain.on_stop(WORKER)
    assert headers == {"Nats-Msg-Id": "j1"}


def test_a_raising_hook_is_logged_with_its_traceback_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before, after = Recorder(), Recorder()
    chain = Middlewares([before, Raising(), after])
    with caplog.at_level(logging.ERROR, logger="naq.middleware"):
        chain.emit("before_job", _context())
        chain.emit_after("after_outcome", _context(), Outcome("j1", "ok"))
    assert before.of("j1") == [("before_job", 1), ("after_outcome", "ok")]
    assert after.of("j1") == [("before_job", 1), ("after_outcome", "ok")]
    failures = [r for r in caplog.records if "Raising failed in" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [
        "middleware Raising failed in before_job; ignored",
        "middleware Raising failed in after_outcome; ignored",
    ]
    assert all(r.exc_info and "broke" in str(r.exc_info[1]) for r in failures)


def test_after_hooks_run_in_reverse_so_the_first_middleware_wraps_the_rest() -> None:
    order: list[str] = []

    class Named(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        def before_job(self, job: JobContext) -> None:
            order.append(f"{self.name} before")

        def after_settle(self, job: JobContext, outcome: Outcome, action: str) -> None:
            order.append(f"{self.name} after")

    chain = Middlewares([Named("a"), Named("b")])
    chain.emit("before_job", _context())
    chain.emit_after("after_settle", _context(), Outcome("j1", "ok"), "finished")
    assert order == ["a before", "b before", "b after", "a after"]


def test_before_enqueue_adds_headers_but_never_replaces_naqs_own() -> None:
    headers = {"Nats-Msg-Id": "j1"}
    Middlewares([Stamp(), Forger()]).before_enqueue(JOB, headers)
    assert headers == {"Nats-Msg-Id": "j1", "X-Naq-Test": "stamped j1"}


def test_a_raising_before_enqueue_keeps_what_it_added_and_the_job_goes_out() -> None:
    headers = {"Nats-Msg-Id": "j1"}
    Middlewares([Raising(), Stamp()]).before_enqueue(JOB, headers)
    assert headers["X-Naq-Test"] == "stamped j1"
    assert headers["Nats-Msg-Id"] == "j1"


def test_an_empty_chain_is_false_so_the_hot_path_skips_it() -> None:
    assert not Middlewares()
    assert Middlewares([Middleware()])


def test_only_middleware_instances_are_accepted() -> None:
    with pytest.raises(ConfigurationError, match="is not a naq Middleware"):
        Middlewares([object()])  # type: ignore[list-item]


def test_load_by_module_and_class_comma_separated() -> None:
    loaded = load_middleware("tests.middleware:Recorder, tests.middleware:Stamp")
    assert [type(m).__name__ for m in loaded] == ["Recorder", "Stamp"]
    assert load_middleware("") == []
    assert Settings(middleware=" tests.middleware:Stamp ,").middleware_names == (
        "tests.middleware:Stamp",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.middleware:NotAMiddleware", "is not a naq Middleware"),
        ("tests.middleware:Missing", "has no 'Missing'"),
        ("tests.no_such_module:Thing", "cannot import middleware module"),
        ("no-such-plugin", "unknown middleware 'no-such-plugin'"),
        ("tests.middleware:NeedsArguments", "could not be created"),
    ],
)
def test_a_bad_middleware_name_is_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_middleware(spec)


def test_middleware_is_found_through_its_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed distribution registers under ``naq.middleware``; naq finds it by name."""
    dist = tmp_path / "naq_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: naq-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[naq.middleware]\nstamp = tests.middleware:Stamp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "stamp" in available_middleware()
    (loaded,) = load_middleware("stamp")
    assert isinstance(loaded, Stamp)
