"""Settings are read from the environment in one place; these pin that contract."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from naq.errors import ConfigurationError
from naq.settings import DEFAULT_NATS_URL, Settings, env_name

A_FILE = str(Path(__file__).resolve())
"""A file that exists and is readable, for the settings that name one."""
# A valid, non-default raw value for every field, with the value it must become.
# A new field without an entry here fails test_every_field_has_an_env_twin on purpose.
ENV_SAMPLES: dict[str, tuple[str, Any]] = {
    "nats_url": ("nats://10.0.0.1:4222", "nats://10.0.0.1:4222"),
    "user": ("alice", "alice"),
    "password": ("s3cret", "s3cret"),
    "token": ("t0ken", "t0ken"),
    "nkey_file": (A_FILE, A_FILE),
    "creds_file": (A_FILE, A_FILE),
    "tls_ca_file": (A_FILE, A_FILE),
    "tls_cert_file": (A_FILE, A_FILE),
    "tls_key_file": (A_FILE, A_FILE),
    "tls_hostname": ("nats.example.com", "nats.example.com"),
    "tls_handshake_first": ("yes", True),
    "namespace": ("billing", "billing"),
    "default_queue": ("emails", "emails"),
    "job_serializer": ("json", "json"),
    "log_level": ("debug", "DEBUG"),
    "executor": ("thread", "thread"),
    "concurrency": ("7", 7),
    "lookahead": ("2", 2),
    "lookahead_wait": ("2.5", 2.5),
    "ack_wait": ("12.5", 12.5),
    "max_ack_pending": ("100", 100),
    "pull_expires": ("2.5", 2.5),
    "heartbeat_interval": ("1.5", 1.5),
    "ping_interval": ("2.5", 2.5),
    "retry_window": ("12.5", 12.5),
    "shutdown_grace": ("3", 3.0),
    "marker_ttl": ("60", 60.0),
    "result_ttl": ("60", 60),
    "duplicate_window": ("30", 30.0),
    "replicas": ("3", 3),
    "store_dir": ("/tmp/naq-store", "/tmp/naq-store"),
    "worker_id_file": ("/tmp/naq-worker.id", "/tmp/naq-worker.id"),
    "max_jobs_per_child": ("100", 100),
    "max_deliver": ("5", 5),
    "max_memory_per_child": ("512MiB", 512 * 1024**2),
    "max_memory": ("2G", 2 * 1000**3),
    "preload": ("tasks,app.jobs", "tasks,app.jobs"),
    "allow": ("tasks, reports.*", "tasks, reports.*"),
    "middleware": ("tests.middleware:Stamp,tracing", "tests.middleware:Stamp,tracing"),
    "metrics_port": ("9108", 9108),
    "metrics_host": ("127.0.0.1", "127.0.0.1"),
    "scheduler_lock_ttl": ("45", 45.0),
    "scheduler_lock_renew_interval": ("10", 10.0),
    "max_stream_bytes": ("10GiB", 10 * 1024**3),
    "max_stream_msgs": ("1000000", 1_000_000),
    "max_bucket_bytes": ("1G", 1000**3),
    "max_message_size": ("1MiB", 1024**2),
    "max_result_ttl": ("86400", 86400),
    "signing_key": ("k" * 40, "k" * 40),
    "signing_keys_previous": ("o" * 40 + "," + "p" * 40, "o" * 40 + "," + "p" * 40),
    "dashboard_host": ("0.0.0.0", "0.0.0.0"),
    "dashboard_port": ("9090", 9090),
    "dashboard_admin": ("yes", True),
    "dashboard_user": ("ops", "ops"),
    "dashboard_password": ("dashpw", "dashpw"),
    "dashboard_token": ("dash-t0ken", "dash-t0ken"),
    "dashboard_redact": ("app.secrets:mask", "app.secrets:mask"),
}
# The settings that are valid only with another one, and that other one.
ENV_COMPANIONS: dict[str, dict[str, str]] = {
    "signing_keys_previous": {"NAQ_SIGNING_KEY": "n" * 40},
    "user": {"NAQ_PASSWORD": "pw"},
    "password": {"NAQ_USER": "someone"},
    "tls_cert_file": {"NAQ_TLS_KEY_FILE": A_FILE},
    "tls_key_file": {"NAQ_TLS_CERT_FILE": A_FILE},
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
        ({"allow": "tasks,.tasks"}, r"invalid module name or pattern '\.tasks'"),
        ({"allow": "os system"}, "invalid module name or pattern 'os system'"),
        ({"preload": "a..b"}, r"invalid module name or pattern 'a\.\.b'"),
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
        env = {env_name(name): raw, **ENV_COMPANIONS.get(name, {})}
        value = getattr(Settings.from_env(env), name)
        assert value == expected, name
        assert type(value) is type(expected), name


def test_allow_is_a_comma_separated_list() -> None:
    assert Settings().allow_patterns == ()
    assert Settings(allow=" tasks, reports.*,,").allow_patterns == ("tasks", "reports.*")


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.namespace = "other"  # type: ignore[misc]


def test_servers_split_comma_separated_urls() -> None:
    s = Settings(nats_url="nats://a:4222, nats://b:4222 ,,nats://c:4222,")
    assert s.servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert Settings(nats_url="nats://only:1").servers == ["nats://only:1"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("1", True), ("TRUE", True), ("yes", True), ("On", True)],
        *[("0", False), ("false", False), ("No", False), ("off", False)],
    ],
)
def test_bool_settings_read_the_usual_words(raw: str, expected: bool) -> None:
    assert Settings.from_env({"NAQ_TLS_HANDSHAKE_FIRST": raw}).tls_handshake_first is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "t"])
def test_bool_settings_refuse_anything_else(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=f"NAQ_TLS_HANDSHAKE_FIRST={raw!r}"):
        Settings.from_env({"NAQ_TLS_HANDSHAKE_FIRST": raw})


SECRET = "pa55-Zq8wVx"


def test_repr_shows_no_password_or_token() -> None:
    shown = [
        repr(Settings(user="alice", password=SECRET)),
        repr(Settings(token=SECRET)),
        repr(Settings(nats_url=f"nats://alice:{SECRET}@h:4222,tls://bob:{SECRET}@h2:4222")),
        repr(Settings(nats_url=f"nats://{SECRET}@h:4222")),
        str(Settings(user="alice", password=SECRET)),
        repr(Settings(dashboard_user="ops", dashboard_password=SECRET)),
        repr(Settings(dashboard_token=SECRET)),
        Settings(dashboard_token=SECRET).redact(f"refused {SECRET}"),
    ]
    for text in shown:
        assert SECRET not in text
    assert "user='alice'" in shown[0]
    assert "nats://alice:***@h:4222,tls://bob:***@h2:4222" in shown[2]
    assert "nats://***@h:4222" in shown[3]


def test_safe_url_and_redact_mask_every_secret() -> None:
    s = Settings(nats_url=f"nats://alice:{SECRET}@h:4222")
    assert s.safe_url == "nats://alice:***@h:4222"
    assert s.redact(f"server said {SECRET!r}") == "server said '***'"
    t = Settings(token=SECRET)
    assert t.redact(f"auth {SECRET}") == "auth ***"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"tls_cert_file": A_FILE}, "tls_cert_file and tls_key_file go together"),
        ({"tls_key_file": A_FILE}, "tls_cert_file and tls_key_file go together"),
        ({"user": "alice"}, "user and password go together"),
        ({"password": SECRET}, "user and password go together"),
        ({"user": "alice", "password": SECRET, "token": SECRET}, "a token or a user"),
        ({"nkey_file": A_FILE, "creds_file": A_FILE}, "nkey_file or creds_file, not both"),
        (
            {"nats_url": f"nats://a:{SECRET}@h:1", "user": "b", "password": SECRET},
            "credentials in both nats_url and user/password/token",
        ),
        ({"nats_url": f"nats://{SECRET}@h:1", "token": SECRET}, "ambiguous"),
        ({"nats_url": f"nats://h:1,nats://a:{SECRET}@h:2", "token": "x"}, "ambiguous"),
        ({"nkey_file": "/nonexistent/user.nk"}, "nkey_file: no such file '/nonexistent/user.nk'"),
        ({"creds_file": "/nonexistent/u.creds"}, "creds_file: no such file"),
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file: no such file"),
        ({"tls_ca_file": str(Path(A_FILE).parent)}, "tls_ca_file: .* is not a file"),
    ],
)
def test_connection_settings_are_checked_at_construction(
    kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected) as caught:
        Settings(**kwargs)
    assert SECRET not in str(caught.value)


def test_empty_connection_values_mean_unset() -> None:
    s = Settings(user="", password="", token="", tls_hostname="")
    assert (s.user, s.password, s.token, s.tls_hostname) == (None, None, None, None)
    assert not s.uses_auth_or_tls


def test_connection_id_tells_credentials_apart() -> None:
    url = "nats://h:4222"
    alice = Settings(nats_url=url, user="alice", password="one")
    assert alice.connection_id == Settings(nats_url=url, user="alice", password="one").connection_id
    others = [
        Settings(nats_url=url),
        Settings(nats_url=url, user="alice", password="two"),
        Settings(nats_url=url, token="one"),
        Settings(nats_url=url, user="alice", password="one", tls_hostname="x"),
        Settings(nats_url="nats://h:4223", user="alice", password="one"),
    ]
    assert len({alice.connection_id, *(o.connection_id for o in others)}) == 1 + len(others)
    assert "one" not in alice.connection_id
    # settings that differ elsewhere share a connection
    assert alice.replace(namespace="other").connection_id == alice.connection_id


def test_several_urls_with_credentials_in_each() -> None:
    s = Settings(nats_url=f"nats://a:{SECRET}@h1:4222, tls://a:{SECRET}@h2:4222")
    assert s.servers == [f"nats://a:{SECRET}@h1:4222", f"tls://a:{SECRET}@h2:4222"]
    assert s.safe_url == "nats://a:***@h1:4222, tls://a:***@h2:4222"


def test_connection_settings_reach_nasqueue_and_the_cli_without_secrets() -> None:
    import inspect

    from naq.cli.common import SUPERVISOR_FIELDS, settings_options
    from naq.nasqueue import NASQueue
    from naq.settings import CONNECTION_FIELDS

    params = inspect.signature(NASQueue).parameters
    assert list(params)[:3] == ["host", "port", "namespace"]  # the seed's positionals
    for name in CONNECTION_FIELDS[1:]:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert "password" not in SUPERVISOR_FIELDS
    assert "token" not in SUPERVISOR_FIELDS
    with pytest.raises(ValueError, match="password is a secret"):
        settings_options("password")(lambda: None)
