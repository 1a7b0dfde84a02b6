"""The build's npm-free fetch of the dashboard's front-end files (``hatch_build.py``).

Where there is no npm (an image's build stage), the pinned tarballs come from the
registry directly; like ``npm ci``, a tarball whose hash is not the lockfile's is
refused. A registry on 127.0.0.1 stands in for npmjs.org.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))  # the build hook lives at the repository root
import hatch_build

FILES = {"htmx.min.js": b"/* htmx */", "sse.js": b"/* sse */"}


def tarball(member: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


TARBALLS = {
    "/htmx.org/-/htmx.org-2.0.11.tgz": tarball("package/dist/htmx.min.js", FILES["htmx.min.js"]),
    "/htmx-ext-sse/-/htmx-ext-sse-2.2.4.tgz": tarball("package/dist/sse.js", FILES["sse.js"]),
}


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = TARBALLS.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", url)
    try:
        yield url
    finally:
        server.shutdown()
        thread.join()


def lockfile(tmp_path: Path, tamper: bool = False) -> Path:
    htmx = TARBALLS["/htmx.org/-/htmx.org-2.0.11.tgz"]
    sse = TARBALLS["/htmx-ext-sse/-/htmx-ext-sse-2.2.4.tgz"]
    packages = {
        "node_modules/htmx.org": {"version": "2.0.11", "integrity": integrity(htmx)},
        "node_modules/htmx-ext-sse": {
            "version": "2.2.4",
            "integrity": integrity(sse + b"tampered" if tamper else sse),
        },
    }
    path = tmp_path / "package-lock.json"
    path.write_text(json.dumps({"packages": packages}))
    return path


def test_the_locked_tarballs_give_the_files_the_dashboard_uses(
    registry: str, tmp_path: Path
) -> None:
    vendor = tmp_path / "vendor"
    hatch_build.fetch_from_registry(lockfile(tmp_path), vendor)
    assert {p.name: p.read_bytes() for p in vendor.iterdir()} == FILES


def test_a_tarball_whose_hash_is_not_the_lockfiles_is_refused(
    registry: str, tmp_path: Path
) -> None:
    with pytest.raises(OSError, match="is not the lockfile's"):
        hatch_build.fetch_from_registry(lockfile(tmp_path, tamper=True), tmp_path / "vendor")
    assert not (tmp_path / "vendor" / "sse.js").exists()


def test_the_repositorys_lockfile_pins_every_file_by_hash() -> None:
    lock = json.loads((ROOT / hatch_build.ASSETS / "package-lock.json").read_text())
    for source in hatch_build.FILES.values():
        locked = lock["packages"][source.split("/dist/")[0]]
        assert locked["integrity"].startswith("sha512-")
