#!/usr/bin/env bash
# Stops the test registry started by registry-up.sh (SIGTERM, then SIGKILL
# after a deadline). Keeps its data and credentials; `rm -rf .testenv` resets
# them. Succeeds when the registry is already down.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${DEPLOYER_TESTENV:-$(pwd)/.testenv}/registry"
PIDFILE="$dir/registry.pid"
DEADLINE="${REGISTRY_DOWN_TIMEOUT:-10}"

log() { printf '[registry-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
   && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$dir/config.yml"; then
  log "stopping docker-registry (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS - start >= DEADLINE )); then
      log "docker-registry still running after ${DEADLINE}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
else
  log "docker-registry not running"
fi
rm -f "$PIDFILE" "$(dirname "$dir")/registry.env"
