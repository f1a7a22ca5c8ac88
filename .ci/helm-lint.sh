#!/usr/bin/env bash
# Lint charts/flashcard-operator with the real Helm library (helm-sdkpy = Helm v4 as a shared
# library, from PyPI) for the chart's defaults and every charts/flashcard-operator/ci/*.yaml.
# Creates or reuses a venv (HELM_VENV, default .venv-helm at the repo root, gitignored).
# Exit status: non-zero on any lint error (severity 3), lint exception or failed self-test.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HELM_VENV:-$repo/.venv-helm}"

if ! "$venv/bin/python" -c 'import helm_sdkpy, yaml, jsonschema' >/dev/null 2>&1; then
  echo "helm-lint: setting up $venv"
  python3 -m venv "$venv"
  # helm-sdkpy declares Python >= 3.12 but works on 3.11.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --ignore-requires-python \
    helm-sdkpy pyyaml jsonschema
fi

exec "$venv/bin/python" "$repo/.ci/helm-lint.py" "$@"
