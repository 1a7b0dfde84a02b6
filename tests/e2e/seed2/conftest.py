"""The second seed's examples name ``localhost:4222``, so this package's tests get an
embedded server there (and only for as long as they run: other tests need 4222 free).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from naq.transport.server import EmbeddedServer, port_in_use

SEED_PORT = 4222


@pytest.fixture(scope="package", autouse=True)
def server_on_4222(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    if port_in_use(SEED_PORT):
        pytest.fail(
            "127.0.0.1:4222 is in use by another program: the NASQueue README examples "
            "connect to localhost:4222 as written; stop that program and rerun"
        )
    server = EmbeddedServer(SEED_PORT, tmp_path_factory.mktemp("seed2"))
    server.start()
    yield server
    server.stop()
