"""Real nats-servers set up for each way naq authenticates, and what they need: nkeys,
operator/account/user JWTs and creds files, a CA with server and client certificates.

Everything is made offline in the test's ``tmp_path``: keys with the ``nkeys`` package,
certificates with ``trustme``, and JWTs by hand (a NATS JWT is base64url JSON signed
with the issuer's ed25519 nkey), so no ``nsc`` tool or network is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import trustme

from naq.transport.server import EmbeddedServer, free_port

NO_LIMIT = -1


@contextmanager
def configured_server(tmp_path: Path, config: str, name: str = "nats") -> Iterator[int]:
    """A nats-server with JetStream on 127.0.0.1 running ``config``; yields its port.

    The config file gives auth and TLS; the listen address, port and store dir come
    from the command line (``EmbeddedServer``), which the server lets win.
    """
    conf = tmp_path / f"{name}.conf"
    conf.write_text(config)
    port = free_port()
    server = EmbeddedServer(port, tmp_path / f"{name}-store", extra_args=["-c", str(conf)])
    server.start()
    try:
        yield port
    finally:
        server.stop()


def quoted(value: str | Path) -> str:
    """A value for a nats-server config file (paths and secrets in double quotes)."""
    return json.dumps(str(value))


@dataclass(frozen=True)
class NKey:
    seed: str
    public: str

    def write_seed(self, path: Path) -> str:
        path.write_text(self.seed + "\n")
        return str(path)


def new_nkey(prefix: int = nkeys.PREFIX_BYTE_USER) -> NKey:
    """A fresh nkey of the role ``prefix`` (user, account, operator)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return NKey(seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS v2 JWT: ``header.claims.signature``, base64url without padding, signed
    with the issuer's ed25519 key over the first two parts."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()  # a unique id
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = nkeys.from_seed(bytearray(issuer.seed.encode())).sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}"


@dataclass(frozen=True)
class Operator:
    """An operator, one account with JetStream, and a way to make its users; plus the
    system account, without which the server does not start JetStream."""

    operator: NKey
    account: NKey
    system: NKey
    operator_jwt: str
    account_jwt: str
    system_jwt: str

    def server_config(self) -> str:
        return (
            f"operator: {self.operator_jwt}\n"
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {self.account.public}: {self.account_jwt}\n"
            f"  {self.system.public}: {self.system_jwt}\n"
            "}\n"
        )

    def user_creds(self, path: Path, name: str = "naq") -> str:
        """A creds file for a new user of the account: its JWT and its nkey seed."""
        user = new_nkey()
        user_jwt = encode_jwt(
            self.account,
            user.public,
            name,
            {"type": "user", "pub": {}, "sub": {}, "subs": NO_LIMIT, "data": NO_LIMIT,
             "payload": NO_LIMIT},
        )  # fmt: skip
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed}\n"
            "------END USER NKEY SEED------\n"
        )
        return str(path)


def new_operator() -> Operator:
    """An operator and an account whose limits let it use JetStream (a JWT account has
    none unless its claims grant them)."""
    operator = new_nkey(nkeys.PREFIX_BYTE_OPERATOR)
    account = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    system = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    limited = ("subs", "data", "payload", "imports", "exports", "conn", "leaf")
    jetstream = ("mem_storage", "disk_storage", "streams", "consumer")
    limits = {name: NO_LIMIT for name in (*limited, *jetstream)}
    return Operator(
        operator,
        account,
        system,
        encode_jwt(
            operator,
            operator.public,
            "naq-test",
            {"type": "operator", "system_account": system.public},
        ),
        encode_jwt(
            operator,
            account.public,
            "naq",
            {"type": "account", "limits": {**limits, "wildcards": True}},
        ),
        encode_jwt(operator, system.public, "SYS", {"type": "account"}),
    )


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate for ``names``, and a client certificate, as files."""

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def certificates(folder: Path, *names: str) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
    client = ca.issue_cert("naq-client.example")
    paths = {
        "ca_file": ca.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    written = {}
    for name, blob in paths.items():
        path = folder / f"{name}.pem"
        blob.write_to_path(str(path))
        written[name] = str(path)
    return Certificates(**written)


def tls_block(certs: Certificates, *extra: str) -> str:
    """The server's ``tls { }`` block with its certificate and key, and ``extra`` lines."""
    lines = [
        f"cert_file: {quoted(certs.server_cert)}",
        f"key_file: {quoted(certs.server_key)}",
        f"ca_file: {quoted(certs.ca_file)}",
        *extra,
    ]
    return "tls {\n  " + "\n  ".join(lines) + "\n}\n"
