"""The build step that puts the dashboard's front-end files into the package.

The files (htmx and its SSE extension) come from the npm registry, pinned in
``naq/dashboard/assets/package-lock.json`` and fetched with ``npm ci``: the wheel
carries them, so the dashboard needs no CDN and works offline. They are not kept in
git. A build on a machine without npm still succeeds (naq's core needs no
front-end); ``naq dashboard`` then refuses to start, naming the missing files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
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
        print("naq build: npm not found; the dashboard's assets are left out", file=sys.stderr)
        return False
    subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=assets, check=True
    )
    vendor.mkdir(parents=True, exist_ok=True)
    for name, source in FILES.items():
        shutil.copyfile(assets / source, vendor / name)
    stamp.write_bytes(lock.read_bytes())
    return True


class AssetsHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if fetch_assets(Path(self.root)):
            build_data.setdefault("artifacts", []).extend(
                f"{VENDOR.as_posix()}/{name}" for name in FILES
            )


if __name__ == "__main__":  # `python hatch_build.py`: fetch them into a checkout
    sys.exit(0 if fetch_assets(Path(__file__).parent) else 1)
