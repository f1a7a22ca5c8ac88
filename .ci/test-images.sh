#!/usr/bin/env bash
# The image test of .ci/test.sh: builds both images with .ci/build-images.sh from release
# binaries (built here if missing or older than the sources), then checks each image the way a
# cluster would use it, without a container runtime:
#
#   - config: user 65532:65532, the exposed port, entrypoint, OCI labels (source, licenses,
#     version = workspace version, revision, title, description), size < 40 MB;
#   - it mounts the image (`buildah mount`) and runs the entrypoint inside the image's own root
#     filesystem as the image's user (`chroot --userspec=65532:65532`): `--help` for both, the
#     operator prints its CRD, and the service in `standalone` mode answers /healthz, /readyz
#     and accepts a job on a loopback port. The binaries find their libraries, CA bundle and
#     user in the image, not on the host.
#
# Needs root or `buildah unshare` (chroot and mount); re-executes itself under `buildah
# unshare` when not root. Storage is a throwaway vfs store under $TMPDIR.
# Usage: .ci/test-images.sh [--bin-dir DIR]   (DIR: use binaries built elsewhere)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" -ne 0 ] && [ -z "${_FC_IMAGES_UNSHARED:-}" ]; then
  exec env _FC_IMAGES_UNSHARED=1 buildah unshare "$0" "$@"
fi
bin_dir=""
if [ "${1:-}" = "--bin-dir" ]; then bin_dir="$2"; fi

max_bytes=$((40 * 1000 * 1000))
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
fail() { echo "test-images: FAIL: $*" >&2; exit 1; }
chroot_bin="$(command -v chroot)" || fail "chroot is missing (coreutils)"

if [ -z "$bin_dir" ]; then
  # Release binaries, as the Dockerfiles build them (the debug ones of `cargo test` are bigger
  # than the image budget). Cargo skips the build when target/dist is current.
  start=$(date +%s)
  cargo build --profile dist --locked -p flashcard-operator -p flashcard-service --bins
  echo "test-images: dist build took $(( $(date +%s) - start )) s"
  bin_dir="$repo/target/dist"
fi

