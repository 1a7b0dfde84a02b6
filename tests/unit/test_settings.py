"""Settings are read from the environment in one place; these pin that contract."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from naq.errors import ConfigurationError
from naq.settings import DEFAULT_NATS_URL, Settings, env_name

# A valid, non-default raw value for every field, with the value it must become.
# A new field without an entry here fails test_every_field_has_an_env_twin on purpose.
ENV_SAMPLES: dict[str, tuple[str, Any]] = {
    "nats_url": ("nats://10.0.0.1:4222", "nats://10.0.0.1:4222"),
    "namespace": ("billing", "billing"),
    "default_queue": ("emails", "emails"),
    "job_serializer": ("json", "json"),
    "log_level": ("debug", "DEBUG"),
    "executor": ("thread", "thread"),
    "concurrency": ("7", 7),
    "ack_wait": ("12.5", 12.5),
    "max_ack_pending": ("100", 100),
    "pull_expires": ("2.5", 2.5),
    "heartbeat_interval": ("1.5", 1.5),
    "shutdown_grace": ("3", 3.0),
    "result_ttl": ("60", 60),
    "duplicate_window": ("30", 30.0),
    "replicas": ("3", 3),
    "store_dir": ("/tmp/naq-store", "/tmp/naq-store"),
    "max_jobs_per_child": ("100", 100),
    "max_deliver": ("5", 5),
    "max_memory_per_child": ("512MiB", 512 * 1024**2),
    "max_memory": ("2G", 2 * 1000**3),
    "preload": ("tasks,app.jobs", "tasks,app.jobs"),
    "middleware": ("tests.middleware:Stamp,tracing", "tests.middleware:Stamp,tracing"),
    "scheduler_lock_ttl": ("45", 45.0),
    "scheduler_lock_renew_interval": ("10", 10.0),
}


def test_defaults() -> None:
    s = Settings()
    assert s.nats_url is None
    assert s.url == DEFAULT_NATS_URL
    assert s.servers == [DEFAULT_NATS_URL]
    assert s.namespace == "naq"
    assert s.default_queue == "default"
    assert s.job_serializer == "pickle"
    assert s.log_level == "INFO"
    assert s.executor == "asyncio"
    assert s.concurrency == 10
    assert s.ack_wait == 60.0
    assert s.result_ttl == 7 * 24 * 3600
    assert s.replicas == 1
    assert s.store_dir is None


def test_from_env_reads_the_documented_variables() -> None:
    env = {
        "NAQ_NATS_URL": "nats://example:4333",
        "NAQ_DEFAULT_QUEUE": "mail",
        "NAQ_JOB_SERIALIZER": "json",
        "NAQ_NAMESPACE": "shop",
        "NAQ_LOG_LEVEL": "warning",
        "NAQ_CONCURRENCY": "4",
        "NAQ_ACK_WAIT": "2.5",
    }
    s = Settings.from_env(env)
    assert s.nats_url == "nats://example:4333"
    assert s.url == "nats://example:4333"
    assert s.default_queue == "mail"
    assert s.job_serializer == "json"
    assert s.namespace == "shop"
    assert s.log_level == "WARNING"
    assert s.concurrency == 4
    assert isinstance(s.concurrency, int)
    assert s.ack_wait == 2.5
    assert isinstance(s.ack_wait, float)


def test_from_env_ignores_unrelated_and_empty_variables() -> None:
    s = Settings.from_env({"NAQ_NAMESPACE": "", "NATS_URL": "nats://x:1", "CONCURRENCY": "3"})
    assert s == Settings()


def test_from_env_without_mapping_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAQ_NAMESPACE", "fromos")
    assert Settings.from_env().namespace == "fromos"


def test_overrides_beat_env() -> None:
    env = {"NAQ_NAMESPACE": "envns", "NAQ_CONCURRENCY": "4"}
    s = Settings.from_env(env, namespace="argns", concurrency=9)
    assert s.namespace == "argns"
    assert s.concurrency == 9


def test_none_overrides_are_ignored() -> None:
    env = {"NAQ_NAMESPACE": "envns", "NAQ_CONCURRENCY": "4"}
    s = Settings.from_env(env, namespace=None, concurrency=None, nats_url=None)
    assert s.namespace == "envns"
    assert s.concurrency == 4
    assert s.nats_url is None


def test_replace_ignores_none() -> None:
    s = Settings(namespace="a")
    assert s.replace(namespace=None) is s
    assert s.replace(namespace="b", concurrency=None).namespace == "b"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"namespace": "a.b"}, r"invalid namespace name 'a\.b'"),
        ({"namespace": ""}, "invalid namespace name"),
        ({"default_queue": "q*"}, r"invalid queue name 'q\*'"),
        ({"job_serializer": "yaml"}, "invalid job_serializer 'yaml'"),
        ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
        ({"ack_wait": 0}, "ack_wait must be positive"),
        ({"pull_expires": -1}, "pull_expires must be positive"),
        ({"shutdown_grace": -1}, "shutdown_grace must not be negative"),
        ({"result_ttl": 0}, "result_ttl"),
    ],
)
def test_invalid_values_are_refused(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        Settings(**kwargs)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"NAQ_NAMESPACE": "a.b"}, r"invalid namespace name 'a\.b'"),
        ({"NAQ_JOB_SERIALIZER": "yaml"}, "invalid job_serializer 'yaml'"),
        ({"NAQ_CONCURRENCY": "0"}, "concurrency must be at least 1"),
        ({"NAQ_CONCURRENCY": "abc"}, "NAQ_CONCURRENCY='abc' is not a valid int"),
        ({"NAQ_ACK_WAIT": "soon"}, "NAQ_ACK_WAIT='soon' is not a valid float"),
    ],
)
def test_invalid_env_values_are_refused(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        Settings.from_env(env)


def test_every_field_has_an_env_twin() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    assert names == set(ENV_SAMPLES), "keep ENV_SAMPLES in step with Settings"
    for name, (raw, expected) in ENV_SAMPLES.items():
        assert env_name(name) == "NAQ_" + name.upper()
        value = getattr(Settings.from_env({env_name(name): raw}), name)
        assert value == expected, name
        assert type(value) is type(expected), name


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.namespace = "other"  # type: ignore[misc]


def test_servers_split_comma_separated_urls() -> None:
    s = Settings(nats_url="nats://a:4222, nats://b:4222 ,,nats://c:4222,")
    assert s.servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert Settings(nats_url="nats://only:1").servers == ["nats://only:1"]
