#!/usr/bin/env bash
# Start a Docker daemon that works in the CI sandbox, unless one already answers.
# The sandbox allows no bridge and no iptables; containers then talk over user-defined networks
# and publish ports on loopback, which is all the compose stack and its test need.
set -euo pipefail

DATA_ROOT=${BULKPROC_DOCKER_ROOT:-/var/lib/bulkproc-docker}
LOG=${BULKPROC_DOCKER_LOG:-/var/log/bulkproc-dockerd.log}

if docker info >/dev/null 2>&1; then
  echo "docker daemon already running"
  exit 0
fi
mkdir -p "$DATA_ROOT"
nohup dockerd --bridge=none --iptables=false \
  --data-root "$DATA_ROOT/data" --exec-root "$DATA_ROOT/exec" \
  --pidfile "$DATA_ROOT/dockerd.pid" >"$LOG" 2>&1 &
deadline=$((SECONDS + 60))
until docker info >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "dockerd did not answer within 60 s; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  sleep 0.5
done
echo "docker daemon started (log: $LOG)"
