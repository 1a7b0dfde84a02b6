"""A password never shows: not in logs, errors, reprs, CLI output, heartbeats or ``ps``.

A real nats-server has a user whose password is a distinctive random string; naq is
driven every way it can show a URL or an error (a supervisor's and a scheduler's life,
failed connections, reprs, the CLI, the heartbeat record), and the password is looked
for in everything that came out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import socket
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from naq import NASQueue, Queue
from naq.errors import NaqConnectionError
from naq.executors.registry import load_executor
from naq.scheduler import Scheduler
from naq.settings import Settings
from naq.supervisor import Supervisor
from naq.transport.connect import connect
from naq.transport.names import Layout
from naq.transport.server import free_port
from tests import jobs
from tests.conftest import first_json, run_until_ready, stop_all, subprocess_env
from tests.e2e.conftest import NAQ, NAQ_SUPERVISE, READY, Proc
from tests.natsauth import configured_server, quoted

PASSWORD = "pw" + secrets.token_hex(16)
WRONG = "wrong" + secrets.token_hex(16)
TOKEN = "tok" + secrets.token_hex(16)
NEVER_SHOWN = (PASSWORD, WRONG, TOKEN)


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server where alice's password is ``PASSWORD``."""
    config = f"authorization {{ users = [ {{user: alice, password: {quoted(PASSWORD)}}} ] }}\n"
    with configured_server(tmp_path_factory.mktemp("secrets"), config) as port:
        yield port


def url(port: int, password: str = PASSWORD) -> str:
    return f"nats://alice:{password}@127.0.0.1:{port}"


