#!/usr/bin/env bash
# Contract fuzzing of the HTTP API with schemathesis, driven by the OpenAPI document the binary
# serves (GET /api/openapi.json), against two real deployments it starts on loopback:
#
#   1. `standalone` (in-memory store, `body` identity: the seed's behaviour);
#   2. `api` + `worker` on a real redis-server, `api-key` identity;
#   3. a second `api` on that Redis and worker, `proxy` identity.
#
# Every check runs (server errors, status codes, content types, headers and bodies against the
# document, negative data rejected, positive data accepted, unsupported methods, ignored auth),
# in every phase (examples, coverage, fuzzing, stateful: jobs submitted and followed through the
# links schemathesis infers). It fails on any failure, and on `panicked` in any process's stderr.
# The SSE stream is fuzzed too: every stream of a real job ends after its terminal event (the
# local provider finishes a job in milliseconds), so no request long-polls.
#
# Not fuzzed: the console's feed (`/api/console/events`), a stream that by design lasts while
# the client stays; its handler is covered by tests/console_browser.rs and the unit tests.
#
# One worker: hypothesis parses lambdas with `ast.parse`, which CPython 3.11 (the machine's
# python3) can break from two threads ("AST constructor recursion depth mismatch").
# Bounded: SCHEMATHESIS_EXAMPLES test cases per operation and phase (default 100), a fixed seed
# (SCHEMATHESIS_SEED) so a run is reproducible; about 45 s per target on 2 cores.
# Logs: $SCHEMATHESIS_OUT (default target/schemathesis).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
examples="${SCHEMATHESIS_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-20261}"
out="${SCHEMATHESIS_OUT:-$repo/target/schemathesis}"
venv="${SCHEMATHESIS_VENV:-$repo/.venv-schemathesis}"

.ci/install-schemathesis.sh
# The binary of the test build (`cargo test --workspace` builds it with the same features), so
# after .ci/test.sh's cargo test this compiles nothing.
cargo test --locked -q --workspace --no-run
bin="$repo/target/debug/flashcard-service"
rm -rf "$out"
mkdir -p "$out"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ok() {
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "schemathesis: $1 did not answer 200" >&2
  return 1
}

# Starts the service in the background: start NAME LOG ARGS...; sets $started to its pid.
start() {
  local name="$1" log="$2"
  shift 2
  RUST_LOG="${RUST_LOG:-warn}" "$bin" "$@" --log-format text >"$log" 2>&1 &
  started=$!
  pids+=("$started")
  echo "schemathesis: started $name (pid $started)"
}

# Stops a process with SIGTERM and checks it exited cleanly.
stop() {
  local pid="$1" name="$2"
  kill -TERM "$pid" 2>/dev/null || true
  local status=0
  wait "$pid" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "schemathesis: $name exited with status $status after SIGTERM" >&2
    failed=1
  fi
}

failed=0
total_cases=0

# Runs schemathesis against one base URL: fuzz NAME URL [extra st args...].
fuzz() {
  local name="$1" base="$2"
  shift 2
  local report="$out/$name.txt"
  local started_at=$SECONDS
  echo "schemathesis: fuzzing $name at $base ($examples examples per operation, seed $seed)"
  local status=0
  # From $out: schemathesis keeps its replay files in ./.schemathesis.
  (cd "$out" && "$venv/bin/st" --config-file "$repo/.ci/schemathesis.toml" --no-color run \
    "$base/api/openapi.json" \
    --checks all --max-examples "$examples" --seed "$seed" --request-timeout 20 \
    --workers 1 --report junit --report-junit-path "$out/$name.junit.xml" \
    --exclude-path /api/console/events \
    "$@") >"$report" 2>&1 || status=$?
  local cases
  cases="$(grep -Eo '[0-9]+ generated' "$report" | grep -Eo '[0-9]+' | tail -1 || true)"
  total_cases=$((total_cases + ${cases:-0}))
  echo "schemathesis: $name: exit $status, ${cases:-?} test cases, $((SECONDS - started_at)) s"
  # The phases, and everything from the first failure or error on.
  grep -v '^\s*$' "$report" | sed -n '/Operations:/p;/Coverage\|Fuzzing\|Stateful\|passed\|failed\|error/p;/FAILURES\|ERRORS/,$p' \
    | awk '!seen[$0]++' | head -300
  if [ "$status" -ne 0 ]; then failed=1; fi
}

