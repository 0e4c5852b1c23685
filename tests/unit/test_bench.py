"""The bench counts what the upstream really answered: ok only for valid completions, errors apart from latency."""

from __future__ import annotations

import json

import pytest

from llm_edge.bench import report
from llm_edge.bench.check import (
    ResponsesStreamCheck,
    StreamCheck,
    completion_problem,
    embeddings_problem,
    response_problem,
)
from llm_edge.bench.cli import options_from, parser
from llm_edge.bench.client import Bench, Options, Result
from tests.mockupstream.server import MockUpstream


def _options(upstream: MockUpstream, **kw: object) -> Options:
    base: dict[str, object] = {"url": upstream.url + "/v1", "model": "gpt-mock", "warmup": 0.0}
    return Options(**(base | kw))  # type: ignore[arg-type]


async def test_every_ok_request_is_one_upstream_call(upstream: MockUpstream) -> None:
    options = _options(upstream, concurrency=8, requests=200, unique_prompts=True)
    result = await Bench(options).run()

    assert result.ok == 200 == upstream.stats["calls"]
    assert result.errors == 0 and len(result.latency) == 200
    assert upstream.stats["max_in_flight"] <= 8
    assert result.elapsed > 0


async def test_unique_prompts_differ_and_a_fixed_prompt_does_not(upstream: MockUpstream) -> None:
    seen = []
    for unique in (True, False):
        for _ in range(2):
            await Bench(_options(upstream, concurrency=1, requests=1, unique_prompts=unique)).run()
            seen.append(upstream.stats["last_request"]["messages"][0]["content"])

    assert seen[0] != seen[1] and seen[2] == seen[3]


async def test_scripted_500s_are_errors_by_status_and_not_latency(upstream: MockUpstream) -> None:
    # The failures are slow: were they counted as latency, the maximum would show it.
    upstream.script([{"status": 500, "delay_ms": 150}] * 5)
    result = await Bench(_options(upstream, concurrency=4, requests=60)).run()

    assert result.http_errors == {500: 5}
    assert result.ok == 55 and len(result.latency) == 55
    assert max(result.latency) < 0.15
    assert upstream.stats["calls"] == 60
    summary = report.summarize(_options(upstream, requests=60), result)
    assert summary["http_errors"] == {"500": 5} and summary["errors"] == 5
    assert summary["latency_ms"]["max"] < 150


async def test_truncated_streams_are_errors(upstream: MockUpstream) -> None:
    upstream.script([{"fail_after_chunks": 2}] * 3)
    result = await Bench(_options(upstream, concurrency=4, requests=40, stream=True)).run()

    assert result.transport_errors == {"connection_closed": 3}
    assert result.ok == 37 == len(result.latency) == len(result.first_chunk)
    assert len(result.chunk_gaps) == 37 * 7  # 8 content chunks per stream, 7 gaps between them
    assert upstream.stats["calls"] == 40


async def test_a_200_that_is_not_a_completion_is_not_ok(upstream: MockUpstream) -> None:
    upstream.script([{"status": 200, "body": {"error": {"message": "nope"}}}, {"status": 200, "raw": "ok"}])
    result = await Bench(_options(upstream, concurrency=1, requests=4)).run()

    assert result.invalid == {"not_a_completion": 2} and result.ok == 2


async def test_a_stream_without_done_is_not_ok_even_with_content_length(upstream: MockUpstream) -> None:
    chunk = json.dumps({"object": "chat.completion.chunk", "choices": [{"delta": {"content": "hi"}}]})
    upstream.script([{"status": 200, "raw": f"data: {chunk}\n\n"}, {"status": 200, "raw": "data: [DONE]\n\n"}])
    result = await Bench(_options(upstream, concurrency=1, requests=3, stream=True)).run()

    assert result.invalid == {"stream_without_done": 1, "stream_without_content": 1}
    assert result.ok == 1


async def test_warmup_requests_are_sent_but_not_counted(upstream: MockUpstream) -> None:
    result = await Bench(_options(upstream, concurrency=2, warmup=0.05, duration=0.1)).run()

    assert result.warmup_requests > 0 and result.ok > 0
    assert result.ok + result.warmup_requests == upstream.stats["calls"]


async def test_open_loop_sends_on_its_schedule_not_as_fast_as_it_can(upstream: MockUpstream) -> None:
    result = await Bench(_options(upstream, concurrency=4, rate=40.0, duration=0.5)).run()

    # Slots fall due every 25 ms; those due within the 0.5 s measured are sent, one per slot.
    assert result.ok == 20 == upstream.stats["calls"] and result.errors == 0


async def test_open_loop_counts_the_wait_behind_a_slow_answer_that_closed_loop_hides() -> None:
    slow = MockUpstream(latency_ms=50.0)  # one connection then serves at most 20 req/s
    await slow.start()
    try:
        closed = await Bench(_options(slow, concurrency=1, requests=12)).run()
        opened = await Bench(_options(slow, concurrency=1, rate=40.0, requests=12)).run()
    finally:
        await slow.stop()

    # Closed loop: every request takes the upstream's 50 ms. Open loop at twice the capacity: request i
    # was due at i * 25 ms but could only leave at i * 50 ms, and that queueing is part of its latency.
    # The last of 12 was due at 275 ms and left at 550 ms at the earliest: at least 325 ms in all.
    open_p99, closed_p99 = report.percentile(opened.latency, 99), report.percentile(closed.latency, 99)
    assert open_p99 is not None and closed_p99 is not None
    assert open_p99 >= 0.325 > closed_p99


