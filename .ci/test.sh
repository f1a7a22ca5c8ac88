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
cargo test --workspace --locked
# Contract fuzzing of the HTTP API against its OpenAPI document (standalone, and api + worker on
# Redis); about 1.5 minutes.
.ci/schemathesis.sh
.ci/helm-lint.sh
.ci/test-images.sh
echo "all checks passed"
