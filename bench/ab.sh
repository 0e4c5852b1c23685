#!/usr/bin/env bash
# One checkout's `llm-edge up` (the built-in mock provider, no upstream), measured by `llm-edge bench` at
# c=64: cache hits, then misses (unique prompts, Cache-Control: no-store). Run it for two checkouts back to
# back (each with its own .venv) to compare them on one machine at one time:
#   bench/ab.sh /path/to/checkout-a WARNING; bench/ab.sh /path/to/checkout-b WARNING
# A checkout without a .venv of its own runs with this one's (its code first on PYTHONPATH).
set -euo pipefail
checkout=$(cd "${1:?usage: bench/ab.sh CHECKOUT [LOG_LEVEL] [SECONDS]}" && pwd)
level=${2:-WARNING}
seconds=${3:-5}
bench=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/llm-edge
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(port); NATS=$(port); MONITOR=$(port)
cd "$checkout"
if [ -x .venv/bin/llm-edge ]; then run=(.venv/bin/llm-edge); else run=(env PYTHONPATH="$checkout" "$(dirname "$bench")/python" -m llm_edge.cli); fi
env -u LLM_EDGE_CONFIG PORT="$PORT" NATS_URL="nats://127.0.0.1:$NATS" NATS_MONITOR_PORT="$MONITOR" LOG_LEVEL="$level" \
    "${run[@]}" up > /dev/null 2>&1 &
up=$!
trap 'kill -INT $up 2>/dev/null; wait $up 2>/dev/null' EXIT
for _ in $(seq 1 150); do
    curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health/ready" 2>/dev/null | grep -q 200 && break
    sleep 0.2
done
echo "$checkout ($(git -C "$checkout" rev-parse --short HEAD)), LOG_LEVEL=$level"
echo "hits:";   "$bench" bench --url "http://127.0.0.1:$PORT/v1" --model mock --concurrency 64 --duration "$seconds" | grep -E "throughput|latency"
echo "misses:"; "$bench" bench --url "http://127.0.0.1:$PORT/v1" --model mock --concurrency 64 --duration "$seconds" \
    --unique-prompts --header "Cache-Control: no-store" | grep -E "throughput|latency"
