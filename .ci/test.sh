#!/usr/bin/env bash
# Runs every check of the project on a fresh machine: installs the test tools when missing,
# then formatting, clippy, all Rust tests (store conformance on memory and real Redis, API,
# SSE, browser, operator, alert rules with promtool/amtool and a real Prometheus + Alertmanager
# end to end, manifests), and the Helm lint.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

.ci/install-test-tools.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
.ci/helm-lint.sh
echo "all checks passed"