store="$(mktemp -d "${TMPDIR:-/tmp}/fc-images.XXXXXX")"
export BUILDAH_ROOT="$store/root" BUILDAH_RUNROOT="$store/run"
b() { buildah --storage-driver vfs --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" "$@"; }
containers=()
pids=()
cleanup() {
  # Each pid is the background subshell around `in_image`; the service it started (env, chroot
  # and the binary exec into one process) is its child, so stop that first, then the subshell.
  for p in "${pids[@]}"; do
    pkill -TERM -P "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for c in "${containers[@]}"; do b umount "$c" >/dev/null 2>&1 || true; b rm "$c" >/dev/null 2>&1 || true; done
  b rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$store" 2>/dev/null || true
}
trap cleanup EXIT

start=$(date +%s)
mapfile -t images < <("$repo/.ci/build-images.sh" --bin-dir "$bin_dir")
echo "test-images: built ${images[*]} in $(( $(date +%s) - start )) s"
[ "${#images[@]}" -eq 2 ] || fail "expected two images, got: ${images[*]}"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# check_config IMAGE NAME PORT
check_config() {
  local image="$1" name="$2" port="$3"
  FC_INSPECT="$(b inspect --type image "$image")" FC_IMAGE="$image" FC_NAME="$name" \
    FC_PORT="$port" FC_VERSION="$version" python3 - <<'PY' || fail "config of $image"
import json, os, sys
image, name, port, version = (os.environ[k] for k in ("FC_IMAGE", "FC_NAME", "FC_PORT", "FC_VERSION"))
cfg = json.loads(os.environ["FC_INSPECT"])["OCIv1"]["config"]
problems = []
if cfg.get("User") != "65532:65532":
    problems.append("user %r" % cfg.get("User"))
if port + "/tcp" not in (cfg.get("ExposedPorts") or {}):
    problems.append("exposed ports %r" % cfg.get("ExposedPorts"))
if cfg.get("Entrypoint") != ["/usr/local/bin/" + name]:
    problems.append("entrypoint %r" % cfg.get("Entrypoint"))
labels = cfg.get("Labels") or {}
want = {
    "org.opencontainers.image.source": "https://github.com/flashcards-dev/flashcard-pipeline",
    "org.opencontainers.image.licenses": "Apache-2.0",
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.title": name,
}
for k, v in want.items():
    if labels.get(k) != v:
        problems.append("label %s=%r, want %r" % (k, labels.get(k), v))
for k in ("org.opencontainers.image.revision", "org.opencontainers.image.description"):
    if not labels.get(k):
        problems.append("label %s missing" % k)
if problems:
    sys.exit(image + ": " + "; ".join(problems))
print("test-images: %s: user 65532:65532, port %s/tcp, entrypoint and labels ok" % (image, port))
PY
}

# mount_image IMAGE -> prints the mount point of a new working container
mount_image() {
  local c
  c="$(b from --quiet "$1")"
  containers+=("$c")
  b mount "$c"
}

# in_image MNT CMD... : runs CMD inside the image's root filesystem as its user
in_image() {
  local mnt="$1"; shift
  # A clean environment: nothing of the host's leaks in (the image sets SSL_CERT_FILE too).
  env -i PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    "$chroot_bin" --userspec=65532:65532 "$mnt" "$@"
}

check_rootfs() {
  local image="$1" mnt="$2" name="$3"
  local bytes
  bytes="$(du -sb "$mnt" | cut -f1)"
  local gz
  gz="$(tar -C "$mnt" -cf - . | gzip -6 | wc -c)"
  echo "test-images: $image: $((bytes / 1000)) kB unpacked, $((gz / 1000)) kB gzipped"
  [ "$bytes" -lt "$max_bytes" ] || fail "$image is $bytes bytes (limit $max_bytes)"
  grep -q '^nonroot:x:65532:65532:' "$mnt/etc/passwd" || fail "$image: no nonroot user"
  grep -q '^nonroot:x:65532:' "$mnt/etc/group" || fail "$image: no nonroot group"
  [ -s "$mnt/etc/ssl/certs/ca-certificates.crt" ] || fail "$image: no CA bundle"
  [ "$(stat -c %a "$mnt/tmp")" = 1777 ] || fail "$image: /tmp is not 1777"
  # Root-owned 0755: the nonroot user runs the binary but cannot change it.
  [ "$(stat -c %u:%a "$mnt/usr/local/bin/$name")" = 0:755 ] \
    || fail "$image: /usr/local/bin/$name is $(stat -c %u:%a "$mnt/usr/local/bin/$name"), want 0:755"
}

for image in "${images[@]}"; do
  case "$image" in
    */flashcard-operator:*)
      check_config "$image" flashcard-operator 8080
      mnt="$(mount_image "$image")"
      check_rootfs "$image" "$mnt" flashcard-operator
      out="$(in_image "$mnt" /usr/local/bin/flashcard-operator --help)"
      grep -q "Operator for FlashcardPipeline resources" <<<"$out" || fail "operator --help: $out"
      out="$(in_image "$mnt" /usr/local/bin/flashcard-operator --version)"
      grep -q "$version" <<<"$out" || fail "operator --version: $out"
      in_image "$mnt" /usr/local/bin/flashcard-operator crd | grep -q "kind: CustomResourceDefinition" \
        || fail "operator crd"
      # `run` outside a cluster must fail cleanly (no panic, a hint), as the image's user.
      if err="$(in_image "$mnt" /usr/local/bin/flashcard-operator run --listen 127.0.0.1:0 2>&1)"; then
        fail "operator run without a cluster succeeded"
      fi
      grep -q "no Kubernetes configuration" <<<"$err" || fail "operator run: $err"
      echo "test-images: $image: --help, --version, crd and run (no cluster: clean error) ok"
      ;;
    */flashcard-service:*)
      check_config "$image" flashcard-service 3001
      mnt="$(mount_image "$image")"
      check_rootfs "$image" "$mnt" flashcard-service
      out="$(in_image "$mnt" /usr/local/bin/flashcard-service --help)"
      grep -q "standalone" <<<"$out" || fail "service --help: $out"
      port="$(free_port)"
      log="$store/standalone.log"
      # No drain window: the cleanup's SIGTERM should stop it at once.
      in_image "$mnt" /usr/local/bin/flashcard-service standalone \
        --listen "127.0.0.1:$port" --log-format text --drain-seconds 0 >"$log" 2>&1 &
      pids+=("$!")
      ok=""
      for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
      done
      [ -n "$ok" ] || { cat "$log" >&2; fail "standalone never answered /healthz"; }
      curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || fail "standalone /readyz"
      code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/api/ai/generate-flashcards" \
        -H 'content-type: application/json' \
        -d '{"content":"Mitochondria are the powerhouse of the cell.","subject":"biology","topic":"cells","userId":"ci"}')"
      [ "$code" = 202 ] || fail "standalone POST /api/ai/generate-flashcards: HTTP $code"
      owner="$(ps -o user= -p "$(pgrep -f "flashcard-service standalone --listen 127.0.0.1:$port" | head -1)" 2>/dev/null || true)"
      case "$owner" in 65532|nonroot|"") ;; *) fail "standalone runs as $owner" ;; esac
      echo "test-images: $image: --help, standalone /healthz /readyz and a 202 job on 127.0.0.1:$port ok"
      ;;
    *) fail "unexpected image $image" ;;
  esac
done
echo "test-images: both images ok"
