"""The credential refresher: a refresh runs in a thread (the event loop keeps serving while it blocks), one at
a time, and a credential service that is down costs one try per few seconds, not one per call."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.providers.refresh import Refresher
from shared.errors import ProviderError


async def test_a_refresh_blocks_its_thread_not_the_event_loop() -> None:
    started, release = threading.Event(), threading.Event()
    refreshed: list[bool] = []

    def refresh() -> None:  # blocking, as botocore's and google-auth's refreshes are
        started.set()
        assert release.wait(5), "the event loop was blocked while the refresh ran"
        refreshed.append(True)

    task = asyncio.create_task(Refresher().run(lambda: not refreshed, refresh))
    assert await asyncio.to_thread(started.wait, 5)
    release.set()  # done by the event loop while the refresh is still blocked
    await task
    assert refreshed == [True]


async def test_calls_arriving_during_a_refresh_wait_for_it_and_do_not_refresh_again() -> None:
    calls: list[int] = []
    release = threading.Event()

    def refresh() -> None:
        assert release.wait(5)
        calls.append(1)

    refresher = Refresher()
    tasks = [asyncio.create_task(refresher.run(lambda: not calls, refresh)) for _ in range(5)]
    await asyncio.to_thread(release.set)
    await asyncio.gather(*tasks)
    assert calls == [1]


async def test_a_failed_refresh_is_not_retried_by_every_call() -> None:
    tries: list[int] = []

    def refresh() -> None:
        tries.append(1)
        raise ProviderError("bedrock: getting AWS credentials failed: STS is down",
                            code="provider_credentials_unavailable")

    refresher = Refresher(retry_seconds=60)
    for _ in range(3):
        with pytest.raises(ProviderError, match="STS is down") as caught:
            await refresher.run(lambda: True, refresh)
        assert caught.value.code == "provider_credentials_unavailable"
    assert tries == [1]


async def test_a_kept_set_is_used_without_a_new_try_until_the_retry_time() -> None:
    tries: list[int] = []
    refresher = Refresher(retry_seconds=0.0)  # no wait: each call may try again
    await refresher.run(lambda: True, lambda: tries.append(1))
    await refresher.run(lambda: True, lambda: tries.append(1))
    assert tries == [1, 1]
    waiting = Refresher(retry_seconds=60)
    await waiting.run(lambda: True, lambda: tries.append(2))  # the library kept the old set (still needed)
    await waiting.run(lambda: True, lambda: tries.append(2))
    assert tries == [1, 1, 2]
