#!/usr/bin/env bash
# Runs the SSE benchmark (service/benches/sse_bench.rs) with an open-files limit high enough for
# its idle-connection steps: the bench process and the api process it starts each hold one socket
# per SSE connection. Needs redis-server. Extra arguments go to `cargo bench`.
#   service/benches/run-sse-bench.sh
#   SSE_BENCH_STEPS=1000,5000,10000 SSE_BENCH_RATE=1000 SSE_BENCH_SECONDS=10 service/benches/run-sse-bench.sh
#   SSE_BENCH_WRITE_BASELINE=1 service/benches/run-sse-bench.sh   # record benches/sse_baseline.json
set -euo pipefail
cd "$(dirname "$0")/../.."

want=65536
hard="$(ulimit -Hn)"
if [ "$hard" != "unlimited" ] && [ "$hard" -lt "$want" ]; then
  want="$hard"
fi
ulimit -n "$want" || echo "run-sse-bench: could not raise the open-files limit (now $(ulimit -n))" >&2
echo "run-sse-bench: open-files limit $(ulimit -n)"

command -v redis-server >/dev/null 2>&1 || { echo "run-sse-bench: redis-server is missing (apt-get install redis-server)" >&2; exit 1; }

exec cargo bench -p flashcard-service --bench sse_bench "$@"
