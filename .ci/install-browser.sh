#!/usr/bin/env bash
# Installs Debian's Chromium for the demo-page browser test (service/tests/it/demo_page_browser.rs),
# but only when it is missing. Idempotent; safe to call from CI every time.
# The test looks for $CHROMIUM, then /usr/bin/chromium, then `chromium` on PATH, and fails (never
# skips) when none is there.
set -euo pipefail

find_chromium() {
  if [ -n "${CHROMIUM:-}" ] && [ -x "${CHROMIUM}" ]; then echo "$CHROMIUM"; return 0; fi
  if [ -x /usr/bin/chromium ]; then echo /usr/bin/chromium; return 0; fi
  command -v chromium 2>/dev/null && return 0
  return 1
}

if bin="$(find_chromium)"; then
  echo "install-browser: chromium present at $bin ($("$bin" --version 2>/dev/null | head -1))"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core

bin="$(find_chromium)" || { echo "install-browser: chromium still missing after apt-get install" >&2; exit 1; }
echo "install-browser: installed $("$bin" --version 2>/dev/null | head -1) at $bin"