class Everything(logging.Handler):
    """Every log record of every logger, formatted with its traceback if it has one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Everything]:
    caplog.set_level(logging.DEBUG)
    handler = Everything()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.lines.extend(caplog.text.splitlines())


def assert_hidden(*texts: str) -> None:
    for text in texts:
        for secret in NEVER_SHOWN:
            assert secret not in text, f"a secret in: {text[:2000]}"


async def test_supervisor_and_scheduler_logs_and_the_heartbeat(
    port: int, namespace: str, logs: Everything
) -> None:
    settings = Settings(
        nats_url=url(port), namespace=namespace, heartbeat_interval=0.5, pull_expires=2.0
    )
    supervisor = Supervisor(settings, load_executor("asyncio")(2, settings), ["default"])
    scheduler = Scheduler(settings)
    running = [(supervisor, await run_until_ready(supervisor))]
    scheduler_task = asyncio.create_task(scheduler.run())
    try:
        async with Queue(settings=settings) as queue:
            assert_hidden(repr(queue))
            assert "alice:***@" in repr(queue)
            job = await queue.enqueue(jobs.add, 1, 2)
            assert await queue.fetch_result(job.job_id, timeout=20) == 3
        await asyncio.wait_for(scheduler.ready.wait(), 20)
        nc = await nats.connect(url(port))
        try:
            kv = await nc.jetstream().key_value(Layout(namespace).workers_bucket)
            record = await first_json(kv, supervisor.worker_id, lambda r: True, 10)
        finally:
            await nc.close()
        assert record is not None
        shown = json.dumps(record)
        assert_hidden(shown)
        assert "alice" not in shown
        assert "nats://" not in shown
    finally:
        scheduler.request_stop()
        await stop_all(running)
        assert await asyncio.wait_for(scheduler_task, 15) == 0
    assert running[0][1].result() == 0
    started = [line for line in logs.lines if f"namespace {namespace}" in line]
    assert started
    assert "nats://alice:***@127.0.0.1" in started[0]
    assert_hidden(*logs.lines)


async def test_failed_connections_say_why_without_the_secret(
    port: int, namespace: str, logs: Everything
) -> None:
    failures = [
        Settings(nats_url=url(port, WRONG), namespace=namespace),
        Settings(nats_url=f"nats://127.0.0.1:{port}", user="alice", password=WRONG),
        Settings(nats_url=url(free_port()), namespace=namespace),  # nothing listens
        Settings(nats_url=f"nats://{TOKEN}@127.0.0.1:{free_port()}"),
    ]
    for settings in failures:
        with pytest.raises(NaqConnectionError) as caught:
            await connect(settings)
        assert str(caught.value).startswith("cannot connect to NATS at nats://")
        assert_hidden(str(caught.value), "".join(traceback.format_exception(caught.value)))
    assert any("Authorization Violation" in line for line in logs.lines)
    assert_hidden(*logs.lines)


async def test_reprs_and_nasqueue(port: int, namespace: str, logs: Everything) -> None:
    settings = Settings(nats_url=url(port), namespace=namespace)
    by_keyword = NASQueue("127.0.0.1", port, namespace, user="alice", password=PASSWORD)
    in_host = NASQueue(url(port), port, namespace)  # a host that is a URL is used whole
    wrong = NASQueue("127.0.0.1", port, namespace, user="alice", password=WRONG)
    nowhere = NASQueue(url(free_port()), 4222, namespace)
    shown = [repr(settings), str(settings), repr(Queue(settings=settings))]
    shown += [repr(q) for q in (by_keyword, in_host, wrong, nowhere)]
    assert_hidden(*shown)
    assert "nats://alice:***@127.0.0.1" in repr(in_host)
    try:
        for queue in (by_keyword, in_host):  # the keywords and the URL both connect
            assert await queue.connect(), queue.connect_error
        await by_keyword.subscribe_and_queue("greetings")
        await in_host.push("greetings", "hello")
        message = await by_keyword.pop(timeout=5)
        assert message is not None
        assert message["message"] == b"hello"
        for queue in (wrong, nowhere):
            assert not await queue.connect()
            assert queue.connect_error
            assert_hidden(queue.connect_error)
        with pytest.raises(NaqConnectionError) as caught:
            async with nowhere:
                pass
        assert_hidden(str(caught.value), "".join(traceback.format_exception(caught.value)))
    finally:
        for queue in (by_keyword, in_host, wrong, nowhere):
            await queue.disconnect()
    assert_hidden(*logs.lines)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*args], env=subprocess_env(**env), capture_output=True, text=True, timeout=60
    )


@pytest.mark.e2e
async def test_cli_output_with_the_password_in_the_environment(
    port: int, namespace: str, tmp_path: Path
) -> None:
    env = {
        "NAQ_NATS_URL": url(port),
        "NAQ_NAMESPACE": namespace,
        "NAQ_LOG_LEVEL": "DEBUG",
        "NAQ_HEARTBEAT_INTERVAL": "0.5",
    }
    supervisor = Proc([NAQ_SUPERVISE, "default"], subprocess_env(**env), cwd=tmp_path)
    try:
        await supervisor.line(READY, timeout=30)
        cmdline = Path(f"/proc/{supervisor.pid}/cmdline").read_bytes().decode(errors="replace")
        outputs = [
            await asyncio.to_thread(run_cli, NAQ, "workers", **env),
            await asyncio.to_thread(run_cli, NAQ, "workers", "--json", **env),
            await asyncio.to_thread(run_cli, NAQ, "info", **env),
            await asyncio.to_thread(run_cli, NAQ, "info", "--json", **env),
        ]
        for done in outputs:
            assert done.returncode == 0, done.stderr
        assert "1 live worker" in outputs[2].stdout
        failed = await asyncio.to_thread(
            run_cli, NAQ, "info", **{**env, "NAQ_NATS_URL": url(port, WRONG)}
        )
        assert failed.returncode == 3
        assert "Authorization Violation" in failed.stderr
        supervisor.send(signal.SIGTERM)
        assert await supervisor.exit_code(30) == 0
    finally:
        supervisor.kill()
    assert "alice:***@" in supervisor.output()
    assert_hidden(
        cmdline,
        supervisor.output(),
        *(done.stdout + done.stderr for done in [*outputs, failed]),
    )


@pytest.mark.e2e
@pytest.mark.parametrize("command", [[NAQ_SUPERVISE], [NAQ, "workers"], [NAQ, "info"]])
def test_a_password_on_the_command_line_is_refused_before_connecting(
    command: list[str],
) -> None:
    """From ``NAQ_NATS_URL`` the same URL is accepted: the CLI test above uses it."""
    with socket.socket() as listener:  # a server that would see any connection attempt
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        target = url(listener.getsockname()[1])
        done = run_cli(*command, "--nats-url", target)
        assert done.returncode == 2, done.stderr
        assert "NAQ_NATS_URL" in done.stderr
        assert "NAQ_PASSWORD" in done.stderr
        assert_hidden(done.stdout, done.stderr)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing tried to connect
