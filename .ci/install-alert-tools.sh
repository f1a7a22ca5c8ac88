#!/usr/bin/env bash
# Installs the alerting test tools (promtool, amtool, prometheus, prometheus-alertmanager) from the
# Debian packages, but only when one of them is missing. Idempotent; safe to call from CI every time.
set -euo pipefail

missing=0
for tool in promtool prometheus amtool prometheus-alertmanager; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-alert-tools: $tool is missing" >&2
    missing=1
  fi
done

if [ "$missing" -eq 0 ]; then
  echo "install-alert-tools: promtool, prometheus, amtool and prometheus-alertmanager are present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends prometheus prometheus-alertmanager

# The packages start no daemons in containers, but stop them if a service manager did start them:
# the tests run their own instances on loopback ports.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done

for tool in promtool prometheus amtool prometheus-alertmanager; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-alert-tools: $tool still missing" >&2; exit 1; }
done
echo "install-alert-tools: installed $(promtool --version 2>&1 | head -1)"
