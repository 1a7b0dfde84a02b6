"""Bad namespace and queue names are refused where they enter naq, with a clear message.

A name becomes part of subjects, stream names and bucket names. One that NATS would
refuse must fail here, naming the value and what is allowed, before anything connects:
otherwise it fails later as an obscure server or client error, or (a dot, a wildcard)
silently reaches subjects of another queue.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from naq.errors import ConfigurationError
from naq.executors.registry import load_executor
from naq.producer.failed import list_failed, purge_failed
from naq.producer.schedules import list_schedules, schedule
from naq.queue import Queue, fetch_job_result, purge_queue
from naq.settings import Settings
from naq.supervisor import Supervisor
from naq.transport.names import Layout
from tests.jobs import add

NOWHERE = "nats://127.0.0.1:1"
"""Nothing listens there: a name that slipped through would fail as a connection error."""

MAX_NAMESPACE = 240
"""The longest stream name naq derives is ``NAQ_ADVISORIES_{ns}``; the server allows 255."""
MAX_QUEUE = 255
"""A queue's consumer is named after it; the server allows 255 characters."""

BAD_NAMES = [
    "a.b",  # a subject token separator: "a.b" would be two tokens
    "a b",
    "",
    "a*",
    "a>",
    "*",
    ">",
    "a\tb",
    "a\n",  # a trailing newline, as read from a file: "$" in a regex would let it in
    "a/b",
    "ü",
]
BAD_NAMESPACES = [*BAD_NAMES, "n" * (MAX_NAMESPACE + 1)]
BAD_QUEUES = [*BAD_NAMES, "bad.name", "q" * (MAX_QUEUE + 1)]


def _ids(values: list[str]) -> list[str]:
    return [repr(v) if len(v) < 20 else f"{len(v)} chars" for v in values]


@pytest.fixture(autouse=True)
def no_naq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Queue()`` reads ``NAQ_*``; the runner's own must not decide a test."""
    for name in [n for n in os.environ if n.startswith("NAQ_")]:
        monkeypatch.delenv(name)


def assert_names(exc: pytest.ExceptionInfo[ConfigurationError], kind: str, value: str) -> None:
    """The message names the bad value (as repr, so whitespace shows) and what is allowed."""
    message = str(exc.value)
    assert f"invalid {kind} name {value!r}" in message, message
    assert "letters, digits, '_' and '-'" in message, message
    limit = MAX_NAMESPACE if kind == "namespace" else MAX_QUEUE
    assert f"at most {limit} characters" in message, message


