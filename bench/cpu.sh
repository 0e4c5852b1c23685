#!/usr/bin/env bash
# The ingress process's CPU time per cache hit (utime + stime from /proc over exactly N hits at c=64, after a
# 2,000-hit warm-up), for one checkout's `llm-edge up` (each with its own .venv). Less sensitive to other load
# on the machine than throughput: run it for two checkouts interleaved to compare them.
#   bench/cpu.sh /path/to/checkout-a 20000; bench/cpu.sh /path/to/checkout-b 20000
set -euo pipefail
checkout=$(cd "${1:?usage: bench/cpu.sh CHECKOUT [HITS]}" && pwd); n=${2:-20000}
bench=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/llm-edge
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(port); NATS=$(port); MONITOR=$(port)
cd "$checkout"
env -u LLM_EDGE_CONFIG PORT="$PORT" NATS_URL="nats://127.0.0.1:$NATS" NATS_MONITOR_PORT="$MONITOR" LOG_LEVEL=WARNING \
    .venv/bin/llm-edge up > /dev/null 2>&1 &
up=$!
trap 'kill -INT $up 2>/dev/null; wait $up 2>/dev/null' EXIT
for _ in $(seq 1 150); do
    curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health/ready" 2>/dev/null | grep -q 200 && break
    sleep 0.2
done
ingress=$(for p in $(pgrep -P $up); do tr '\0' ' ' < /proc/$p/cmdline | grep -q "cli ingress" && echo $p; done | head -1)
"$bench" bench --url "http://127.0.0.1:$PORT/v1" --model mock --concurrency 64 --requests 2000 > /dev/null  # warm-up
ticks() { awk '{print $14 + $15}' /proc/$ingress/stat; }
before=$(ticks)
"$bench" bench --url "http://127.0.0.1:$PORT/v1" --model mock --concurrency 64 --requests "$n" --warmup 0 | grep throughput
after=$(ticks)
hz=$(getconf CLK_TCK)
python3 -c "print('$checkout', 'ingress CPU per hit: %.0f us' % (($after - $before) / $hz / $n * 1e6))"
