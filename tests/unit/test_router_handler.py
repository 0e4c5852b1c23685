"""The router's decisions, by calling its handler with no nats-server: the provider workers are played
by a script (the only thing replaced), and what the router asked, published and answered is checked.

Strategy order, retries, fallback, context-window moves, single flight, the cache fill, and which
failures feed a target's circuit breaker (only the target's own) are covered here.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import msgspec
import pytest

from services.router.breaker import Breaker
from services.router.service import Router, _ModelOnly
from shared import bus
from shared.errors import DeadlineExceeded, GatewayError
from shared.messages import (
    ChatResult,
    Choice,
    Delivered,
    ErrorReply,
    Reply,
    ResponseMessage,
    Usage,
    encode,
    reply_decoder,
)
from shared.subjects import Headers
from tests.stack import make_config


def answer(provider: str, text: str = "hi") -> ChatResult:
    return ChatResult(id="c", created=0, model="m", choices=[Choice(index=0, message=ResponseMessage(content=text))],
                      usage=Usage(), provider=provider, target_model="m")


def failure(status: int, code: str | None = None, retryable: bool = True, retry_after: float | None = None,
            stream_started: bool = False) -> ErrorReply:
    return ErrorReply(status=status, type="api_error", message=f"failed {status}", code=code, retryable=retryable,
                      retry_after=retry_after, stream_started=stream_started)


Outcome = Reply | Exception


class Workers:
    """The provider side, scripted: each call to a provider takes its next outcome (a reply, or the bus
    error a caller would see: `Lost`, `NoResponders`, `DeadlineExceeded`). Asked to answer directly
    (`Llm-Answer-To`), a worker sends a success to that inbox (kept in `answered`) and the router only its
    outcome (`Delivered`, or the answer with `Llm-Outcome: result`), after the cache fill when asked
    (`Llm-Fill-To`), as `bus.Server` does."""

    def __init__(self, script: dict[str, list[Outcome]], hold: float = 0.0) -> None:
        self.script = script
        self.hold = hold
        self.asked: list[str] = []
        self.queued: list[str] = []
        self.published: list[tuple[str, bytes, dict[str, str] | None]] = []
        self.asking = asyncio.Condition()  # notified on every call
        self.answered: list[tuple[str, bytes]] = []  # what workers sent straight to an ingress inbox
        self.headers: list[dict[str, str]] = []  # of every call, as asked

    async def _take(self, subject: str, headers: dict[str, str]) -> tuple[Reply, bus.Answer]:
        provider = subject.split(".")[-2] if subject.endswith(".chat") else subject.split(".")[-1]
        self.asked.append(provider)
        async with self.asking:
            self.asking.notify_all()
        self.headers.append(dict(headers))
        if self.hold:
            await asyncio.sleep(self.hold)  # a call that takes time, so that others overlap it
        outcome = self.script[provider].pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        data = encode(outcome)
        if (to := headers.get(Headers.ANSWER_TO)) and isinstance(outcome, ChatResult):
            if fill := headers.get(Headers.FILL_TO):
                self.published.append((fill, data, {k: headers[k] for k in (Headers.CACHE_KEY,) if k in headers}))
            self.answered.append((to, data))
            if headers.get(Headers.OUTCOME) != "result":
                data = encode(Delivered())
        return reply_decoder.decode(data), bus.Answer(data, {})

    async def request(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float,
                      heartbeat: float | None = None) -> tuple[Reply, bus.Answer]:
        return await self._take(subject, headers)

    async def enqueue(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float,
                      heartbeat: float = bus.HEARTBEAT_SECONDS) -> tuple[Reply, bus.Answer]:
        self.queued.append(subject)
        return await self._take(subject, headers)

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                      reply: str = "") -> None:
        self.published.append((subject, data, headers))


def router(workers: Workers, strategy: str = "fallback", **fields: Any) -> Router:
    targets = fields.pop("targets", [{"provider": "a", "model": "m"}, {"provider": "b", "model": "m"}])
    providers = fields.pop("providers", {"a": {"adapter": "mock"}, "b": {"adapter": "mock"}, "c": {"adapter": "mock"}})
    config = make_config("nats://unused", providers=providers,
                         models=[{"name": "chat", "strategy": strategy, "targets": targets}],
                         router={"retry": {"attempts": 2, "backoff_base_seconds": 0.001},
                                 "breaker": {"consecutive_failures": 2, "cooldown_seconds": 60}} | fields)
    return Router(config, workers)


def ctx(stream: bool = False, cache_key: str | None = None, timeout: float = 30.0,
        reply: str = "_INBOX.ingress.token") -> bus.Context:
    headers = {Headers.REQUEST_ID: "r1", Headers.DEADLINE: str(int((time.time() + timeout) * 1000))}
    if stream:
        headers |= {Headers.STREAM: "1", Headers.BUS_ID: "unguessable"}
    if cache_key:
        headers[Headers.CACHE_KEY] = cache_key
    return bus.Context(b"payload", headers, reply=reply)


CHAT = _ModelOnly(model="chat")


def client_got(workers: Workers, context: bus.Context, raw: bus.Raw | None) -> ChatResult:
    """The answer the client's inbox received: the router's, or else the worker's direct one (never both)."""
    direct = [data for to, data in workers.answered if to == context.reply]
    if raw is not None:
        assert not direct
        return msgspec.msgpack.decode(raw.data, type=ChatResult)
    assert len(direct) == 1
    workers.answered.remove((context.reply, direct[0]))
    return msgspec.msgpack.decode(direct[0], type=ChatResult)


