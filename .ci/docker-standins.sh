#!/usr/bin/env bash
# Build local stand-ins for the base images that Dockerfile and docker-compose.yml name, from
# Debian packages: no image registry is reachable from CI, and those two files must stay what a
# real user runs. Root filesystems are cached under $CACHE and finished images are labelled with
# the hash of their inputs, so a second run does nothing (`--rootfs-only` just fills the cache).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${BULKPROC_CI_CACHE:-/var/lib/bulkproc-ci}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

# rootfs NAME PACKAGES: a cached tarball of a minimal Debian with PACKAGES installed.
rootfs() {
  local name=$1 packages=$2 dir="$CACHE/$1"
  if [ ! -f "$dir.tar" ]; then
    echo "debootstrap $name ($packages); takes a few minutes once"
    rm -rf "$dir.tmp"
    debootstrap --variant=minbase --include="$packages" "$SUITE" "$dir.tmp" "$MIRROR" >"$dir.log" 2>&1 ||
      { tail -n 20 "$dir.log" >&2; exit 1; }
    # Official images ship without apt lists; keep the stand-ins as lean.
    rm -rf "$dir.tmp"/var/lib/apt/lists/* "$dir.tmp"/var/cache/apt/*.bin "$dir.tmp"/var/cache/apt/archives/*.deb
    tar -C "$dir.tmp" -cf "$dir.tar.part" . && mv "$dir.tar.part" "$dir.tar" && rm -rf "$dir.tmp"
  fi
}

# standin TAG NAME CONTEXT: import NAME's root filesystem and finish it with CONTEXT/Dockerfile.
# The host's extra CA certificates go along (as extra-ca/): where egress passes through an
# intercepting proxy, pip inside image builds must trust it as the host does.
# The finished image carries the hash of its inputs, so an unchanged stand-in is not rebuilt.
standin() {
  local tag=$1 name=$2 context=$3 build hash
  build=$(mktemp -d)
  cp -r "$context"/. "$build"
  mkdir "$build/extra-ca"
  cp /usr/local/share/ca-certificates/*.crt "$build/extra-ca/" 2>/dev/null || true
  if [ ! -s "$CACHE/$name.tar.sha" ] || [ "$CACHE/$name.tar" -nt "$CACHE/$name.tar.sha" ]; then
    sha256sum <"$CACHE/$name.tar" | cut -c1-16 >"$CACHE/$name.tar.sha"
  fi
  hash="$(cat "$CACHE/$name.tar.sha")-$(cd "$build" && find . -type f | sort | xargs cat | sha256sum | cut -c1-16)"
  if [ "$(docker image inspect -f '{{ index .Config.Labels "bulkproc.standin" }}' "$tag" 2>/dev/null)" = "$hash" ]; then
    echo "stand-in $tag is current"
  else
    docker import "$CACHE/$name.tar" "bulkproc-ci/$name:rootfs" >/dev/null
    DOCKER_BUILDKIT=0 docker build --network host --label "bulkproc.standin=$hash" -t "$tag" "$build" \
      >"$CACHE/$name.build.log" 2>&1 || { tail -n 20 "$CACHE/$name.build.log" >&2; exit 1; }
    echo "stand-in $tag built"
  fi
  rm -rf "$build"
}

mkdir -p "$CACHE"
rootfs python python3,python3-venv,ca-certificates
rootfs postgres postgresql,ca-certificates
rootfs nginx nginx,ca-certificates
if [ "${1:-}" = "--rootfs-only" ]; then exit 0; fi
PYTHON_IMAGE=$(awk '$1 == "FROM" { print $2; exit }' Dockerfile)
POSTGRES_IMAGE=$(sed -n 's/^ *image: *\(postgres:[^ ]*\) *$/\1/p' docker-compose.yml | head -n 1)
NGINX_IMAGE=$(awk '$1 == "FROM" { print $2; exit }' deploy/proxy/Dockerfile)
standin "$PYTHON_IMAGE" python .ci/standins/python
standin "$POSTGRES_IMAGE" postgres .ci/standins/postgres
standin "$NGINX_IMAGE" nginx .ci/standins/nginx
