#!/usr/bin/env bash
# Runs the batch benchmark (service/benches/batch_bench.rs): redis-server and one api process of
# the release binary; single POSTs against batches of 100, in the same run. Needs redis-server.
#   service/benches/run-batch-bench.sh
#   BATCH_BENCH_JOBS=10000 BATCH_BENCH_CONCURRENCY=64 service/benches/run-batch-bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v redis-server >/dev/null 2>&1 || { echo "run-batch-bench: redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
exec cargo bench -p flashcard-service --bench batch_bench "$@"
