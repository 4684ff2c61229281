#!/usr/bin/env bash
# Stops the Docker 29 engine of docker29-up.sh: dockerd, then its containerd
# and the shims it left (SIGTERM, SIGKILL after a deadline), and removes its
# bridge. Succeeds when it is already down. Data roots stay (images and build
# cache survive, as the other engine's do).
set -euo pipefail
cd "$(dirname "$0")/../.."

SOCK=/run/docker29.sock
PIDFILE=/run/docker29.pid
STATE=/run/docker29-containerd
CTRD_PIDFILE=/run/docker29-containerd.pid
BRIDGE=docker29br0
DEADLINE="${DOCKER29_DOWN_TIMEOUT:-20}"

log() { printf '[docker29-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# stop NAME PID: SIGTERM, then SIGKILL after the deadline.
stop() {
  local name="$1" pid="$2" start=$SECONDS
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS - start >= DEADLINE )); then
      log "$name still running after ${DEADLINE}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
}
# ours PIDFILE MARK: the pid in PIDFILE if that process has MARK in its argv, else
# the first process that does (a lost pid file).
ours() {
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"; then
    echo "$pid"
  else
    pgrep -f -- "$2" | head -n1 || true
  fi
}

pid="$(ours "$PIDFILE" "dockerd.*--pidfile $PIDFILE")"
if [ -n "$pid" ]; then stop dockerd "$pid"; else log "dockerd not running"; fi
pid="$(ours "$CTRD_PIDFILE" "containerd --config $STATE/containerd.toml")"
if [ -n "$pid" ]; then stop containerd "$pid"; else log "containerd not running"; fi

# Shims outlive containerd by design (containers keep running); ours name our socket.
shims="$(pgrep -f -- "containerd-shim-runc-v2 .*-address $STATE/containerd.sock" || true)"
if [ -n "$shims" ]; then
  log "removing leftover shims: $(echo $shims)"
  kill -KILL $shims 2>/dev/null || true
fi
# ... and so do the containers of a killed engine: whatever is left in its cgroup.
for procs in /sys/fs/cgroup/docker29 /sys/fs/cgroup/*/docker29; do
  [ -d "$procs" ] || continue
  left="$(find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
  if [ -n "$left" ]; then
    log "killing processes left in $procs: $(echo $left)"
    kill -KILL $left 2>/dev/null || true
  fi
done
if ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link delete "$BRIDGE" 2>/dev/null || log "could not delete bridge $BRIDGE"
fi
rm -f "$PIDFILE" "$SOCK" "$CTRD_PIDFILE" .testenv/docker29.env
