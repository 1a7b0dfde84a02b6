"""Every way naq connects, each against a real nats-server configured for it.

For each method a producer enqueues through ``Queue(settings=...)``, a supervisor runs
the job and the result comes back; then one wrong credential must fail with a
``NaqConnectionError`` that says why. Settings come from a ``NAQ_*`` mapping, as a
container would give them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from naq import Queue
from naq.errors import NaqConnectionError
from naq.executors.registry import load_executor
from naq.settings import Settings
from naq.supervisor import Supervisor
from naq.transport.connect import connect
from naq.transport.pool import acquire, release
from naq.transport.server import free_port
from tests import jobs
from tests.conftest import run_until_ready, stop_all
from tests.natsauth import (
    certificates,
    configured_server,
    new_nkey,
    new_operator,
    quoted,
    tls_block,
)

PASSWORD = secrets.token_hex(12)
TOKEN = secrets.token_hex(12)
AUTH_VIOLATION = "Authorization Violation"
BAD_CERTIFICATE = "CERTIFICATE_VERIFY_FAILED"
USERS = (
    "authorization { users = [ "
    f'{{user: alice, password: {quoted(PASSWORD)}}}, {{user: bob, password: "bobs-pw"}}'
    " ] }\n"
)


@dataclass
class Case:
    """A server config, the ``NAQ_*`` environment of a client it accepts, the same
    with one wrong credential, and what the refusal says. ``{port}`` in a value is the
    server's port."""

    config: str
    good: dict[str, str]
    bad: dict[str, str]
    refused: str
    dead_port: int = field(default_factory=free_port)

    def env(self, which: dict[str, str], port: int) -> dict[str, str]:
        return {k: v.format(port=port, dead=self.dead_port) for k, v in which.items()}


PLAIN = "nats://127.0.0.1:{port}"
TLS = "tls://127.0.0.1:{port}"


def password_in_url(tmp: Path) -> Case:
    return Case(
        USERS,
        {"NAQ_NATS_URL": f"nats://alice:{PASSWORD}@127.0.0.1:{{port}}"},
        {"NAQ_NATS_URL": "nats://alice:wrong@127.0.0.1:{port}"},
        AUTH_VIOLATION,
    )


def user_and_password(tmp: Path) -> Case:
    good = {"NAQ_NATS_URL": PLAIN, "NAQ_USER": "alice", "NAQ_PASSWORD": PASSWORD}
    return Case(USERS, good, {**good, "NAQ_PASSWORD": "wrong"}, AUTH_VIOLATION)


def token(tmp: Path) -> Case:
    good = {"NAQ_NATS_URL": PLAIN, "NAQ_TOKEN": TOKEN}
    config = f"authorization {{ token: {quoted(TOKEN)} }}\n"
    return Case(config, good, {**good, "NAQ_TOKEN": "wrong"}, AUTH_VIOLATION)


def token_in_url(tmp: Path) -> Case:
    return Case(
        f"authorization {{ token: {quoted(TOKEN)} }}\n",
        {"NAQ_NATS_URL": f"nats://{TOKEN}@127.0.0.1:{{port}}"},
        {"NAQ_NATS_URL": "nats://wrong@127.0.0.1:{port}"},
        AUTH_VIOLATION,
    )


def nkey(tmp: Path) -> Case:
    user, stranger = new_nkey(), new_nkey()
    config = f"authorization {{ users = [ {{nkey: {user.public}}} ] }}\n"
    good = {"NAQ_NATS_URL": PLAIN, "NAQ_NKEY_FILE": user.write_seed(tmp / "user.nk")}
    bad = {**good, "NAQ_NKEY_FILE": stranger.write_seed(tmp / "stranger.nk")}
    return Case(config, good, bad, AUTH_VIOLATION)


def creds(tmp: Path) -> Case:
    operator, other = new_operator(), new_operator()
    good = {"NAQ_NATS_URL": PLAIN, "NAQ_CREDS_FILE": operator.user_creds(tmp / "user.creds")}
    bad = {**good, "NAQ_CREDS_FILE": other.user_creds(tmp / "stranger.creds")}
    return Case(operator.server_config(), good, bad, AUTH_VIOLATION)


def trusting(ca: str, **more: str) -> dict[str, str]:
    """A TLS client's environment: the URL, the CA it trusts, and ``more``."""
    return {"NAQ_NATS_URL": TLS, "NAQ_TLS_CA_FILE": ca, **more}


