"""Process lifecycle for every service: uvloop, signal handling, draining on SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

log = logging.getLogger("llm_edge.runtime")


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: asyncio's own loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


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


_readiness: Callable[[], bool] | None = None


def notify_ready(ready: Callable[[], bool] | None = None) -> None:
    """This process now takes work: tell the launcher (it waits for that before stopping an old copy)
    and, with `ready`, answer `/health/ready` on the metrics port with it from now on.

    `ready` is called from the metrics thread: it must only read state (a connection flag, an event).
    """
    global _readiness
    _readiness = ready
    fd = os.environ.pop(READY_FD, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except (OSError, ValueError):
        log.warning("could not tell the launcher this process is ready")


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


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
