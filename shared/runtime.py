"""Process lifecycle for every service: uvloop, signal handling, draining on SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

log = logging.getLogger("llm_edge.runtime")


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: asyncio's own loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


SCHEDULING = "LLM_EDGE_SCHEDULING"  # `batch` (the default) or `normal`


def batch_scheduling(batch: bool = True) -> None:
    """Linux's SCHED_BATCH policy for this process and what it starts (which inherits it), or with `batch`
    False the default one back; nothing when `LLM_EDGE_SCHEDULING=normal`.

    Behind the ingress the services are a pipeline: every request crosses nats-server, the router and a
    worker, each waking the next with a message. Under the default policy a woken process may preempt the
    one that woke it, so where they share cores (`llm-edge up` on one machine) a message can cost a context
    switch before its sender has written the rest of its turn's. SCHED_BATCH is the policy sched(7) names for
    such non-interactive work: it never preempts on waking, so each process runs until it waits. No
    privilege is needed, and an idle core still runs a woken process at once. The ingress, which answers
    clients, keeps the default policy. Measured with every process on one core at 64 concurrent misses
    (docs/PERFORMANCE.md): about one involuntary context switch fewer per request; CPU per request lower
    in most pairs of runs, by less than this machine's run-to-run spread."""
    if os.environ.get(SCHEDULING, "batch") != "batch" or not hasattr(os, "SCHED_BATCH"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH if batch else os.SCHED_OTHER, os.sched_param(0))
    except OSError as exc:  # a sandbox that forbids it: the default policy works, only less well
        log.debug("scheduling policy refused (%s); keeping the current one", exc)


def stop_event() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT; a second one is left to the default (exit now)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s, draining", sig.name)
        stop.set()
        loop.remove_signal_handler(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return stop


READY_FD = "LLM_EDGE_READY_FD"
# The ingress's listening socket, when the launcher holds it and hands it to each copy it starts.
LISTEN_FD = "LLM_EDGE_LISTEN_FD"


def listening_socket(host: str, port: int) -> socket.socket:
    """SO_REUSEPORT, so a new ingress can listen beside the old one during a rolling restart (compose and
    Kubernetes replace containers; there the load balancer moves traffic); listening before the app
    starts, so connections that arrive meanwhile wait in the backlog instead of failing."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def inherited_listener() -> socket.socket | None:
    """The listening socket `llm-edge up` handed down, if it did.

    One socket shared by the old and the new ingress during a rolling restart: a connection waiting in its
    backlog stays there when the old copy stops accepting, and the new copy accepts it. With a socket
    each (SO_REUSEPORT), the kernel resets the connections queued on the socket that closes."""
    fd = os.environ.pop(LISTEN_FD, None)
    if fd is None:
        return None
    sock = socket.socket(fileno=int(fd))
    sock.setblocking(False)
    return sock


_readiness: Callable[[], bool] | None = None


def notify_ready(ready: Callable[[], bool] | None = None) -> None:
    """This process now takes work: tell the launcher (it waits for that before stopping an old copy)
    and, with `ready`, answer `/health/ready` on the metrics port with it from now on.

    `ready` is called from the metrics thread: it must only read state (a connection flag, an event).
    """
    global _readiness
    _readiness = ready
    settle_memory()
    fd = os.environ.pop(READY_FD, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except (OSError, ValueError):
        log.warning("could not tell the launcher this process is ready")


def settle_memory() -> None:
    """Once started: what the imports and the start built lives as long as the process, so it leaves the
    collector's view (`gc.freeze`), and the youngest generation is collected every 20,000 allocations
    instead of 700. A request's objects die by reference counting; the collector only finds cycles, and
    with the defaults it ran often enough to take about 6 % of a busy worker's CPU (perf, c=64 misses)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)



def is_ready() -> bool:
    """Whether this process takes work: started, and its `ready` check (bus connected, not draining)
    holds. False before `notify_ready`."""
    return _readiness is not None and _readiness()


class _Connection(Protocol):  # a `shared.bus.Bus`; not imported: the launcher must not load the NATS client
    @property
    def connected(self) -> bool: ...


def taking_work(connection: _Connection, stop: asyncio.Event) -> Callable[[], bool]:
    """The readiness of a bus service: connected to NATS and not draining."""
    return lambda: connection.connected and not stop.is_set()


def run(main: Callable[[], Coroutine[Any, Any, None]], batch: bool = True) -> None:
    batch_scheduling(batch)
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
