"""Executors are chosen by name from settings; a typo must say what is available."""

from __future__ import annotations

from pathlib import Path

import pytest

from naq.errors import ConfigurationError
from naq.executors import Call, Executor, Outcome, available_executors, load_executor
from naq.executors.asyncio import AsyncioExecutor
from naq.executors.thread import ThreadExecutor


class EchoExecutor(Executor):
    """A third-party executor, loaded by ``module:Class``."""

    name = "echo"

    async def start(self) -> None:
        return None

    def free_slots(self) -> int:
        return self.concurrency

    async def run(self, call: Call) -> Outcome:
        return Outcome(call.job_id, "ok", result=call.payload)

    async def cancel(self, job_id: str) -> bool:
        return False

    async def shutdown(self, grace: float) -> None:
        return None


class NotAnExecutor:
    pass


def not_a_class() -> None:
    return None


def test_builtin_executors() -> None:
    assert load_executor("asyncio") is AsyncioExecutor
    assert load_executor("thread") is ThreadExecutor


def test_available_executors() -> None:
    names = available_executors()
    assert {"asyncio", "thread"} <= set(names)
    assert names == sorted(names)


def test_module_and_class() -> None:
    assert load_executor(f"{__name__}:EchoExecutor") is EchoExecutor
    assert load_executor("naq.executors.thread:ThreadExecutor") is ThreadExecutor


@pytest.mark.parametrize("attr", ["NotAnExecutor", "not_a_class", "pytest"])
def test_not_an_executor(attr: str) -> None:
    spec = f"{__name__}:{attr}"
    with pytest.raises(ConfigurationError, match="is not a naq Executor"):
        load_executor(spec)


def test_unknown_name_lists_the_available_executors() -> None:
    with pytest.raises(ConfigurationError, match="unknown executor 'procss'") as info:
        load_executor("procss")
    message = str(info.value)
    assert "asyncio" in message
    assert "thread" in message
    assert "module:Class" in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("no_such_module_for_naq:Executor", "cannot import executor module"),
        (f"{__name__}:Missing", "has no 'Missing'"),
    ],
)
def test_bad_module_specs(spec: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        load_executor(spec)


def test_empty_module_name_is_a_configuration_error() -> None:
    """``NAQ_EXECUTOR=:Foo`` is a configuration mistake like any other."""
    with pytest.raises(ConfigurationError):
        load_executor(":EchoExecutor")


def test_entry_point_plugins_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package registers under the naq.executors entry-point group."""
    dist = tmp_path / "naq_echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: naq-echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[naq.executors]\necho = tests.unit.test_registry:EchoExecutor\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "echo" in available_executors()
    assert load_executor("echo") is EchoExecutor
