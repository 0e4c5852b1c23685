"""A process stopping while its trace collector is down still stops promptly (a rolling update waits on
every one), dropping the spans the collector never took and saying so."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from llm_edge.launcher import free_port


def test_shutdown_with_the_collector_down_is_bounded() -> None:
    closed = free_port()  # nothing listens: every export attempt is refused and retried with back-off
    script = textwrap.dedent(f"""
        import logging, sys
        from opentelemetry import trace
        from shared import tracing
        logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(name)s %(message)s")
        tracing.setup("test", "http://127.0.0.1:{closed}")
        for _ in range(2000):
            trace.get_tracer("test").start_span("queued").end()
        tracing.shutdown(timeout=1.0)
        print("stopped")
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout
    assert "llm_edge.tracing the trace collector did not take the last spans within 1 s: dropped" in done.stdout