check_logs() {
  local log
  for log in "$@"; do
    if grep -n "panicked" "$log"; then
      echo "schemathesis: a panic in $log" >&2
      failed=1
    fi
  done
}

admin_token="fuzz-admin-token-$RANDOM$RANDOM"

# 1. standalone, memory store, body identity.
port="$(free_port)"
# No drain window (--drain-seconds 0): nothing routes by readiness here.
start standalone "$out/standalone.log" standalone --listen "127.0.0.1:$port" --admin-token "$admin_token" \
  --drain-seconds 0
standalone_pid=$started
wait_ok "http://127.0.0.1:$port/healthz"
fuzz standalone "http://127.0.0.1:$port" -H "Authorization: Bearer $admin_token"
curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || { echo "schemathesis: standalone stopped answering" >&2; failed=1; }
stop "$standalone_pid" standalone

# 2. api + worker on redis-server, api-key identity.
redis_port="$(free_port)"
redis_dir="$(mktemp -d)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" \
  >"$out/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
client_key="fuzz-client-key-$RANDOM$RANDOM"
keys_file="$out/api-keys"
printf '%s fuzzer\n' "$(printf %s "$client_key" | sha256sum | cut -d' ' -f1)" >"$keys_file"
redis_url="redis://127.0.0.1:$redis_port/"
api_port="$(free_port)"
worker_port="$(free_port)"
start worker "$out/worker.log" worker --listen "127.0.0.1:$worker_port" --redis-url "$redis_url" \
  --pipeline fuzz
worker_pid=$started
start api "$out/api.log" api --listen "127.0.0.1:$api_port" --redis-url "$redis_url" --pipeline fuzz \
  --admin-token "$admin_token" --client-identity api-key --api-keys-file "$keys_file" --drain-seconds 0
api_pid=$started
wait_ok "http://127.0.0.1:$worker_port/healthz"
wait_ok "http://127.0.0.1:$api_port/readyz"
fuzz api-redis "http://127.0.0.1:$api_port" -H "Authorization: Bearer $admin_token" \
  -H "X-API-Key: $client_key"
curl -fsS -o /dev/null "http://127.0.0.1:$api_port/healthz" || { echo "schemathesis: api stopped answering" >&2; failed=1; }
stop "$api_pid" api

# 3. api in proxy identity on the same Redis and worker: the client is the header an
# authenticating proxy at a trusted address (loopback here) sets.
proxy_port="$(free_port)"
start api-proxy "$out/api-proxy.log" api --listen "127.0.0.1:$proxy_port" --redis-url "$redis_url" \
  --pipeline fuzz --admin-token "$admin_token" --client-identity proxy \
  --identity-header X-Forwarded-User --trusted-proxies 127.0.0.1 --drain-seconds 0
proxy_pid=$started
wait_ok "http://127.0.0.1:$proxy_port/readyz"
fuzz api-proxy "http://127.0.0.1:$proxy_port" -H "Authorization: Bearer $admin_token" \
  -H "X-Forwarded-User: fuzzer@example.org"
curl -fsS -o /dev/null "http://127.0.0.1:$proxy_port/healthz" || { echo "schemathesis: proxy api stopped answering" >&2; failed=1; }
stop "$proxy_pid" api-proxy
stop "$worker_pid" worker
kill "$redis_pid" 2>/dev/null || true
wait "$redis_pid" 2>/dev/null || true
rm -rf "$redis_dir"

check_logs "$out/standalone.log" "$out/api.log" "$out/api-proxy.log" "$out/worker.log"
if [ "$failed" -ne 0 ]; then
  echo "schemathesis: FAILED (reports and logs in $out)" >&2
  exit 1
fi
echo "schemathesis: $total_cases test cases, no failures, no panics"
