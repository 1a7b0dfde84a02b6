"""The build step that puts the dashboard's front-end files into the package.

The files (htmx and its SSE extension) come from the npm registry, pinned in
``naq/dashboard/assets/package-lock.json`` and fetched with ``npm ci``: the wheel
carries them, so the dashboard needs no CDN and works offline. They are not kept in
git. Where there is no npm (a container's build stage), the same pinned tarballs are
fetched from the registry directly and checked against the lockfile's ``integrity``
hashes, as ``npm ci`` would. A build that can reach neither still succeeds (naq's
core needs no front end); ``naq dashboard`` then refuses to start, naming the
missing files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ASSETS = Path("naq/dashboard/assets")
VENDOR = Path("naq/dashboard/static/vendor")
FILES = {
    "htmx.min.js": "node_modules/htmx.org/dist/htmx.min.js",
    "sse.js": "node_modules/htmx-ext-sse/dist/sse.js",
}


def fetch_assets(root: Path) -> bool:
    """Run ``npm ci`` and copy the files; False (with a warning) when npm is missing."""
    vendor, assets = root / VENDOR, root / ASSETS
    lock = assets / "package-lock.json"
    stamp = vendor / ".lock"
    present = all((vendor / name).is_file() for name in FILES)
    if present and stamp.is_file() and stamp.read_bytes() == lock.read_bytes():
        return True
    npm = shutil.which("npm")
    if npm is None:
        if present:  # an sdist carries them: build its wheel without npm
            return True
        try:
            fetch_from_registry(lock, vendor)
        except OSError as exc:  # no network, no registry: the core builds all the same
            print(
                f"naq build: npm not found and the registry not reachable ({exc}); "
                "the dashboard's assets are left out",
                file=sys.stderr,
            )
            return False
        stamp.write_bytes(lock.read_bytes())
        return True
    subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=assets, check=True
    )
    vendor.mkdir(parents=True, exist_ok=True)
    for name, source in FILES.items():
        shutil.copyfile(assets / source, vendor / name)
    stamp.write_bytes(lock.read_bytes())
    return True


def fetch_from_registry(lock: Path, vendor: Path) -> None:
    """``npm ci`` without npm: each locked package's tarball from the registry
    (``NPM_CONFIG_REGISTRY``, else npmjs.org), refused unless its sha512 is the
    lockfile's, then the files the dashboard uses taken out of it. TLS trusts
    ``PIP_CERT`` or ``SSL_CERT_FILE`` when set (a proxy's CA in a container build)."""
    registry = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    context = ssl.create_default_context(cafile=cafile)
    packages = json.loads(lock.read_text())["packages"]
    vendor.mkdir(parents=True, exist_ok=True)
    for name, source in FILES.items():
        package = source.split("/dist/")[0]  # node_modules/<package>
        locked = packages[package]
        npm_name = package.removeprefix("node_modules/")
        url = f"{registry}/{npm_name}/-/{npm_name.split('/')[-1]}-{locked['version']}.tgz"
        with urllib.request.urlopen(url, timeout=60, context=context) as response:
            data = response.read()
        algorithm, _, expected = locked["integrity"].partition("-")
        actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
        if actual != expected:
            raise OSError(f"{url}: {algorithm} {actual} is not the lockfile's {expected}")
        member = "package/dist/" + source.split("/dist/")[1]
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            extracted = archive.extractfile(member)
            if extracted is None:
                raise OSError(f"{url}: no {member}")
            (vendor / name).write_bytes(extracted.read())


class AssetsHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if fetch_assets(Path(self.root)):
            build_data.setdefault("artifacts", []).extend(
                f"{VENDOR.as_posix()}/{name}" for name in FILES
            )


if __name__ == "__main__":  # `python hatch_build.py`: fetch them into a checkout
    sys.exit(0 if fetch_assets(Path(__file__).parent) else 1)
