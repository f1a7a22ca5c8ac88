#!/usr/bin/env bash
# Creates or reuses a venv with schemathesis (PyPI) for .ci/schemathesis.sh: SCHEMATHESIS_VENV,
# default .venv-schemathesis at the repo root (gitignored). Pinned, so a new release cannot
# change what passes.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SCHEMATHESIS_VENV:-$repo/.venv-schemathesis}"
version="4.32.5"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "version $version"; then
  echo "install-schemathesis: setting up $venv (schemathesis $version)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
"$venv/bin/st" --version
