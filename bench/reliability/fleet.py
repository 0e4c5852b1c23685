"""The processes of one reliability scenario, each its own OS process on loopback: nats-server (one node or a
three-node cluster), redis-server, the mock upstream, and every gateway service with its replicas, so that
any one of them can be killed, stopped or restarted on its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from llm_edge.launcher import NATS_MAX_PAYLOAD, free_port, nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS = 30.0


def _wait_port(port: int, seconds: float = READY_SECONDS) -> None:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:.0f}s")


def _ready(url: str, seconds: float = READY_SECONDS) -> None:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {seconds:.0f}s")


@dataclass
class Proc:
    """One process of the fleet, with what it takes to start it again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str | None = None
    ready_port: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def start(self) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115  (the child owns it)
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self) -> None:
        if self.ready_port is not None:
            _wait_port(self.ready_port)
        if self.ready_url is not None:
            _ready(self.ready_url)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait()

    def stop(self, grace: float = 20.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss_mib(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except (OSError, AssertionError):
            return None
        return None


@dataclass
class Shape:
    """What a scenario runs: replicas per service, NATS nodes, Redis, the upstream's pace."""

    ingress: int = 2
    cache: int = 2
    router: int = 2
    provider: int = 2
    nats_nodes: int = 1
    redis: bool = True
    upstream_latency_ms: float = 20.0
    chunk_interval_ms: float = 10.0
    max_in_flight: int | None = None  # the provider's admission cap (a JetStream work queue) when set


@dataclass
class Fleet:
    shape: Shape
    workdir: Path
    nats: list[Proc] = field(default_factory=list)
    redis: Proc | None = None
    upstream: Proc | None = None
    services: dict[str, list[Proc]] = field(default_factory=dict)
    upstream_port: int = 0
    redis_port: int = 0
    nats_ports: list[int] = field(default_factory=list)
    ingress_ports: list[int] = field(default_factory=list)

    # --- the parts ---

    def _nats_proc(self, index: int, cluster_ports: list[int]) -> Proc:
        port = self.nats_ports[index]
        store = self.workdir / f"nats-{index}"
        conf = self.workdir / "nats.conf"  # max_payload as every deployment sets it (deploy/nats/nats.conf)
        conf.write_text(f"max_payload: {NATS_MAX_PAYLOAD}\n")
        argv = [nats_server_binary(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store),
                "--name", f"n{index}", "--server_name", f"n{index}"]
        if len(cluster_ports) > 1:
            routes = ",".join(f"nats://127.0.0.1:{p}" for i, p in enumerate(cluster_ports) if i != index)
            argv += ["--cluster_name", "edge", "--cluster", f"nats://127.0.0.1:{cluster_ports[index]}",
                     "--routes", routes]
        return Proc(f"nats-{index}", argv, dict(os.environ), ready_port=port, log=self.workdir / f"nats-{index}.log")

    def config_text(self) -> str:
        cap = f", max_in_flight: {self.shape.max_in_flight}" if self.shape.max_in_flight else ""
        redis = f"  redis_url: redis://127.0.0.1:{self.redis_port}/0\n" if self.shape.redis else ""
        # In a cluster the admission queue is replicated on three nodes, so it survives the loss of one.
        replicas = f"jetstream_replicas: {min(3, self.shape.nats_nodes)}\n" if self.shape.nats_nodes > 1 else ""
        return (
            f"{replicas}"
            "providers:\n"
            f"  up: {{adapter: openai_compatible, base_url: 'http://127.0.0.1:{self.upstream_port}/v1', "
            f"api_key: sk-reliability, timeout_seconds: 10{cap}}}\n"
            "models:\n"
            "  - name: m\n"
            "    targets: [{provider: up, model: gpt-4o-mini}]\n"
            "cache:\n"
            f"{redis}"
            "ingress:\n"
            "  stream_idle_timeout_seconds: 15\n"
        )

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for old in self.workdir.glob("*.log"):  # a rerun's logs replace the last run's (a restarted process appends)
            old.unlink()
        shape = self.shape
        self.nats_ports = [free_port() for _ in range(shape.nats_nodes)]
        cluster_ports = [free_port() for _ in range(shape.nats_nodes)]
        self.nats = [self._nats_proc(i, cluster_ports) for i in range(shape.nats_nodes)]
        for proc in self.nats:
            proc.start()
        for proc in self.nats:
            proc.wait_ready()
        self.redis_port = free_port()
        if shape.redis:
            redis = shutil.which("redis-server") or "redis-server"
            self.redis = Proc("redis", [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                                        "--appendonly", "no"], dict(os.environ), ready_port=self.redis_port,
                              log=self.workdir / "redis.log")
            self.redis.start()
            self.redis.wait_ready()
        self.upstream_port = free_port()
        self.upstream = Proc("upstream", [sys.executable, "-m", "tests.mockupstream", "--port", str(self.upstream_port),
                                          "--latency-ms", f"{shape.upstream_latency_ms:g}",
                                          "--chunk-interval-ms", f"{shape.chunk_interval_ms:g}"],
                             dict(os.environ), ready_port=self.upstream_port, log=self.workdir / "upstream.log")
        self.upstream.start()
        self.upstream.wait_ready()
        config = self.workdir / "edge.yaml"
        config.write_text(self.config_text())
        counts = {"provider": shape.provider, "router": shape.router, "cache": shape.cache, "ingress": shape.ingress}
        for service, count in counts.items():
            self.services[service] = []
            for i in range(count):
                self.services[service].append(self._service(service, i, config))
        for service in counts:  # workers first, the ingress last, as `llm-edge up` starts them
            for proc in self.services[service]:
                proc.start()
            for proc in self.services[service]:
                proc.wait_ready()

    def _service(self, service: str, index: int, config: Path) -> Proc:
        # Replicas spread over the NATS nodes, so that losing one node leaves every service some replicas:
        # each is given every node, its own first (NATS_URL takes a comma-separated list, tried in order).
        first = index % len(self.nats_ports)
        nodes = self.nats_ports[first:] + self.nats_ports[:first]
        urls = ",".join(f"nats://127.0.0.1:{port}" for port in nodes)
        env = dict(os.environ, NATS_URL=urls, LLM_EDGE_CONFIG=str(config), LOG_LEVEL="WARNING")
        argv = [sys.executable, "-m", "llm_edge.cli", *(["provider", "up"] if service == "provider" else [service])]
        log = self.workdir / f"{service}-{index}.log"
        if service == "ingress":
            port = free_port()
            self.ingress_ports.append(port)
            env["PORT"] = str(port)
            return Proc(f"ingress-{index}", argv, env, ready_url=f"http://127.0.0.1:{port}/health/ready", log=log)
        metrics = free_port()
        env["METRICS_PORT"] = str(metrics)
        return Proc(f"{service}-{index}", argv, env, ready_url=f"http://127.0.0.1:{metrics}/health/ready", log=log)

    # --- faults ---

    def restart_nats(self, index: int = 0) -> None:
        proc = self.nats[index]
        proc.stop()
        proc.start()
        proc.wait_ready()

    def upstream_fault(self, response: dict[str, object], seconds: float) -> None:
        import json

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.upstream_port}/_mock/fault", method="POST",
            data=json.dumps({"seconds": seconds, "response": response}).encode(),
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200

    def redis_cli(self, *args: str) -> None:
        subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(self.redis_port), *args],
                       check=False, capture_output=True, timeout=30)

    # --- the end ---

    def every_process(self) -> list[Proc]:
        procs = [*self.nats, *([self.redis] if self.redis else []), *([self.upstream] if self.upstream else [])]
        return procs + [p for group in self.services.values() for p in group]

    def rss(self) -> dict[str, float | None]:
        return {proc.name: proc.rss_mib() for proc in self.every_process()}

    def stop(self) -> None:
        for service in ("ingress", "cache", "router", "provider"):
            for proc in self.services.get(service, []):
                proc.stop()
        for proc in [*([self.upstream] if self.upstream else []), *([self.redis] if self.redis else []), *self.nats]:
            proc.stop()


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="llm-edge-reliability-"))
