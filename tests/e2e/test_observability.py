"""Traces, metrics and logs of a real `llm-edge up`: one trace per request across the processes (received
by a small OTLP/HTTP receiver in the test), a metrics endpoint per process, and logs that never contain a
provider key or a prompt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llm_edge.launcher import free_port
from tests.e2e.test_up import read_until, stop

PROVIDER_KEY = "sk-e2e-very-secret-provider-key"
PROMPT = "my confidential prompt about project nightingale"


@dataclass
class Receiver:
    spans: list[tuple[str, str, bytes, bytes, bytes]] = field(default_factory=list)  # service, name, trace, id, parent
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.arrived:
            for resource_spans in request.resource_spans:
                service = next(a.value.string_value for a in resource_spans.resource.attributes
                               if a.key == "service.name")
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append((service, span.name, span.trace_id, span.span_id, span.parent_span_id))
            self.arrived.notify_all()

    def wait_for_trace(self, services: set[str], trace_id: bytes | None = None, timeout: float = 10.0
                       ) -> list[tuple[str, str, bytes, bytes, bytes]]:
        """The spans of the first trace (`trace_id`'s, if given) that covers all `services`."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                by_trace: dict[bytes, list[tuple[str, str, bytes, bytes, bytes]]] = {}
                for span in self.spans:
                    by_trace.setdefault(span[2], []).append(span)
                for tid, spans in by_trace.items():
                    if {s[0] for s in spans} >= services and trace_id in (None, tid):
                        return spans
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no trace covering {services}; got {self.spans}")
                self.arrived.wait(left)


@dataclass
class Observed:
    url: str
    banner: str
    receiver: Receiver
    process: subprocess.Popen[str]
    log_path: str


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver.add(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    otlp = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=otlp.serve_forever, daemon=True).start()
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.mockupstream", "--port", str(upstream_port)],
                                stdout=subprocess.PIPE, text=True)
    read_until(upstream, "listening", 15, [])
    folder = tmp_path_factory.mktemp("observability")
    config = folder / "edge.yaml"
    config.write_text(
        "providers:\n"
        f"  openai: {{base_url: 'http://127.0.0.1:{upstream_port}/v1'}}\n"
    )
    port = free_port()
    log_path = str(folder / "logs.txt")
    env = dict(os.environ, PORT=str(port), NATS_URL=f"nats://127.0.0.1:{free_port()}",
               NATS_MONITOR_PORT=str(free_port()), LLM_EDGE_CONFIG=str(config), LOG_LEVEL="DEBUG",
               OPENAI_API_KEY=PROVIDER_KEY, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp.server_port}",
               OTEL_BSP_SCHEDULE_DELAY="50")
    with open(log_path, "w") as logs:
        process = subprocess.Popen([sys.executable, "-m", "llm_edge.cli", "up"], env=env,
                                   stdout=subprocess.PIPE, stderr=logs, text=True)
        lines: list[str] = []
        try:
            read_until(process, "Ctrl-C drains", 30, lines)
            yield Observed(f"http://127.0.0.1:{port}", "".join(lines), receiver, process, log_path)
        finally:
            stop(process)
            stop(upstream, signal.SIGTERM)
            otlp.shutdown()
            otlp.server_close()


def chat(url: str, content: str, **headers: str) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response


def test_a_miss_is_one_trace_across_ingress_router_and_provider(observed: Observed) -> None:
    chat(observed.url, "trace this miss")
    spans = observed.receiver.wait_for_trace({"llm-edge-ingress", "llm-edge-router", "llm-edge-provider-openai"})
    by_service = {s[0]: s for s in spans}
    ingress = by_service["llm-edge-ingress"]
    assert ingress[1] == "chat gpt-4o-mini" and ingress[4] == b""  # the root
    assert by_service["llm-edge-router"][4] == ingress[3]
    assert by_service["llm-edge-provider-openai"][4] == by_service["llm-edge-router"][3]
    assert by_service["llm-edge-provider-openai"][1] == "chat gpt-4o-mini"
    # Without L2 the ingress's own L1 answered "miss": the cache service was not asked.
    assert "llm-edge-cache" not in by_service


