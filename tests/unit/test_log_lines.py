"""The per-request line (`logs.info`): the same JSON as any other line, in order with them, redacted, and
through the logger whenever something else listens (a test's capture)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from shared import logs

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    # pytest adds and removes its own capture handlers around each phase of a test: only the others are ours
    # to put back, or a capture handler of the setup phase would stay on the root for every later test.
    saved = [handler for handler in root.handlers if not type(handler).__module__.startswith("_pytest")]
    level = root.level
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logs.setup("ingress", "INFO", [SECRET])
    yield out
    root.handlers[:] = [handler for handler in root.handlers if not isinstance(handler, logs.JsonHandler)]
    root.handlers.extend(handler for handler in saved if handler not in root.handlers)
    root.setLevel(level)


def _alone() -> None:
    """Only the handler `setup` installs, as in a service: pytest adds its own capture handlers to every test."""
    root = logging.getLogger()
    root.handlers[:] = [handler for handler in root.handlers if isinstance(handler, logs.JsonHandler)]


def _lines(out: io.StringIO) -> list[dict[str, str]]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_the_per_request_line_is_written_like_every_other_in_its_order(sink: io.StringIO) -> None:
    _alone()
    log = logging.getLogger("llm_edge.ingress")
    logs.request_id.set("5f3c2a9b1e7d000000002a")
    log.info("first")
    logs.info(log, f"request done: 200 model=m upstream said {SECRET}")
    log.warning("third")  # through the logger: what waits is written first
    logs.info(log, "fourth")

    lines = _lines(sink)
    assert [line["msg"] for line in lines] == [
        "first", "request done: 200 model=m upstream said [redacted]", "third", "fourth"]
    first, done = lines[0], lines[1]
    assert done.keys() == first.keys()
    assert {k: done[k] for k in ("level", "service", "logger", "request_id")} == {
        "level": "info", "service": "ingress", "logger": "llm_edge.ingress", "request_id": "5f3c2a9b1e7d000000002a"}
    assert done["ts"].endswith("Z") and len(done["ts"]) == len(first["ts"])


def test_without_an_event_loop_the_line_is_written_at_once(sink: io.StringIO) -> None:
    _alone()
    logs.info(logging.getLogger("llm_edge.ingress"), "request done: 200")
    assert json.loads(sink.getvalue())["msg"] == "request done: 200"


def test_the_line_goes_through_the_logger_when_another_handler_listens(
        sink: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    logs.info(logging.getLogger("llm_edge.ingress"), "request done: 499 (client left)")
    assert [r.getMessage() for r in caplog.records] == ["request done: 499 (client left)"]


def test_no_line_below_the_level(sink: io.StringIO) -> None:
    _alone()
    logging.getLogger().setLevel(logging.WARNING)
    logs.info(logging.getLogger("llm_edge.ingress"), "request done: 200")
    assert _lines(sink) == []
