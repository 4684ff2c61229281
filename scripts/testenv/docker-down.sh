#!/usr/bin/env bash
# Stops the test Docker engine started by docker-up.sh (SIGTERM, then SIGKILL
# after a deadline) and the containerd shims it spawned. Succeeds when the
# engine is already down.
set -euo pipefail
cd "$(dirname "$0")/../.."

PIDFILE=/run/docker-test.pid
SOCK=/run/docker-test.sock
EXEC_ROOT=/run/docker-test
DEADLINE="${DOCKER_DOWN_TIMEOUT:-20}"

log() { printf '[docker-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Is $1 our dockerd? (guards against a stale pid file naming another process)
ours() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "--pidfile $PIDFILE"; }

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null || ! ours "$pid"; then
  # No usable pid file: look for a dockerd started with our pid file anyway.
  pid="$(pgrep -f -- "dockerd.*--pidfile $PIDFILE" | head -n1 || true)"
fi

if [ -n "$pid" ]; then
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS - start >= DEADLINE )); then
      log "dockerd still running after ${DEADLINE}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
else
  log "dockerd not running"
fi

# The containerd it managed and any shims left behind (killed daemon, or
# containers with restart policies) are recognisable by our exec root.
leftovers="$(pgrep -f -- "containerd.*$EXEC_ROOT/" || true)"
if [ -n "$leftovers" ]; then
  log "removing leftover containerd processes: $(echo $leftovers)"
  kill -TERM $leftovers 2>/dev/null || true
  start=$SECONDS
  while pgrep -f -- "containerd.*$EXEC_ROOT/" >/dev/null; do
    if (( SECONDS - start >= 10 )); then
      kill -KILL $(pgrep -f -- "containerd.*$EXEC_ROOT/") 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
fi
rm -f "$PIDFILE" "$SOCK" .testenv/docker.env
