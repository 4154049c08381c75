#!/usr/bin/env bash
# Print a DOCKER_CONFIG folder whose CLI plugins include Compose v2, fetching it once.
# Debian 12 packages only Compose v1, and docker-compose.yml must work with both. Debian 13's
# docker-compose package is v2 (a static binary that needs only libc), so apt fetches it from
# trixie into a private cache; nothing is installed system-wide.
set -euo pipefail

CACHE=${BULKPROC_CI_CACHE:-/var/lib/bulkproc-ci}
CONFIG=$CACHE/docker-config
plugin=$CONFIG/cli-plugins/docker-compose

if [ ! -x "$plugin" ]; then
  apt=$CACHE/trixie-apt
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$CONFIG/cli-plugins"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$apt/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1)
  apt-get "${opts[@]}" -qq update >&2
  (cd "$apt" && apt-get "${opts[@]}" -qq download docker-compose 2>/dev/null >&2)
  dpkg-deb --fsys-tarfile "$apt"/docker-compose_2*.deb |
    tar -xO ./usr/libexec/docker/cli-plugins/docker-compose >"$plugin.part"
  chmod +x "$plugin.part" && mv "$plugin.part" "$plugin"
  rm -rf "$apt"
fi
echo "$CONFIG"