async def served_by(r: Router, context: bus.Context | None = None) -> str:
    context = context or ctx()
    workers = r.calls
    assert isinstance(workers, Workers)
    return client_got(workers, context, await r.handle(CHAT, context)).provider


async def asked(workers: Workers, calls: int) -> None:
    """Until the workers have been asked `calls` times."""
    async with asyncio.timeout(2), workers.asking:
        await workers.asking.wait_for(lambda: len(workers.asked) >= calls)


def failures(r: Router, provider: str) -> int:
    breaker = r.breakers.get(f"{provider}/m")
    return 0 if breaker is None else breaker.failures


async def test_a_retryable_failure_is_retried_then_the_next_target_answers() -> None:
    workers = Workers({"a": [failure(500), failure(503)], "b": [answer("b")]})
    r = router(workers)
    assert await served_by(r) == "b"
    assert workers.asked == ["a", "a", "b"]
    assert failures(r, "a") == 2 and r.breaker(r.routes.resolve("chat")[0]).state == "open"


async def test_the_callers_own_fault_is_neither_retried_nor_moved_on_nor_counted() -> None:
    workers = Workers({"a": [failure(400, "invalid_request", retryable=False)], "b": [answer("b")]})
    r = router(workers)
    with pytest.raises(GatewayError) as raised:
        await r.handle(CHAT, ctx())
    assert raised.value.http_status == 400
    assert workers.asked == ["a"] and failures(r, "a") == 0


async def test_a_retry_after_beyond_the_limit_moves_on_at_once() -> None:
    workers = Workers({"a": [failure(429, retry_after=120)], "b": [answer("b")]})
    assert await served_by(router(workers)) == "b"
    assert workers.asked == ["a", "b"]


async def test_a_context_window_error_skips_targets_no_larger() -> None:
    targets = [{"provider": "a", "model": "m", "context_window": 8000},
               {"provider": "b", "model": "m", "context_window": 8000},
               {"provider": "c", "model": "m", "context_window": 128000}]
    workers = Workers({"a": [failure(400, "context_length_exceeded", retryable=False)], "c": [answer("c")]})
    assert await served_by(router(workers, targets=targets)) == "c"
    assert workers.asked == ["a", "c"]


async def test_an_open_breaker_is_skipped_and_all_open_leaves_one_last_resort_probe() -> None:
    a: list[Outcome] = [failure(500), failure(500), answer("a")]
    workers = Workers({"a": a, "b": [answer("b"), failure(500), failure(500)]}, hold=0.05)
    r = router(workers)
    assert await served_by(r) == "b"
    assert workers.asked == ["a", "a", "b"]  # a's breaker (two failures) is now open
    with pytest.raises(GatewayError):
        await r.handle(CHAT, ctx())
    assert workers.asked[3:] == ["b", "b"]  # and now b's
    # Every target open: one call still probes at once (no 60 s cooldown); the others get a clear 503.
    probe = asyncio.create_task(served_by(r))
    await asked(workers, 6)  # the probe holds a's slot (for 50 ms)...
    other = asyncio.create_task(r.handle(CHAT, ctx()))
    await asked(workers, 7)  # ...a second call holds b's...
    with pytest.raises(GatewayError) as raised:
        await r.handle(CHAT, ctx())  # ...and a third finds none
    assert raised.value.code == "all_targets_unavailable" and raised.value.http_status == 503
    assert workers.asked[5:] == ["a", "b"]
    assert await probe == "a"  # a is back: its breaker closes, and the model with it
    with pytest.raises(IndexError):
        await other  # (b's probe: its script is spent)
    assert r.breaker(r.routes.resolve("chat")[0]).state == "closed"


