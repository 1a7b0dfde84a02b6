"""One frozen ``Settings`` object, built once and passed down.

Why one object: the original naq read the environment at import time in a dozen
places, so a value could differ between modules and tests could not change it. Here
the environment is read in exactly one function, :meth:`Settings.from_env`, called
by the CLI and by the library's entry points; everything below takes ``settings``.

Every field ``foo_bar`` has the environment twin ``NAQ_FOO_BAR``, so a container can
be configured by environment alone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from naq.errors import ConfigurationError
from naq.redact import has_userinfo, redact
from naq.signing import Signer, signer_for

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_RETRY_WINDOW = 30.0
"""Seconds a NATS operation is retried through transient trouble: a leader election
on a 3-node cluster made publishes fail for about 8 s, a server restart takes longer."""
ENV_PREFIX = "NAQ_"
_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_NAME = {"namespace": 240, "queue": 255}
"""Stream and consumer names stop at 255 characters on the server: the longest stream
naq derives is ``NAQ_ADVISORIES_{ns}``, and a queue's consumer is named after it."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*((?:[kmgt]i?)?b?)\s*$", re.IGNORECASE)

Serializer = Literal["pickle", "json"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CONNECTION_FIELDS = (
    "nats_url",
    "user",
    "password",
    "token",
    "nkey_file",
    "creds_file",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_hostname",
    "tls_handshake_first",
)
"""The settings that say how to reach and authenticate to NATS: two settings that
differ in any of them must not share a connection."""
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return ENV_PREFIX + field_name.upper()


def validate_name(kind: str, value: str) -> str:
    """Queue and namespace names become parts of subjects, streams and buckets.

    NATS forbids dots, wildcards and spaces in stream and bucket names, so only
    letters, digits, ``_`` and ``-`` pass, up to the length the server takes; anything
    else would fail later with an obscure server error. ``fullmatch``: a trailing
    newline (a value read from a file) must not pass as ``$`` would let it.
    """
    limit = MAX_NAME[kind]
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > limit:
        raise ConfigurationError(
            f"invalid {kind} name {value!r}: use letters, digits, '_' and '-' only, "
            f"at most {limit} characters"
        )
    return value


def env_snapshot(environ: Mapping[str, str] | None = None) -> tuple[str | None, ...]:
    """The values of every ``NAQ_*`` setting: cheap, for caching what they determine."""
    env = os.environ if environ is None else environ
    return tuple(env.get(name) for name in _ENV_NAMES)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable in naq. Field docs are the CLI help text."""

    nats_url: str | None = field(
        default=None,
        metadata={"help": f"NATS server URL(s), comma-separated; default {DEFAULT_NATS_URL}"},
    )
    user: str | None = field(
        default=None, metadata={"help": "NATS user name (its password: NAQ_PASSWORD)"}
    )
    password: str | None = field(
        default=None,
        repr=False,
        metadata={"help": "the user's password (environment only, never a flag)", "secret": True},
    )
    token: str | None = field(
        default=None,
        repr=False,
        metadata={"help": "NATS auth token (environment only, never a flag)", "secret": True},
    )
    nkey_file: str | None = field(
        default=None, metadata={"help": "file holding the user's nkey seed", "file": True}
    )
    creds_file: str | None = field(
        default=None,
        metadata={"help": "credentials file (user JWT and nkey seed)", "file": True},
    )
    tls_ca_file: str | None = field(
        default=None,
        metadata={"help": "CA certificates to trust for the server (PEM)", "file": True},
    )
    tls_cert_file: str | None = field(
        default=None,
        metadata={"help": "client certificate for mutual TLS (PEM; needs its key)", "file": True},
    )
    tls_key_file: str | None = field(
        default=None,
        metadata={"help": "the client certificate's private key (PEM)", "file": True},
    )
    tls_hostname: str | None = field(
        default=None, metadata={"help": "name to check the server's certificate against"}
    )
    tls_handshake_first: bool = field(
        default=False,
        metadata={"help": "start TLS before the server's INFO (server: handshake_first)"},
    )
    namespace: str = field(
        default="naq", metadata={"help": "prefix of every stream, subject and bucket"}
    )
    default_queue: str = field(default="default", metadata={"help": "queue used when none given"})
    job_serializer: Serializer = field(
        default="pickle", metadata={"help": "pickle (cloudpickle) or json (nothing unpickled)"}
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    executor: str = field(
        default="asyncio", metadata={"help": "executor: short name, entry point or module:Class"}
    )
    concurrency: int = field(default=10, metadata={"help": "jobs run at once"})
    lookahead: int = field(
        default=8,
        metadata={
            "help": "jobs per slot a supervisor holds beyond those running, already "
            "leased, each started the moment a slot frees (0: none)"
        },
    )
    lookahead_wait: float = field(
        default=1.0,
        metadata={
            "help": "seconds a job held in the look-ahead waits for a slot before it is "
            "handed back for another worker (the look-ahead then closes while jobs are long)"
        },
    )
    ack_wait: float = field(
        default=60.0, metadata={"help": "seconds before an unacknowledged job is redelivered"}
    )
    max_ack_pending: int = field(
        default=20_000, metadata={"help": "jobs in flight per queue across all supervisors"}
    )
    pull_expires: float = field(
        default=5.0, metadata={"help": "seconds a pull request waits on an empty queue"}
    )
    heartbeat_interval: float = field(
        default=5.0, metadata={"help": "seconds between worker heartbeats"}
    )
    ping_interval: float = field(
        default=5.0,
        metadata={
            "help": "seconds between pings to the NATS server; two unanswered mean the "
            "connection is lost (a silent partition is noticed in seconds)"
        },
    )
    retry_window: float = field(
        default=DEFAULT_RETRY_WINDOW,
        metadata={
            "help": "seconds naq keeps retrying a NATS operation through no-responders, "
            "503s and timeouts (a leader election, a server restart) before it fails"
        },
    )
    shutdown_grace: float = field(
        default=30.0, metadata={"help": "seconds running jobs get to finish on SIGTERM"}
    )
    marker_ttl: float = field(
        default=300.0,
        metadata={
            "help": "seconds a KV delete or purge marker lives (at least 1): long enough "
            "for every watcher to see it, after which it only takes room"
        },
    )
    result_ttl: int = field(
        default=7 * 24 * 3600, metadata={"help": "default seconds a result is kept"}
    )
    duplicate_window: float = field(
        default=600.0, metadata={"help": "seconds a job id is remembered for deduplication"}
    )
    replicas: int = field(default=1, metadata={"help": "stream replicas (3 in a cluster)"})
    store_dir: str | None = field(
        default=None, metadata={"help": "embedded server store dir (default: per-user dir)"}
    )
    worker_id_file: str | None = field(
        default=None,
        metadata={
            "help": "file a supervisor (or scheduler) writes its heartbeat's id to while "
            "it runs, where `naq health` finds which heartbeat is its own (unset: `naq "
            "health` checks every supervisor on this host)"
        },
    )
    max_deliver: int = field(
        default=100,
        metadata={"help": "deliveries after which the server gives a job up (a backstop)"},
    )
    max_jobs_per_child: int = field(
        default=0, metadata={"help": "process executor: replace a child after N jobs (0: never)"}
    )
    max_memory_per_child: int = field(
        default=0,
        metadata={"help": "process executor: child RSS limit, e.g. 512MiB (0: none)", "size": True},
    )
    max_memory: int = field(
        default=0,
        metadata={"help": "pause pulling while the supervisor's total RSS is above", "size": True},
    )
    preload: str = field(
        default="", metadata={"help": "modules every child imports at start, comma-separated"}
    )
    allow: str = field(
        default="",
        metadata={
            "help": "json mode: modules whose functions may run (names, or patterns such as "
            "'reports.*'), comma-separated; preload modules count too; none given: the "
            "modules in the working directory only"
        },
    )
    middleware: str = field(
        default="",
        metadata={"help": "middleware (module:Class or entry-point names), comma-separated"},
    )
    metrics_port: int = field(
        default=0,
        metadata={
            "help": "serve Prometheus metrics at http://HOST:PORT/metrics from the "
            "supervisor or scheduler (0: off)"
        },
    )
    metrics_host: str = field(
        default="0.0.0.0",
        metadata={
            "help": "address the metrics port listens on (all interfaces, so a "
            "container's port can be published; 127.0.0.1 keeps it local)"
        },
    )
    scheduler_lock_ttl: float = field(
        default=30.0, metadata={"help": "seconds the scheduler leader's lease lasts unrenewed"}
    )
    scheduler_lock_renew_interval: float = field(
        default=15.0, metadata={"help": "seconds between renewals of the scheduler lease"}
    )
    max_stream_bytes: int = field(
        default=0,
        metadata={
            "help": "job stream and NASQueue stream size limit, e.g. 10GiB (0: none; a full "
            "stream refuses new messages, it never drops old ones)",
            "size": True,
        },
    )
    max_stream_msgs: int = field(
        default=0, metadata={"help": "messages the job and NASQueue streams hold (0: no limit)"}
    )
    max_bucket_bytes: int = field(
        default=0,
        metadata={"help": "size limit of each KV bucket, e.g. 1GiB (0: none)", "size": True},
    )
    max_message_size: int = field(
        default=0,
        metadata={
            "help": "largest job, result or message a stream takes, e.g. 1MiB "
            "(0: the server's max_payload)",
            "size": True,
        },
    )
    max_result_ttl: int = field(
        default=0,
        metadata={
            "help": "longest a supervisor keeps a result, in seconds, whatever the "
            "job asks, result_ttl=-1 included (0: no cap)"
        },
    )
    signing_key: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "sign jobs and results with this key; refuse unsigned ones "
            "(environment only, never a flag)",
            "secret": True,
        },
    )
    signing_keys_previous: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "older keys still accepted while rotating, comma-separated "
            "(environment only, never a flag)",
            "secret": True,
        },
    )

    dashboard_host: str = field(
        default="127.0.0.1",
        metadata={"help": "address the web dashboard listens on", "dashboard": True},
    )
    dashboard_port: int = field(
        default=8080, metadata={"help": "port of the web dashboard", "dashboard": True}
    )
    dashboard_admin: bool = field(
        default=False,
        metadata={
            "help": "offer and accept the dashboard's actions (requeue, purge, pause, ...); "
            "read-only without it",
            "dashboard": True,
        },
    )
    dashboard_user: str | None = field(
        default=None,
        metadata={
            "help": "basic-auth user of the dashboard (with its password)",
            "dashboard": True,
        },
    )
    dashboard_password: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "basic-auth password of the dashboard (environment only, never a flag)",
            "secret": True,
            "dashboard": True,
        },
    )
    dashboard_token: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "bearer token the dashboard asks for (environment only, never a flag)",
            "secret": True,
            "dashboard": True,
        },
    )
    dashboard_redact: str = field(
        default="",
        metadata={
            "help": "module:function that masks secrets in job arguments the dashboard "
            "shows (default: values of keywords named like a password, token or key)",
            "dashboard": True,
        },
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.metadata.get("size"):  # "512MiB" from a flag or the environment
                object.__setattr__(self, f.name, parse_size(getattr(self, f.name)))
        self._check_connection()
        level = str(self.log_level).upper()
        if level not in LOG_LEVELS:
            raise ConfigurationError(
                f"invalid log_level {self.log_level!r}: use one of {', '.join(LOG_LEVELS)}"
            )
        object.__setattr__(self, "log_level", level)  # frozen: normalised once, here
        validate_name("namespace", self.namespace)
        validate_name("queue", self.default_queue)
        for pattern in (*self.allow_patterns, *self.preload_modules):
            if not all(p.replace("*", "x").isidentifier() for p in pattern.split(".")):
                raise ConfigurationError(
                    f"invalid module name or pattern {pattern!r} in allow or preload: use "
                    "dotted names, '*' as a wildcard ('tasks', 'reports.*')"
                )
        if self.job_serializer not in ("pickle", "json"):
            raise ConfigurationError(
                f"invalid job_serializer {self.job_serializer!r}: use 'pickle' or 'json'"
            )
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        for name in (
            "ack_wait",
            "pull_expires",
            "heartbeat_interval",
            "ping_interval",
            "duplicate_window",
            "scheduler_lock_ttl",
            "scheduler_lock_renew_interval",
        ):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("shutdown_grace", "retry_window"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise ConfigurationError(f"{name} must not be negative")
        if not self.marker_ttl >= 1:  # the server refuses a Nats-TTL under a second
            raise ConfigurationError(f"marker_ttl must be at least 1 s, got {self.marker_ttl}")
        for name in ("max_jobs_per_child", "max_memory_per_child", "max_memory", "lookahead"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must not be negative")
        if not self.lookahead_wait > 0:
            raise ConfigurationError(f"lookahead_wait must be positive, got {self.lookahead_wait}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError(
                f"metrics_port must be 0 (off) to 65535, got {self.metrics_port}"
            )
        if self.max_deliver < 1 and self.max_deliver != -1:
            raise ConfigurationError("max_deliver must be positive, or -1 for no limit")
        if self.replicas not in (1, 3, 5):
            raise ConfigurationError(f"replicas must be 1, 3 or 5, got {self.replicas}")
        if self.max_ack_pending < 1 and self.max_ack_pending != -1:
            raise ConfigurationError("max_ack_pending must be positive, or -1 for no limit")
        if self.scheduler_lock_renew_interval >= self.scheduler_lock_ttl:
            raise ConfigurationError(
                "scheduler_lock_renew_interval must be shorter than scheduler_lock_ttl"
            )
        if self.result_ttl < 1:
            raise ConfigurationError("result_ttl (the default) must be at least 1 second")
        for name in (
            "max_stream_bytes",
            "max_stream_msgs",
            "max_bucket_bytes",
            "max_message_size",
            "max_result_ttl",
        ):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must not be negative (0: no limit)")
        signer_for(self.signing_key, self.signing_keys_previous)  # a bad key fails here

    def _check_connection(self) -> None:
        """Refuse auth and TLS settings that cannot work or are ambiguous, before any
        connection is tried: a missing file or a lone certificate would otherwise show up
        as an obscure TLS or auth failure, and two sets of credentials as a server
        silently picking one. Messages name the setting, never a secret's value."""
        for name in CONNECTION_FIELDS[1:-1]:
            if getattr(self, name) == "":  # an empty value means unset, as in from_env
                object.__setattr__(self, name, None)
        if isinstance(self.tls_handshake_first, str):
            parsed = parse_bool("tls_handshake_first", self.tls_handshake_first)
            object.__setattr__(self, "tls_handshake_first", parsed)
        for f in dataclasses.fields(self):
            path = getattr(self, f.name)
            if f.metadata.get("file") and path is not None:
                object.__setattr__(self, f.name, _readable_file(f.name, path))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigurationError(
                "tls_cert_file and tls_key_file go together: a client certificate needs its "
                "key, and a key its certificate"
            )
        if (self.user is None) != (self.password is None):
            raise ConfigurationError(
                "user and password go together: set both (NAQ_USER and NAQ_PASSWORD)"
            )
        if self.token is not None and self.user is not None:
            raise ConfigurationError("give a token or a user and password, not both")
        if self.nkey_file is not None and self.creds_file is not None:
            raise ConfigurationError(
                "give nkey_file or creds_file, not both: a creds file holds its own nkey seed"
            )
        if has_userinfo(self.url) and (self.user or self.password or self.token):
            raise ConfigurationError(
                "credentials in both nats_url and user/password/token: which one wins is "
                "ambiguous; give them in one place"
            )

    def __repr__(self) -> str:
        """The dataclass's repr without secrets: the ``repr=False`` fields (password,
        token) are left out, and a URL's password or token is masked."""
        shown = []
        for f in dataclasses.fields(self):
            if f.repr:
                value = getattr(self, f.name)
                if f.name == "nats_url" and value is not None:
                    value = self.redact(value)
                shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def url(self) -> str:
        """The URL to connect to: the configured one or the local default."""
        return self.nats_url or DEFAULT_NATS_URL

    @property
    def safe_url(self) -> str:
        """:attr:`url` with any password or token in it masked: the one to show."""
        return self.redact(self.url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold: the password, the token, and the
        passwords and tokens written into the URLs."""
        found = [self.password, self.token, self.dashboard_password, self.dashboard_token]
        for server in self.servers:
            try:
                parts = urlsplit(server if "://" in server else f"nats://{server}")
                # nats://user:password@ or nats://token@ (a lone user name is a token)
                found.append(parts.password if parts.password is not None else parts.username)
            except ValueError:  # unparseable: redact's URL pattern still masks it
                continue
        return tuple(s for s in found if s)

    def redact(self, text: str) -> str:
        """``text`` (a message, an error from nats-py) with every secret masked."""
        return redact(text, self.secrets)

    @property
    def uses_auth_or_tls(self) -> bool:
        """True if any credential or TLS setting is given: a real server is meant."""
        return any(getattr(self, name) for name in CONNECTION_FIELDS[1:])

    @property
    def connection_id(self) -> str:
        """What tells one connection from another: the URL and every auth and TLS
        setting, hashed so that a pool's key never holds a secret in plain text.
        Memoised: the module-level API looks its connection up on every call."""
        return _connection_id(self)

    @property
    def preload_modules(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.preload.split(",") if m.strip())

    @property
    def signer(self) -> Signer | None:
        """The job and result signer; None when no signing key is set."""
        return signer_for(self.signing_key, self.signing_keys_previous)

    @property
    def middleware_names(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.middleware.split(",") if m.strip())

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def allow_patterns(self) -> tuple[str, ...]:
        """The ``allow`` list: modules (or patterns) a json-mode supervisor runs."""
        return tuple(m.strip() for m in self.allow.split(",") if m.strip())

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``; ``None`` values are ignored (unset CLI flags)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``NAQ_*`` variables, then apply non-``None`` overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parse_size(value: str | int) -> int:
    """Bytes from ``512MiB``, ``2G``, ``300k`` or a plain number (powers of 1024 with
    ``i``, of 1000 without, as ``ps`` and container limits write them)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ConfigurationError(f"invalid size {value!r}: use e.g. 512MiB, 2G or 1000000")
    number, unit = float(match.group(1)), match.group(2).lower()
    base = 1024 if unit.endswith(("ib", "i")) else 1000
    power = " kmgt".index(unit[0]) if unit and unit[0] in "kmgt" else 0
    return int(number * base**power)


def parse_bool(name: str, value: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); anything else is an error
    rather than a silent False."""
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigurationError(
        f"{name}={value!r} is not a valid bool: use 1, true, yes, on or 0, false, no, off"
    )


def _readable_file(name: str, path: str) -> str:
    """``path`` (``~`` expanded) if it names a readable file; else which setting is wrong.

    Only the path is shown: a file's name is not a secret, its content may be."""
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        raise ConfigurationError(f"{name}: no such file {path!r}")
    if not os.path.isfile(full):
        raise ConfigurationError(f"{name}: {path!r} is not a file")
    if not os.access(full, os.R_OK):
        raise ConfigurationError(f"{name}: file {path!r} is not readable")
    return full


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = str(f.type)
    if f.metadata.get("size"):
        return raw
    if kind == "bool":
        return parse_bool(env_name(f.name), raw)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"{env_name(f.name)}={raw!r} is not a valid {kind}") from None
    return raw


_ENV_NAMES = tuple(env_name(f.name) for f in dataclasses.fields(Settings))


@functools.lru_cache(maxsize=256)
def _connection_id(settings: Settings) -> str:
    values = [settings.url, *(getattr(settings, name) for name in CONNECTION_FIELDS[1:])]
    # A client signs what it writes with its settings' key: the keys part it too.
    values += [settings.signing_key, settings.signing_keys_previous]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()