def tls(tmp: Path) -> Case:
    certs, other = certificates(tmp / "certs"), certificates(tmp / "other")
    return Case(tls_block(certs), trusting(certs.ca_file), trusting(other.ca_file), BAD_CERTIFICATE)


def mutual_tls(tmp: Path) -> Case:
    certs, other = certificates(tmp / "certs"), certificates(tmp / "other")
    good, bad = (
        trusting(certs.ca_file, NAQ_TLS_CERT_FILE=c.client_cert, NAQ_TLS_KEY_FILE=c.client_key)
        for c in (certs, other)
    )
    # The server refuses the certificate with an alert, or closes the connection
    # first, which the client sees as a reset or, mid-write, a broken pipe; each ends
    # the connect (seen on a loaded machine with Python 3.12 and 3.13).
    refused = "TLSV1_ALERT_UNKNOWN_CA|Connection reset by peer|Broken pipe"
    return Case(tls_block(certs, "verify: true"), good, bad, refused)


def tls_hostname(tmp: Path) -> Case:
    certs = certificates(tmp / "certs", "nats.internal")  # not 127.0.0.1
    good = trusting(certs.ca_file, NAQ_TLS_HOSTNAME="nats.internal")
    bad = trusting(certs.ca_file)  # by address only: the certificate does not name it
    return Case(tls_block(certs), good, bad, BAD_CERTIFICATE)


def tls_handshake_first(tmp: Path) -> Case:
    certs, other = certificates(tmp / "certs"), certificates(tmp / "other")
    good, bad = (trusting(c.ca_file, NAQ_TLS_HANDSHAKE_FIRST="true") for c in (certs, other))
    return Case(tls_block(certs, "handshake_first: true"), good, bad, BAD_CERTIFICATE)


def several_urls(tmp: Path) -> Case:
    good = {
        "NAQ_NATS_URL": "nats://127.0.0.1:{dead}, nats://127.0.0.1:{port}",
        "NAQ_USER": "alice",
        "NAQ_PASSWORD": PASSWORD,
    }
    return Case(USERS, good, {**good, "NAQ_PASSWORD": "wrong"}, AUTH_VIOLATION)


CASES: list[Callable[[Path], Case]] = [
    password_in_url,
    user_and_password,
    token,
    token_in_url,
    nkey,
    creds,
    tls,
    mutual_tls,
    tls_hostname,
    tls_handshake_first,
    several_urls,
]


def client_settings(env: dict[str, str], namespace: str) -> Settings:
    return Settings.from_env(
        env, namespace=namespace, heartbeat_interval=1.0, pull_expires=2.0, shutdown_grace=5.0
    )


@pytest.mark.parametrize("make_case", CASES, ids=[c.__name__ for c in CASES])
async def test_a_job_runs_and_a_wrong_credential_is_refused(
    make_case: Callable[[Path], Case], tmp_path: Path, namespace: str
) -> None:
    case = make_case(tmp_path)
    with configured_server(tmp_path, case.config) as port:
        settings = client_settings(case.env(case.good, port), namespace)
        supervisor = Supervisor(settings, load_executor("asyncio")(2, settings), ["default"])
        running = [(supervisor, await run_until_ready(supervisor))]
        try:
            async with Queue(settings=settings) as queue:
                job = await queue.enqueue(jobs.add, 2, 3)
                assert await queue.fetch_result(job.job_id, timeout=20) == 5
        finally:
            await stop_all(running)
        assert running[0][1].result() == 0

        wrong = client_settings(case.env(case.bad, port), namespace)
        with pytest.raises(NaqConnectionError, match=case.refused) as refused:
            await connect(wrong)
        assert str(refused.value).startswith("cannot connect to NATS at ")


async def test_same_url_other_credentials_do_not_share_a_connection(
    tmp_path: Path, namespace: str
) -> None:
    with configured_server(tmp_path, USERS) as port:
        url = PLAIN.format(port=port)
        alice = Settings(nats_url=url, user="alice", password=PASSWORD, namespace=namespace)
        bob = Settings(nats_url=url, user="bob", password="bobs-pw", namespace=namespace)
        first = await acquire(alice)
        try:
            again = await acquire(alice.replace(namespace="other"))
            assert again is first  # the same identity shares
            await release(again)
            other = await acquire(bob)
            assert other is not first
            await release(other)
            # A wrong password must be tried, not answered with alice's open client.
            with pytest.raises(NaqConnectionError, match=AUTH_VIOLATION):
                await acquire(alice.replace(password="wrong"))
        finally:
            await release(first)
        assert first.nc.is_closed