def test_a_hit_never_leaves_the_ingress(observed: Observed) -> None:
    chat(observed.url, "trace this hit")
    deadline = time.monotonic() + 5
    while chat(observed.url, "trace this hit").headers["x-llm-edge-cache"] != "hit-l1":
        assert time.monotonic() < deadline
    traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    assert chat(observed.url, "trace this hit", traceparent=traceparent).headers["x-llm-edge-cache"] == "hit-l1"
    spans = observed.receiver.wait_for_trace({"llm-edge-ingress"}, bytes.fromhex("ab" * 16))
    ingress = next(s for s in spans if s[0] == "llm-edge-ingress")
    assert ingress[4] == bytes.fromhex("cd" * 8)  # the caller's traceparent is the parent
    # A miss after it, traced to the end: every process that took part in the hit would have exported
    # its span of the hit before this one's.
    chat(observed.url, "a miss after the hit", traceparent="00-" + "ee" * 16 + "-" + "cd" * 8 + "-01")
    observed.receiver.wait_for_trace({"llm-edge-ingress", "llm-edge-router", "llm-edge-provider-openai"},
                                     bytes.fromhex("ee" * 16))
    assert {s[0] for s in observed.receiver.spans if s[2] == bytes.fromhex("ab" * 16)} == {"llm-edge-ingress"}


def test_probes_and_scrapes_leave_no_traces(observed: Observed) -> None:
    for path in ("/health/ready", "/health/live", "/health", "/metrics"):
        httpx.get(f"{observed.url}{path}", timeout=5)
    traceparent = f"00-{'ef' * 16}-{'01' * 8}-01"
    chat(observed.url, "after the probes", traceparent=traceparent)
    # The ingress exports its spans in the order they ended: once this request's span has arrived, a
    # span for any of the probes before it would have too.
    observed.receiver.wait_for_trace({"llm-edge-ingress"}, bytes.fromhex("ef" * 16))
    names = {name for service, name, *_ in observed.receiver.spans if service == "llm-edge-ingress"}
    assert not {name for name in names if "/health" in name or "/metrics" in name}, names


def test_every_process_serves_its_metrics(observed: Observed) -> None:
    chat(observed.url, "metrics please")
    urls = re.findall(r"(http://\S+/metrics) \((\w[\w ]*)\)", observed.banner)
    names = {name for _, name in urls}
    assert names == {"ingress", "cache", "router", "provider openai"}
    expected = {
        "ingress": "llm_edge_requests_total",
        "cache": "llm_edge_cache_lookups_total",
        "router": "llm_edge_provider_available",
        "provider openai": "llm_edge_tokens_total",
    }
    for url, name in urls:
        text = httpx.get(url, timeout=5).text
        assert expected[name] in text, (name, text[:500])
        # The same port answers the probes: live, and ready (on the bus, not draining).
        health = url.removesuffix("/metrics") + "/health"
        assert httpx.get(f"{health}/live", timeout=5).status_code == 200, name
        assert httpx.get(f"{health}/ready", timeout=5).status_code == 200, name


def test_each_request_leaves_its_line_and_no_log_has_the_provider_key_or_the_prompt(observed: Observed) -> None:
    rid = chat(observed.url, PROMPT).headers["x-request-id"]
    observed.process.send_signal(signal.SIGINT)  # stop, so every process has flushed its log lines
    assert observed.process.wait(30) == 0
    logs = Path(observed.log_path).read_text()
    assert '"level":"debug"' in logs or '"level":"info"' in logs  # the logs were captured at all
    assert PROVIDER_KEY not in logs
    assert "nightingale" not in logs
    for line in logs.splitlines():
        if line.startswith("{"):
            assert '"service":' in line
    # The ingress's one line per request (written outside the logging machinery: shared/logs.py), JSON like
    # every other line, with the request's id.
    done = [line for line in map(json.loads, filter(lambda text: text.startswith("{"), logs.splitlines()))
            if line.get("request_id") == rid and line["msg"].startswith("request done")]
    assert len(done) == 1, done
    assert done[0]["msg"].startswith("request done: 200 model=gpt-4o-mini cache=miss provider=openai in ")
    assert (done[0]["service"], done[0]["level"], done[0]["logger"]) == ("ingress", "info", "llm_edge.ingress")
