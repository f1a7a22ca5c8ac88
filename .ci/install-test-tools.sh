#!/usr/bin/env bash
# Installs every tool the tests use, only when missing: redis-server, redis-sentinel, redis-cli,
# Prometheus tools (promtool, prometheus, amtool, prometheus-alertmanager), Chromium, kubectl,
# buildah and faketime.
# Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "install-test-tools: installing redis-server"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The tests start their own servers on free loopback ports; stop a packaged daemon if any.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop redis-server 2>/dev/null || true; fi
fi
if ! command -v redis-sentinel >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  # The Redis Cluster and Sentinel tests start sentinels and build clusters with redis-cli.
  echo "install-test-tools: installing redis-sentinel and redis-tools"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends redis-sentinel redis-tools >/dev/null
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop redis-sentinel 2>/dev/null || true; fi
fi
if ! command -v openssl >/dev/null 2>&1; then
  # Makes the throwaway CA of the Redis TLS test.
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
if ! command -v kubectl >/dev/null 2>&1; then
  # The machine image ships kubectl; Debian's (older) client is the fallback for `kubectl kustomize`.
  echo "install-test-tools: installing kubernetes-client (kubectl)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
if ! command -v buildah >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
   || [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then
  # The image test (.ci/test-images.sh) builds both images offline with buildah (vfs storage,
  # chroot isolation) onto a base assembled from scratch, which takes the host's CA bundle.
  echo "install-test-tools: installing buildah, ca-certificates and curl"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends buildah ca-certificates curl >/dev/null
fi
if ! command -v faketime >/dev/null 2>&1; then
  # The clock-skew test runs a worker whose clock is a minute off (libfaketime).
  echo "install-test-tools: installing faketime"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends faketime >/dev/null
fi
"$here/install-alert-tools.sh"
"$here/install-browser.sh"
for tool in redis-server redis-sentinel redis-cli promtool amtool prometheus prometheus-alertmanager chromium kubectl openssl buildah chroot curl faketime; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-test-tools: $tool is still missing" >&2; exit 1; }
done
echo "install-test-tools: all test tools present"
