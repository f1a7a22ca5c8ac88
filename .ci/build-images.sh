#!/usr/bin/env bash
# Builds the two images with buildah from binaries that are already built, on a base assembled
# FROM scratch: no base image is pulled and no container runtime runs, so this works offline
# and unprivileged-enough for CI (vfs storage, chroot isolation).
#
#   base:     the glibc libraries the binaries link (from `ldd`), CA certificates,
#             /etc/passwd + /etc/group with nonroot (65532), nsswitch.conf, /tmp, /home/nonroot
#   operator: base + flashcard-operator   (config from operator/Dockerfile's final stage)
#   service:  base + flashcard-service    (config from service/Dockerfile's final stage)
#
# The Dockerfiles stay the way to build with a container engine (they compile in a Rust image
# and use distroless as the base); this script reads their final stage (LABEL, USER, EXPOSE,
# ENTRYPOINT, CMD, the COPY destination) so both paths produce the same image config.
#
# Usage: .ci/build-images.sh [--bin-dir DIR] [--tag TAG] [--archive-dir DIR]
#   --bin-dir      where flashcard-operator and flashcard-service are (default target/dist, from `cargo build --profile dist`);
#                  the images get stripped copies
#   --tag          image tag (default: the workspace version)
#   --archive-dir  also write <name>-<tag>.oci.tar (OCI archives: `skopeo copy
#                  oci-archive:... docker://...` or `podman load` push or load them)
# Environment: BUILDAH_ROOT / BUILDAH_RUNROOT select the image storage (default: buildah's).
# Prints the image references, one per line, on stdout.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="$repo/target/dist"
tag=""
archive_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --archive-dir) archive_dir="$2"; shift 2 ;;
    *) echo "build-images: unknown argument $1" >&2; exit 2 ;;
  esac
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
tag="${tag:-$version}"
revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"

buildah_cmd=(buildah --storage-driver vfs)
[ -n "${BUILDAH_ROOT:-}" ] && buildah_cmd+=(--root "$BUILDAH_ROOT")
[ -n "${BUILDAH_RUNROOT:-}" ] && buildah_cmd+=(--runroot "$BUILDAH_RUNROOT")
b() { "${buildah_cmd[@]}" "$@"; }

for bin in flashcard-operator flashcard-service; do
  [ -x "$bin_dir/$bin" ] || { echo "build-images: $bin_dir/$bin is missing (cargo build --profile dist first)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Symbols are not needed at run time (panics still name the location): strip copies.
mkdir -p "$work/bin"
for bin in flashcard-operator flashcard-service; do
  cp "$bin_dir/$bin" "$work/bin/$bin"
  if command -v strip >/dev/null 2>&1; then strip "$work/bin/$bin"; fi
done

# --- The base root filesystem -------------------------------------------------------------
root="$work/rootfs"
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/usr/local/bin"
chmod 1777 "$root/tmp"
# Every shared library either binary needs, at the path the dynamic loader looks for it.
libs="$(for bin in flashcard-operator flashcard-service; do ldd "$work/bin/$bin"; done \
  | awk '/=> \//{print $3} /^[ \t]*\/[^ ]+ \(/{print $1}' | sort -u)"
[ -n "$libs" ] || { echo "build-images: ldd found no libraries" >&2; exit 1; }
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# CA certificates: the OpenAI-compatible provider and rediss:// verify against them.
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "build-images: $ca is missing (apt-get install ca-certificates)" >&2; exit 1; }
cp "$ca" "$root$ca"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
# glibc >= 2.34 has files and dns built in; this makes the lookup order explicit.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
cp "$repo/LICENSE" "$root/LICENSE"

base="localhost/flashcards-base:$tag"
ctr="$(b from --quiet scratch)"
b copy --quiet "$ctr" "$root/" / >/dev/null
b copy --quiet --chown 65532:65532 "$ctr" "$root/home/nonroot" /home/nonroot >/dev/null
b config --user 65532:65532 --env SSL_CERT_FILE="$ca" "$ctr"
b commit --quiet --rm "$ctr" "$base" >/dev/null

# --- The images, configured like the Dockerfiles' final stages ----------------------------
# Prints the final stage's instruction $2 of Dockerfile $1 (continuation lines joined).
stage() {
  awk -v want="$2" '
    /^FROM /{final=""}
    { line=$0; if (cont!="") { line=cont " " line; cont="" } }
    /\\$/ { sub(/\\$/, "", line); cont=line; next }
    { split(line, w, " "); if (w[1]==want) final=final line "\n" }
    END { printf "%s", final }' "$1"
}

build_one() {
  local name="$1" dockerfile="$2"
  local image="ghcr.io/flashcards-dev/$name:$tag"
  local args=()
  # LABEL k="v" ... (the version label follows the tag actually built)
  while IFS= read -r kv; do
    local k="${kv%%=*}" v="${kv#*=}"
    v="${v#\"}"; v="${v%\"}"
    [ "$k" = "org.opencontainers.image.version" ] && v="$tag"
    args+=(--label "$k=$v")
  done < <(stage "$dockerfile" LABEL | grep -o '[a-z.]*="[^"]*"')
  args+=(--label "org.opencontainers.image.revision=$revision")
  local user port entrypoint cmd dest
  user="$(stage "$dockerfile" USER | awk '{print $2}' | tail -1)"
  port="$(stage "$dockerfile" EXPOSE | awk '{print $2}' | tail -1)"
  entrypoint="$(stage "$dockerfile" ENTRYPOINT | sed 's/^ENTRYPOINT *//' | tail -1)"
  cmd="$(stage "$dockerfile" CMD | sed 's/^CMD *//' | tail -1)"
  dest="$(stage "$dockerfile" COPY | awk '{print $NF}' | tail -1)"
  for v in user port entrypoint cmd dest; do
    [ -n "${!v}" ] || { echo "build-images: no $v in the final stage of $dockerfile" >&2; exit 1; }
  done
  case "$port" in */*) ;; *) port="$port/tcp" ;; esac
  local c
  c="$(b from --quiet "$base")"
  b copy --quiet --chmod 0755 "$c" "$work/bin/$name" "$dest" >/dev/null
  b config --user "$user" --port "$port" --entrypoint "$entrypoint" --cmd "$cmd" \
    --env SSL_CERT_FILE="$ca" "${args[@]}" "$c"
  b commit --quiet --rm "$c" "$image" >/dev/null
  if [ -n "$archive_dir" ]; then
    mkdir -p "$archive_dir"
    b push --quiet "$image" "oci-archive:$archive_dir/$name-$tag.oci.tar:$image" >/dev/null
  fi
  echo "$image"
}

build_one flashcard-operator "$repo/operator/Dockerfile"
build_one flashcard-service "$repo/service/Dockerfile"
