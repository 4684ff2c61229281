#!/usr/bin/env bash
# Starts a Docker engine for the tests on its own socket, data root and exec
# root, so it never touches a system dockerd the machine may also run.
# Idempotent: if the socket already answers, it is reused.
# Writes .testenv/docker.env (export DOCKER_HOST=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .testenv

SOCK=/run/docker-test.sock
PIDFILE=/run/docker-test.pid
DATA_ROOT=/var/lib/docker-test
EXEC_ROOT=/run/docker-test
HOST="unix://$SOCK"
LOG=.testenv/dockerd.log
DEADLINE="${DOCKER_UP_TIMEOUT:-30}"

log() { printf '[docker-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Does this machine's capability bounding set lack a capability the kernel
# knows? (Some VMs drop CAP_SYS_RESOURCE.) Then Docker 20.10 cannot start a
# --privileged container, which buildx's docker-container driver needs, and the
# engine runs testenv/docker/runc-bounded instead of runc (see that file).
caps_cut() {
  local last bound
  last="$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo 40)"
  bound="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
  [ $(( 16#$bound )) -ne $(( (1 << (last + 1)) - 1 )) ]
}
answers() { timeout 5 docker -H "$HOST" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

write_env() {
  printf 'export DOCKER_HOST=%s\n' "$HOST" >.testenv/docker.env.tmp
  mv .testenv/docker.env.tmp .testenv/docker.env
}

if answers; then
  log "engine already answering on $HOST (reused)"
  if caps_cut && [ "$(docker -H "$HOST" info --format '{{.DefaultRuntime}}' 2>/dev/null)" != runc-bounded ]; then
    log "WARNING: this machine's capability bounding set is cut and the running engine uses plain runc:"
    log "  --privileged containers (buildx docker-container builders) will fail; restart it (make env-down env-up)"
  fi
  write_env
  exit 0
fi

command -v dockerd >/dev/null || { log "dockerd not found; run scripts/install-deps.sh"; exit 1; }
[ "$(id -u)" = 0 ] || { log "dockerd needs root"; exit 1; }

# A daemon whose pid file is live but which does not answer: give it the
# deadline below rather than starting a second one over it.
pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
   && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--pidfile $PIDFILE"; then
  log "dockerd (pid $pid) running but not answering yet; waiting"
else
  rm -f "$SOCK" "$PIDFILE"
  config=()
  if caps_cut; then
    # The engine's own config file (never /etc/docker/daemon.json, which is the machine's).
    printf '{"runtimes": {"runc-bounded": {"path": "%s"}}, "default-runtime": "runc-bounded"}\n' \
      "$(pwd)/testenv/docker/runc-bounded" >.testenv/dockerd.json
    config=(--config-file "$(pwd)/.testenv/dockerd.json")
    log "capability bounding set cut ($(awk '/^CapBnd:/ {print $2}' /proc/self/status)): default runtime runc-bounded"
  fi
  log "starting dockerd (data root $DATA_ROOT, socket $SOCK, log $LOG)"
  # setsid: the daemon must outlive this script and not get the caller's
  # terminal signals (make, CI runners).
  setsid dockerd \
    --data-root "$DATA_ROOT" \
    --exec-root "$EXEC_ROOT" \
    --host "$HOST" \
    --pidfile "$PIDFILE" \
    --containerd-namespace deployer-test \
    --containerd-plugins-namespace deployer-test-plugins \
    "${config[@]}" \
    </dev/null >>"$LOG" 2>&1 &
  pid=$!
fi

start=$SECONDS
until answers; do
  if ! kill -0 "$pid" 2>/dev/null; then
    log "dockerd exited during startup; last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  if (( SECONDS - start >= DEADLINE )); then
    log "dockerd did not answer within ${DEADLINE}s; last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  sleep 0.2
done
log "engine $(docker -H "$HOST" version --format '{{.Server.Version}}') ready in $((SECONDS - start))s"
write_env
