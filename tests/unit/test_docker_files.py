"""The deployment files agree with naq: the compose file's NATS configs are the cluster
layout naq's tests run, and every stop timeout leaves the drain its time."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

from naq.settings import Settings
from naq.supervisor.signals import STOP_MARGIN

ROOT = Path(__file__).resolve().parents[2]


def test_the_compose_nats_configs_are_written_from_naqs_cluster_layout() -> None:
    script = runpy.run_path(str(ROOT / "scripts" / "compose-nats-configs"))
    configs: dict[Path, str] = script["configs"]()
    assert len(configs) == 3
    compose = (ROOT / "docker" / "compose.yaml").read_text()
    for i, (path, text) in enumerate(sorted(configs.items()), start=1):
        assert path.read_text() == text, f"{path} drifted: run scripts/compose-nats-configs"
        assert f"nats-route://nats{i}:6222" in text
        assert f"  nats{i}:\n" in compose
        assert f'"-c", "/etc/nats/n{i}.conf"' in compose
        assert "sync_interval: always" in text


def seconds(pattern: str, text: str) -> float:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, pattern
    return float(found[1])


def test_every_stop_timeout_outlasts_the_drain() -> None:
    default = Settings().shutdown_grace
    compose = (ROOT / "docker" / "compose.yaml").read_text()
    assert seconds(r"stop_grace_period: (\d+)s", compose) > default + STOP_MARGIN

    kube = (ROOT / "deploy" / "kubernetes.yaml").read_text()
    grace = seconds(r'NAQ_SHUTDOWN_GRACE: "(\d+)"', kube)
    supervisor = kube.split("name: naq-supervisor", 1)[1].split("---", 1)[0]
    assert seconds(r"terminationGracePeriodSeconds: (\d+)", supervisor) > grace + STOP_MARGIN

    unit = (ROOT / "deploy" / "naq-supervisor.service").read_text()
    grace = seconds(r"^Environment=NAQ_SHUTDOWN_GRACE=(\d+)", unit)
    assert seconds(r"^TimeoutStopSec=(\d+)", unit) > grace + STOP_MARGIN
    assert re.search(r"^KillMode=mixed$", unit, re.MULTILINE), "SIGTERM to the supervisor alone"