async def test_an_unreachable_target_fails_before_anything_is_measured(upstream: MockUpstream) -> None:
    bench = Bench(_options(upstream, concurrency=1, requests=3))
    await upstream.stop()
    with pytest.raises(OSError):
        await bench.run()


def test_nearest_rank_percentiles_on_known_samples() -> None:
    samples = [float(n) for n in range(100, 0, -1)]  # unsorted on purpose

    assert [report.percentile(samples, p) for p in (0, 50, 90, 99, 100)] == [1.0, 50.0, 90.0, 99.0, 100.0]
    assert report.percentile([7.0], 99) == 7.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and report.percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert report.percentile([], 50) is None
    with pytest.raises(ValueError):
        report.percentile(samples, 101)


def test_summary_reports_milliseconds_and_throughput_of_ok_requests_only() -> None:
    result = Result(ok=4, elapsed=2.0)
    result.latency.extend([0.001, 0.002, 0.003, 0.010])
    result.http_errors[503] += 2
    result.transport_errors["timeout"] += 1
    summary = report.summarize(Options(requests=7), result)

    assert summary["throughput_rps"] == 2.0 and summary["requests"] == 7 and summary["errors"] == 3
    assert summary["latency_ms"] == {"p50": 2.0, "p90": 10.0, "p99": 10.0, "max": 10.0}
    table = report.table(summary)
    assert "HTTP 503: 2" in table and "transport timeout: 1" in table and "2.0 ok req/s" in table


def test_stream_check_reads_crlf_events_split_anywhere() -> None:
    chunk = b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n'
    body = b'data: {"choices":[{"delta":{"role":"assistant"}}]}\r\n\r\n' + chunk * 2 + b"data: [DONE]\r\n\r\n"
    check, found = StreamCheck(), 0
    for i in range(0, len(body), 7):
        found += check.feed(body[i : i + 7])

    assert found == 2 and check.done and check.verdict() is None
    bad = StreamCheck()
    bad.feed(b'data: {"error": {"message": "upstream died"}}\n\ndata: [DONE]\n\n')
    assert bad.verdict() == "stream_error_event"


def test_completion_check() -> None:
    ok = b'{"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": "x"}}]}'

    assert completion_problem(ok) is None
    assert completion_problem(b'{"object": "chat.completion", "choices": []}') == "no_choices"
    assert completion_problem(b'{"object": "list", "choices": []}') == "not_a_completion"
    assert completion_problem(b"<html>") == "not_a_completion"


def test_embeddings_check() -> None:
    assert embeddings_problem(b'{"object": "list", "data": [{"object": "embedding", "embedding": [0.1, 0.2]}]}') is None
    assert embeddings_problem(b'{"object": "list", "data": [{"embedding": "AACAPw=="}]}') is None
    assert embeddings_problem(b'{"object": "list", "data": [{"embedding": []}]}') == "no_vectors"
    assert embeddings_problem(b'{"object": "list", "data": []}') == "no_vectors"
    assert embeddings_problem(b'{"error": {"message": "x"}}') == "not_embeddings"


def test_cli_options() -> None:
    args = parser().parse_args(
        ["--url", "http://127.0.0.1:1/v1", "--requests", "5", "--header", "Cache-Control: no-store",
         "--api-key", "k", "--stream", "--concurrency", "3"]
    )
    options = options_from(args)

    assert options.requests == 5 and options.duration is None and options.concurrency == 3 and options.stream
    assert options.headers == (("Cache-Control", "no-store"), ("authorization", "Bearer k"))
    with pytest.raises(SystemExit):
        parser().parse_args(["--header", "no colon"])
    assert options_from(parser().parse_args(["--rate", "250"])).rate == 250.0
    with pytest.raises(ValueError):
        Bench(Options(rate=0.0))


def test_responses_checks() -> None:
    ok = b'{"object": "response", "status": "completed", "output": [{"type": "message"}]}'
    assert response_problem(ok) is None
    assert response_problem(b'{"object": "response", "status": "failed", "output": []}') == "response_failed"
    assert response_problem(b'{"object": "response", "status": "completed", "output": []}') == "no_output"
    assert response_problem(b'{"object": "chat.completion", "choices": []}') == "not_a_response"

    def event(kind: str) -> bytes:
        return b"event: %b\ndata: {\"type\": \"%b\", \"sequence_number\": 0}\n\n" % (kind.encode(), kind.encode())

    body = event("response.created") + event("response.output_text.delta") * 2 + event("response.completed")
    check = ResponsesStreamCheck()
    assert sum(check.feed(body[i:i + 5]) for i in range(0, len(body), 5)) == 2
    assert check.verdict() is None
    failed = ResponsesStreamCheck()
    failed.feed(event("response.output_text.delta") + event("error") + event("response.failed"))
    assert failed.verdict() == "stream_error_event"
    cut = ResponsesStreamCheck()
    cut.feed(event("response.output_text.delta"))
    assert cut.verdict() == "stream_without_done"
