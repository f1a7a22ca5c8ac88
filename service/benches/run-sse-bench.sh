#!/usr/bin/env bash
# Runs the SSE benchmark (service/benches/sse_bench.rs): redis-server, one api and one worker
# process of the release binary, SSE clients spread over several client processes. Raises the
# open-files limit as far as the hard limit allows (each client process and the api hold one
# socket per follower; the api raises its own soft limit too). Needs redis-server. Takes about
# 3-4 minutes (60 s of it waiting to see how much memory the api gives back). Extra arguments
# go to `cargo bench`.
#   service/benches/run-sse-bench.sh
#   SSE_BENCH_STEPS=1000,10000,18000 SSE_BENCH_RATE=1000 SSE_BENCH_SECONDS=10 service/benches/run-sse-bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

hard="$(ulimit -Hn)"
want=65536
if [ "$hard" != "unlimited" ] && [ "$hard" -lt "$want" ]; then
  want="$hard"
fi
ulimit -n "$want" || echo "run-sse-bench: could not raise the open-files limit (now $(ulimit -n))" >&2
echo "run-sse-bench: open-files limit $(ulimit -n)"

command -v redis-server >/dev/null 2>&1 || { echo "run-sse-bench: redis-server is missing (apt-get install redis-server)" >&2; exit 1; }

exec cargo bench -p flashcard-service --bench sse_bench "$@"