async def test_a_dead_worker_is_asked_again_and_never_feeds_the_breaker() -> None:
    lost = bus.Lost("silent")
    workers = Workers({"a": [lost, lost, answer("a")]})
    r = router(workers, breaker={"consecutive_failures": 1})
    assert await served_by(r) == "a"
    assert workers.asked == ["a", "a", "a"]
    assert failures(r, "a") == 0 and r.breaker(r.routes.resolve("chat")[0]).state == "closed"


def state_of(breaker: Breaker) -> str:
    """Read afresh (mypy would keep the state narrowed by an earlier assert across the awaits)."""
    return breaker.state


async def test_a_dead_worker_in_half_open_does_not_keep_the_probe() -> None:
    lost: list[Outcome] = [bus.Lost("silent")] * 3
    workers = Workers({"a": [*lost, answer("a")], "b": [answer("b")]})
    r = router(workers)
    breaker = r.breaker(r.routes.resolve("chat")[0])
    breaker.apply("half_open", time.monotonic())
    assert await served_by(r) == "b"  # a's workers kept dying: moved on, a not blamed
    assert breaker.state == "half_open" and breaker.available(time.monotonic())
    assert await served_by(r) == "a"  # the next call may probe a
    assert state_of(breaker) == "closed"


async def test_a_stream_whose_worker_died_after_its_first_chunk_ends_with_one_error_and_no_retry() -> None:
    workers = Workers({"a": [bus.Lost("silent", started=True)], "b": [answer("b")]})
    r = router(workers)
    assert await r.handle(CHAT, ctx(stream=True)) is None
    assert workers.asked == ["a"]
    (to, data, _), cancel = workers.published
    assert to == "_INBOX.ingress.token"
    error = reply_decoder.decode(data)
    assert isinstance(error, ErrorReply) and error.stream_started and error.code == "stream_lost"
    assert cancel == (r.subjects.cancel, b"", {Headers.BUS_ID: "unguessable"})  # no redelivered copy runs
    assert failures(r, "a") == 0


async def test_a_stream_is_asked_with_its_inbox_and_bus_id_and_not_answered_by_the_router() -> None:
    seen: list[dict[str, str]] = []
    workers = Workers({"a": [answer("a")]})
    original = workers.request

    async def spy(subject: str, payload: bytes, headers: dict[str, str], timeout: float,
                  heartbeat: float | None = None) -> tuple[Reply, bus.Answer]:
        seen.append(dict(headers))
        return await original(subject, payload, headers, timeout, heartbeat)

    workers.request = spy  # type: ignore[method-assign]
    assert await router(workers).handle(CHAT, ctx(stream=True)) is None
    assert seen[0][Headers.STREAM_TO] == "_INBOX.ingress.token" and seen[0][Headers.BUS_ID] == "unguessable"


async def test_the_clients_own_deadline_never_feeds_the_breaker() -> None:
    workers = Workers({"a": [DeadlineExceeded("late"), failure(504, "deadline_exceeded")] * 3})
    r = router(workers, breaker={"consecutive_failures": 1})
    for _ in range(3):
        with pytest.raises(DeadlineExceeded):
            await r.handle(CHAT, ctx())
        with pytest.raises(GatewayError):  # the worker saw the deadline pass: a 504 with no time left
            await r.handle(CHAT, ctx(timeout=0.01))
    assert failures(r, "a") == 0 and r.breaker(r.routes.resolve("chat")[0]).state == "closed"


async def test_no_worker_at_all_moves_on_and_counts() -> None:
    workers = Workers({"a": [bus.NoResponders("nobody")], "b": [answer("b")]})
    r = router(workers)
    assert await served_by(r) == "b"
    assert failures(r, "a") == 1


async def test_a_capped_provider_is_asked_through_its_queue() -> None:
    workers = Workers({"a": [answer("a")]})
    r = router(workers, providers={"a": {"adapter": "mock", "max_in_flight": 2}, "b": {"adapter": "mock"}})
    assert await served_by(r) == "a"
    assert workers.queued == [r.subjects.admission("a")]