@pytest.mark.parametrize("value", BAD_NAMESPACES, ids=_ids(BAD_NAMESPACES))
def test_queue_refuses_a_bad_namespace(value: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        Queue(namespace=value, nats_url=NOWHERE)
    assert_names(exc, "namespace", value)


@pytest.mark.parametrize("value", BAD_QUEUES, ids=_ids(BAD_QUEUES))
def test_queue_refuses_a_bad_queue_name(value: str) -> None:
    """``""`` included: an empty name from an unset variable is not the default queue."""
    with pytest.raises(ConfigurationError) as exc:
        Queue(value, nats_url=NOWHERE)
    assert_names(exc, "queue", value)


@pytest.mark.parametrize("value", BAD_NAMESPACES, ids=_ids(BAD_NAMESPACES))
def test_settings_refuse_a_bad_namespace(value: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        Settings(namespace=value)
    assert_names(exc, "namespace", value)
    with pytest.raises(ConfigurationError) as exc:
        Settings().replace(namespace=value)
    assert_names(exc, "namespace", value)
    with pytest.raises(ConfigurationError) as exc:
        Layout(value)
    assert_names(exc, "namespace", value)


@pytest.mark.parametrize("value", BAD_QUEUES, ids=_ids(BAD_QUEUES))
def test_settings_refuse_a_bad_default_queue(value: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        Settings(default_queue=value)
    assert_names(exc, "queue", value)


NON_EMPTY_BAD = [v for v in BAD_NAMESPACES if v]


@pytest.mark.parametrize("value", NON_EMPTY_BAD, ids=_ids(NON_EMPTY_BAD))
def test_a_bad_namespace_in_the_environment_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError) as exc:
        Settings.from_env({"NAQ_NAMESPACE": value})
    assert_names(exc, "namespace", value)
    monkeypatch.setenv("NAQ_NAMESPACE", value)
    with pytest.raises(ConfigurationError) as exc:
        Queue(nats_url=NOWHERE)
    assert_names(exc, "namespace", value)


def test_an_empty_namespace_variable_means_unset() -> None:
    """Documented: an empty ``NAQ_*`` is ignored, as shells and compose files leave them."""
    assert Settings.from_env({"NAQ_NAMESPACE": ""}).namespace == "naq"


def test_an_explicit_namespace_overrides_a_bad_one_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The override wins before validation: a good argument is not blocked by the env."""
    monkeypatch.setenv("NAQ_NAMESPACE", "a.b")
    assert Queue(namespace="good", nats_url=NOWHERE).layout.stream == "NAQ_JOBS_good"


BoundCall = Callable[[str], Awaitable[Any]]
MODULE_CALLS: dict[str, tuple[str, BoundCall]] = {
    "fetch_job_result": (
        "namespace",
        lambda v: fetch_job_result("j1", nats_url=NOWHERE, namespace=v),
    ),
    "purge_queue/namespace": ("namespace", lambda v: purge_queue(nats_url=NOWHERE, namespace=v)),
    "purge_queue/queue": ("queue", lambda v: purge_queue(v, nats_url=NOWHERE)),
    "schedule": (
        "namespace",
        lambda v: schedule(add, 1, 2, interval=1, nats_url=NOWHERE, namespace=v),
    ),
    "list_schedules": ("namespace", lambda v: list_schedules(nats_url=NOWHERE, namespace=v)),
    "list_failed/namespace": ("namespace", lambda v: list_failed(nats_url=NOWHERE, namespace=v)),
    "list_failed/queue": ("queue", lambda v: list_failed(v, nats_url=NOWHERE)),
    "purge_failed/queue": ("queue", lambda v: purge_failed(v, nats_url=NOWHERE)),
}


@pytest.mark.parametrize("call", MODULE_CALLS)
@pytest.mark.parametrize("value", ["a.b", "a b", "a>"])
async def test_module_functions_refuse_bad_names_before_connecting(call: str, value: str) -> None:
    kind, bound = MODULE_CALLS[call]
    with pytest.raises(ConfigurationError) as exc:
        await bound(value)
    assert_names(exc, kind, value)


GOOD_NAMESPACES = ["naq", "A", "0", "shop-eu_1", "n" * MAX_NAMESPACE]


@pytest.mark.parametrize("value", GOOD_NAMESPACES, ids=_ids(GOOD_NAMESPACES))
def test_good_namespaces_pass(value: str) -> None:
    assert Queue(namespace=value, nats_url=NOWHERE).layout.namespace == value


def test_the_longest_queue_name_passes() -> None:
    assert Queue("q" * MAX_QUEUE, nats_url=NOWHERE).name == "q" * MAX_QUEUE


def test_names_derive_from_the_namespace_in_the_environment() -> None:
    settings = Settings.from_env({"NAQ_NAMESPACE": "shop"})
    layout = Layout(settings.namespace)
    assert (layout.stream, layout.failed_stream, layout.advisory_stream) == (
        "NAQ_JOBS_shop",
        "NAQ_FAILED_shop",
        "NAQ_ADVISORIES_shop",
    )
    assert [
        layout.results_bucket,
        layout.workers_bucket,
        layout.deps_bucket,
        layout.schedules_bucket,
        layout.leader_bucket,
    ] == ["shop_results", "shop_workers", "shop_deps", "shop_schedules", "shop_leader"]
    assert layout.job_subject("default", "j1") == "shop.jobs.default.j1"
    assert layout.cancel_subject == "shop.control.cancel"


def test_queue_namespace_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAQ_NAMESPACE", "fromenv")
    assert Queue(nats_url=NOWHERE).layout.stream == "NAQ_JOBS_fromenv"
    assert Queue(namespace="mine", nats_url=NOWHERE).layout.stream == "NAQ_JOBS_mine"
    given = Settings.from_env({"NAQ_NAMESPACE": "given"})
    assert Queue(settings=given).layout.namespace == "given"
    assert Queue(settings=given, namespace="mine").layout.namespace == "mine"


@pytest.mark.parametrize("queue", ["bad.name", "a b", ""])
def test_a_library_supervisor_refuses_a_bad_queue_name_before_connecting(queue: str) -> None:
    settings = Settings(nats_url=NOWHERE)
    executor = load_executor("asyncio")(1, settings)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        Supervisor(settings, executor, [queue])
