#!/bin/bash
# What the per-request log lines cost: cache-miss throughput through `llm-edge up` (mock provider, c=32,
# 8 s) with LOG_LEVEL=$1 (INFO or WARNING); prints the bench's throughput and latency, then the number
# of log lines written. Loopback only. Usage: bench/log_cost.sh INFO; bench/log_cost.sh WARNING
set -u
cd "$(dirname "$0")/.."
OUT=$(mktemp -d)
PORT=$(.venv/bin/python -c "from llm_edge.launcher import free_port; print(free_port())")
NP=$(.venv/bin/python -c "from llm_edge.launcher import free_port; print(free_port())")
MP=$(.venv/bin/python -c "from llm_edge.launcher import free_port; print(free_port())")
LOG_LEVEL=$1 PORT=$PORT NATS_URL=nats://127.0.0.1:$NP NATS_MONITOR_PORT=$MP .venv/bin/llm-edge up > $OUT/up.out 2> $OUT/up.err &
UP=$!
for i in $(seq 1 100); do grep -q "Ctrl-C drains" $OUT/up.out && break; sleep 0.2; done
.venv/bin/llm-edge bench --url http://127.0.0.1:$PORT/v1 --model mock --concurrency 32 --duration 8 --unique-prompts 2>&1 | grep -iE "req/s|throughput|p50|p99" | head -4
kill -INT $UP; wait $UP
wc -l < $OUT/up.err
rm -rf "$OUT"