async def test_an_answer_fills_the_cache_under_its_key_and_identical_requests_share_one_call() -> None:
    workers = Workers({"a": [answer("a")]}, hold=0.05)
    r = router(workers)
    contexts = [ctx(cache_key="k1", reply=f"_INBOX.ingress.t{i}") for i in range(5)]
    results = await asyncio.gather(*(r.handle(CHAT, c) for c in contexts))
    # The leader's answer went from the worker to its client; the router passes it to the four followers.
    got = [client_got(workers, c, raw) for c, raw in zip(contexts, results, strict=True)]
    assert {g.provider for g in got} == {"a"} and sum(raw is None for raw in results) == 1
    assert workers.asked == ["a"] and workers.headers[0][Headers.OUTCOME] == "result"
    fills = [(to, headers) for to, _, headers in workers.published if to == r.subjects.cache_fill]
    assert fills == [(r.subjects.cache_fill, {Headers.CACHE_KEY: "k1"})]


async def test_weighted_strategy_splits_by_weight() -> None:
    targets = [{"provider": "a", "model": "m", "weight": 3}, {"provider": "b", "model": "m", "weight": 1}]
    workers = Workers({"a": [answer("a")] * 1000, "b": [answer("b")] * 1000})
    r = router(workers, strategy="weighted", targets=targets)
    r.rng = random.Random(7)
    served = Counter([await served_by(r) for _ in range(400)])
    assert 260 <= served["a"] <= 340 and served["a"] + served["b"] == 400


async def test_least_latency_prefers_the_faster_target_once_measured() -> None:
    workers = Workers({"a": [answer("a")] * 100, "b": [answer("b")] * 100})
    r = router(workers, strategy="least_latency")
    r.rng = random.Random(1)
    from services.router.strategy import TargetStats

    r.stats = {"a/m": TargetStats(latency=0.9), "b/m": TargetStats(latency=0.1)}
    served = Counter([await served_by(r) for _ in range(40)])
    assert served["b"] >= 34  # all but the few exploring calls


async def test_a_client_that_left_is_neither_retried_nor_moved_on_nor_counted() -> None:
    workers = Workers({"a": [failure(502, "client_disconnected")], "b": [answer("b")]})
    r = router(workers)
    with pytest.raises(GatewayError) as caught:
        await r.handle(CHAT, ctx())
    assert caught.value.code == "client_disconnected"
    assert workers.asked == ["a"]  # the worker closed the call because the client left: nobody to answer
    assert failures(r, "a") == 0


async def test_a_follower_makes_its_own_call_when_the_leaders_client_left() -> None:
    workers = Workers({"a": [failure(502, "client_disconnected"), answer("a")]}, hold=0.05)
    r = router(workers)
    # Tasks start in order: the leader's call is in flight (held by the worker) when the follower joins it.
    second = ctx(cache_key="k1", reply="_INBOX.ingress.t2")
    leader, follower = await asyncio.gather(r.handle(CHAT, ctx(cache_key="k1")), r.handle(CHAT, second),
                                            return_exceptions=True)
    assert isinstance(leader, GatewayError) and leader.code == "client_disconnected"
    assert follower is None and client_got(workers, second, follower).provider == "a"  # its own call's answer
    assert workers.asked == ["a", "a"]


async def test_a_plain_answer_goes_from_the_worker_to_the_client_and_the_router_hears_only_that_it_did() -> None:
    workers = Workers({"a": [answer("a")]})
    r = router(workers)
    assert await r.handle(CHAT, ctx()) is None  # nothing more for the router to send
    asked = workers.headers[0]
    assert asked[Headers.ANSWER_TO] == "_INBOX.ingress.token" and Headers.OUTCOME not in asked
    assert [to for to, _ in workers.answered] == ["_INBOX.ingress.token"]
    assert not [to for to, _, _ in workers.published if to == r.subjects.cache_fill]  # no key: nothing to fill
    assert r.stats["a/m"].latency is not None  # the outcome still measures the target


async def test_after_a_failed_attempt_only_the_retry_answers_the_client() -> None:
    workers = Workers({"a": [failure(500), failure(502, retryable=False)], "b": [answer("b")]})
    r = router(workers)
    assert await served_by(r) == "b"  # client_got: exactly one answer reached the client's inbox
    assert workers.asked == ["a", "a", "b"] and workers.answered == []
