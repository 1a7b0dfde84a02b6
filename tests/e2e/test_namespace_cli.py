"""Bad namespace and queue names on the command line: exit 2 and one clear line.

Whoever types ``naq-supervise -n a.b`` (or has ``NAQ_NAMESPACE=a.b`` in a container's
environment) must read which value is wrong and what is allowed, not a traceback or a
server error after a connection was made. Every command is run once, all at the same
time, so the file costs about one process start-up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from naq.transport.server import EmbeddedServer
from tests.conftest import subprocess_env
from tests.e2e.conftest import NAQ, NAQ_SUPERVISE, Proc

pytestmark = pytest.mark.e2e

CLEAN = f"t{uuid.uuid4().hex[:10]}"
"""A good namespace that only the bad-queue commands name: refused before they connect,
they must leave nothing of it on the server."""


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    kind: str
    """Which name is bad: "namespace" or "queue"."""
    value: str
    env: tuple[tuple[str, str], ...] = ()


CASES = {
    "supervise -n a.b": Case((NAQ_SUPERVISE, "-n", "a.b"), "namespace", "a.b"),
    "supervise NAQ_NAMESPACE=a.b": Case(
        (NAQ_SUPERVISE,), "namespace", "a.b", (("NAQ_NAMESPACE", "a.b"),)
    ),
    "supervise -n 'a\\n'": Case((NAQ_SUPERVISE, "-n", "a\n"), "namespace", "a\n"),
    "supervise --namespace <241 chars>": Case(
        (NAQ_SUPERVISE, "--namespace", "n" * 241), "namespace", "n" * 241
    ),
    "supervise bad.name": Case((NAQ_SUPERVISE, "-n", CLEAN, "bad.name"), "queue", "bad.name"),
    "supervise ''": Case((NAQ_SUPERVISE, "-n", CLEAN, ""), "queue", ""),
    "supervise --default-queue 'q*'": Case(
        (NAQ_SUPERVISE, "-n", CLEAN, "--default-queue", "q*"), "queue", "q*"
    ),
    "worker -n 'a b'": Case((NAQ, "worker", "-n", "a b"), "namespace", "a b"),
    "worker 'a>'": Case((NAQ, "worker", "-n", CLEAN, "a>"), "queue", "a>"),
    "workers -n 'a b'": Case((NAQ, "workers", "-n", "a b"), "namespace", "a b"),
    "workers NAQ_NAMESPACE=a.b": Case(
        (NAQ, "workers"), "namespace", "a.b", (("NAQ_NAMESPACE", "a.b"),)
    ),
    "purge bad.name": Case((NAQ, "purge", "-n", CLEAN, "bad.name"), "queue", "bad.name"),
    "purge ''": Case((NAQ, "purge", "-n", CLEAN, ""), "queue", ""),
    "scheduler -n 'a>'": Case((NAQ, "scheduler", "-n", "a>"), "namespace", "a>"),
    "list-scheduled -n a.b": Case((NAQ, "list-scheduled", "-n", "a.b"), "namespace", "a.b"),
    "failed list -n 'a*'": Case((NAQ, "failed", "list", "-n", "a*"), "namespace", "a*"),
    "failed list -q bad.name": Case(
        (NAQ, "failed", "list", "-n", CLEAN, "-q", "bad.name"), "queue", "bad.name"
    ),
}


@pytest.fixture(scope="module")
def finished(nats_server: EmbeddedServer) -> Iterator[dict[str, tuple[int, Proc]]]:
    """Every case's exit code and output. ``NAQ_NATS_URL`` is the session server in
    all of them, so none that got past its check could start a server on port 4222."""
    procs = {
        name: Proc(list(case.args), subprocess_env(NAQ_NATS_URL=nats_server.url, **dict(case.env)))
        for name, case in CASES.items()
    }
    try:
        yield {name: (proc.wait_exit(30), proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()


@pytest.mark.parametrize("name", CASES)
def test_a_bad_name_is_a_usage_error_naming_it(
    name: str, finished: dict[str, tuple[int, Proc]]
) -> None:
    case = CASES[name]
    code, proc = finished[name]
    stderr = "\n".join(proc.lines["stderr"])
    assert code == 2, proc.output()
    assert f"invalid {case.kind} name {case.value!r}" in stderr, proc.output()
    assert "use letters, digits, '_' and '-' only" in stderr, proc.output()
    assert "Traceback" not in stderr, proc.output()
    assert proc.lines["stdout"] == [], proc.output()


async def test_a_refused_queue_name_leaves_nothing_on_the_server(
    finished: dict[str, tuple[int, Proc]], nc: Any
) -> None:
    """The bad-queue commands named a good namespace: had any connected before its
    check, it would have declared that namespace's streams."""
    js = nc.jetstream()
    names: list[str] = []
    while page := await js.streams_info(offset=len(names)):
        names += [info.config.name for info in page]
    assert [n for n in names if CLEAN in n] == []
