#!/usr/bin/env bash
# Side-by-side queue benchmark (issue 11): BullMQ, apalis and this service on one redis-server, in the
# same run, with redis-benchmark LPUSH as the ceiling; prints one table (min / median / max of
# every figure over the rounds, the ratios the issue's targets ask for, client commands per job).
# What each part measures: service/benches/queue_bench.rs.
#
#   service/benches/run-queue-bench.sh
#   JOBS=10000 ROUNDS=3 service/benches/run-queue-bench.sh
#   CONNECTIONS=50 CONCURRENCY=50 BULK=50 BENCH_TIMEOUT_SECONDS=300 service/benches/run-queue-bench.sh
#
# Steps: installs npm `bullmq` and `ioredis` into target/bench-peers/ when they are missing
# (BULLMQ_VERSION, IOREDIS_VERSION; BENCH_PEERS_REINSTALL=1 reinstalls; never committed), builds
# the release binary once (`cargo build --release`) and benchmarks a copy of it, then builds and
# runs the orchestrator (`cargo bench --bench queue_bench`). Needs redis-server and
# redis-benchmark (Debian: redis-server, redis-tools), Node.js with npm for the BullMQ rows,
# crates.io for the apalis rows.
# Ctrl-C or a failure stops every process the benchmark started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
peers="${BENCH_PEERS_DIR:-$root/target/bench-peers}"
bullmq_version="${BULLMQ_VERSION:-6}"
ioredis_version="${IOREDIS_VERSION:-5}"

say() { echo "run-queue-bench: $*" >&2; }
need() {
  command -v "$1" >/dev/null 2>&1 || { say "$1 is missing ($2)"; exit 1; }
}
need cargo "install Rust"
need redis-server "apt-get install redis-server"
need redis-benchmark "apt-get install redis-tools"

# The BullMQ peer: optional, the table says when it is missing.
mkdir -p "$peers"
if [ "${BENCH_PEERS_REINSTALL:-0}" = 1 ] || [ ! -f "$peers/node_modules/bullmq/package.json" ] \
  || [ ! -f "$peers/node_modules/ioredis/package.json" ]; then
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    say "installing bullmq@$bullmq_version and ioredis@$ioredis_version into $peers"
    if ! npm install --prefix "$peers" --no-audit --no-fund --loglevel=error \
      "bullmq@$bullmq_version" "ioredis@$ioredis_version" >&2; then
      say "npm could not install bullmq/ioredis (registry unreachable?); the BullMQ rows will be missing"
    fi
  else
    say "node/npm not found (apt-get install nodejs npm); the BullMQ rows will be missing"
  fi
fi

# The apalis peer: optional as well, a small Rust program (service/benches/peers/apalis, its own
# Cargo.lock, outside the workspace) built into the same folder.
apalis_dir="$root/service/benches/peers/apalis"
export APALIS_PEER_BIN="$peers/apalis-target/release/apalis-bench-peer"
say "building the apalis peer"
if ! cargo build --release --locked --manifest-path "$apalis_dir/Cargo.toml" \
  --target-dir "$peers/apalis-target" >&2; then
  say "the apalis peer did not build (registry unreachable?); the apalis rows will be missing"
  rm -f "$APALIS_PEER_BIN"
fi

# The binary under test: the release build, copied so that the bench build below (which enables
# dev-dependency features and rewrites target/release/flashcard-service) cannot replace it.
say "building the release binary"
cargo build --release --locked -p flashcard-service --bin flashcard-service
mkdir -p "$peers/bin"
cp -f "$root/target/release/flashcard-service" "$peers/bin/flashcard-service"

export FLASHCARD_SERVICE_BIN="$peers/bin/flashcard-service"
export BENCH_PEERS_DIR="$peers"

# The orchestrator runs in its own process group, so an interrupt or a failure here can stop
# everything it started (redis-server, node, api, worker) by that group's id.
set -m
cargo bench --locked -p flashcard-service --bench queue_bench &
bench=$!
stop_bench() { kill -TERM -- "-$bench" 2>/dev/null || true; }
trap 'stop_bench; wait "$bench" 2>/dev/null || true; exit 130' INT TERM
trap 'kill -KILL -- "-$bench" 2>/dev/null || true' EXIT
status=0
wait "$bench" || status=$?
exit "$status"
