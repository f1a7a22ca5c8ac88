#!/usr/bin/env bash
# Runs every check of the project on a fresh machine: installs the test tools when missing,
# then formatting, clippy, all Rust tests (store conformance on memory and real Redis, API,
# SSE, browser, operator, property tests of request validation, alert rules with
# promtool/amtool and a real Prometheus + Alertmanager end to end, manifests), contract fuzzing
# with schemathesis against the OpenAPI document (.ci/schemathesis.sh), the Helm lint, and the
# image test (both images built with buildah from release binaries and run from their own root
# filesystem; .ci/test-images.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

.ci/install-test-tools.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-run
# The image test's binaries (`dist` profile) build beside the test run, which mostly waits on
# the processes and timers it tests: in a target directory of their own (neither cargo waits on the
# other's lock) and at a low priority, so the tests keep the CPU they ask for.
release_target="${CI_RELEASE_TARGET:-$PWD/target/ci-release}"
release_log="$(mktemp)"
release_start=$(date +%s)
CARGO_TARGET_DIR="$release_target" nice -n 15 \
  cargo build --profile dist --locked -p flashcard-operator -p flashcard-service --bins \
  >"$release_log" 2>&1 &
release_pid=$!
trap 'kill "$release_pid" 2>/dev/null || true' EXIT
cargo test --workspace --locked
# Contract fuzzing of the HTTP API against its OpenAPI document (standalone, and api + worker on
# Redis); about 1.5 minutes.
.ci/schemathesis.sh
.ci/helm-lint.sh
if ! wait "$release_pid"; then
  cat "$release_log" >&2
  echo "release build failed" >&2
  exit 1
fi
echo "release build done $(( $(date +%s) - release_start )) s after it started (beside the tests)"
.ci/test-images.sh --bin-dir "$release_target/dist"
echo "all checks passed"
