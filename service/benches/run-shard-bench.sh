#!/usr/bin/env bash
# Runs the shard benchmark (service/benches/shard_bench.rs): 8 pipelines on one Redis node, then
# the same 8 on a 3-master Redis Cluster, same machine, same run; prints which slot and master
# each pipeline landed on, jobs/s for both, and each Redis node's share of the work. Needs
# redis-server and redis-cli (apt-get install redis-server redis-tools). Run by hand; not part of
# the test command. Extra arguments go to `cargo bench`.
#   service/benches/run-shard-bench.sh
#   SHARD_BENCH_JOBS=4000 SHARD_BENCH_CLIENTS=16 SHARD_BENCH_CONCURRENCY=8 service/benches/run-shard-bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || { echo "run-shard-bench: $tool is missing (apt-get install redis-server redis-tools)" >&2; exit 1; }
done

exec cargo bench -p flashcard-service --bench shard_bench "$@"
