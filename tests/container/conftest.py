"""The image and the compose file, built and run for real with podman (``make container``).

``scripts/container-setup`` makes this machine able to: podman with runc, and a local
Debian base image (``NAQ_BASE_IMAGE``, default ``naq-base-trixie``) standing in for
``python:3.13-slim``, which no registry serves here. The image is built once per
session from ``docker/Dockerfile`` (podman's layer cache makes a rebuild of the same
tree quick). Containers run on the host's network, against nats-servers the tests
start on the host; the repository's ``tests`` folder is mounted at ``/app/tests`` so
the supervisor in the container imports the same job modules the test enqueues.
Every container a test starts is removed at its end, by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, subprocess_env
from tests.procs import Proc

BASE_IMAGE = os.environ.get("NAQ_BASE_IMAGE", "naq-base-trixie")
IMAGE = "localhost/naq-test:latest"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SETUP = "scripts/container-setup"


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` to its end, output captured; a failure shows it."""
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def build_args() -> list[str]:
    """The image's build on this machine: the local base, the CA bundle as a secret
    (pip's downloads pass a TLS-inspecting proxy here), Docker's format (OCI images
    drop HEALTHCHECK)."""
    secret = ["--secret", f"id=ca,src={CA_BUNDLE}"] if CA_BUNDLE.exists() else []
    return ["build", "--format", "docker", "--build-arg", f"BASE={BASE_IMAGE}", *secret]


@pytest.fixture(scope="session")
def base_image() -> str:
    """The local base image; ``scripts/container-setup`` makes it."""
    if shutil.which("podman") is None:
        pytest.fail(f"podman is not installed: run {SETUP} (make container does)")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        pytest.fail(f"no base image {BASE_IMAGE}: run {SETUP} (make container does)")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def image(base_image: str) -> str:
    """``docker/Dockerfile`` built from the repository root, as the README says."""
    podman(*build_args(), "-f", "docker/Dockerfile", "-t", IMAGE, str(ROOT), timeout=900)
    return IMAGE


RunContainer = Callable[..., tuple[str, Proc]]


@pytest.fixture
def run_container(image: str) -> Iterator[RunContainer]:
    """``podman run`` (attached: the process's output and exit code are the
    container's) on the host network; returns the container's name and its process.
    Every container started is removed at the end."""
    names: list[str] = []
    procs: list[Proc] = []

    def run(*args: str, env: dict[str, str], options: tuple[str, ...] = ()) -> tuple[str, Proc]:
        name = f"naq-test-{uuid.uuid4().hex[:10]}"
        names.append(name)
        flags = [f"--env={key}={value}" for key, value in env.items()]
        proc = Proc(
            [
                "podman", "run", "--name", name, "--network", "host",
                "--volume", f"{ROOT / 'tests'}:/app/tests:ro",
                *flags, *options, image, *args,
            ],
            subprocess_env(),
        )  # fmt: skip
        procs.append(proc)
        return name, proc

    yield run
    for name in names:
        podman("rm", "--force", "--time", "0", name, check=False)
    for proc in procs:
        proc.kill()
