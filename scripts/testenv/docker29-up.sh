#!/usr/bin/env bash
# Starts the second test engine: Docker Engine 29 on its own containerd 2 and
# runc 1.5, with the containerd image store (29's default; checked below), as
# users' runners have it. It runs beside Docker 20.10 of docker-up.sh and
# shares nothing with it: own binaries (scripts/build-docker29.sh), sockets,
# data roots, exec roots, pid files, bridge and cgroup parent. It opens no TCP port.
#   containerd  $STATE/containerd.sock, root $CTRD_ROOT, log .testenv/containerd29.log
#   dockerd     unix://$SOCK, data root $DATA_ROOT, exec root $EXEC_ROOT, log .testenv/dockerd29.log
# Networking: the default bridge is $BRIDGE (made here, $BRIDGE_CIDR), and the
# engine leaves iptables alone ("iptables": false), so the two engines never
# rewrite each other's DOCKER chains. Containers on that bridge reach the host
# but not the outside; the tests' containers and builders use the host network
# (the registry listens on loopback). 127.0.0.0/8 is an insecure (plain-HTTP)
# registry range for every engine, so the test registry needs no setting.
# Then, when the BuildKit image exists (buildkit-up.sh ran), it is pulled into
# this engine by digest with the registry login, so a docker-container builder
# on it finds the image as on the other engine.
# Idempotent: an engine that answers is reused. Writes .testenv/docker29.env
# (TEST_DOCKER29_HOST).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mkdir -p .testenv

SOCK=/run/docker29.sock
PIDFILE=/run/docker29.pid
DATA_ROOT=/var/lib/docker29
EXEC_ROOT=/run/docker29
STATE=/run/docker29-containerd
CTRD_ROOT=/var/lib/docker29-containerd
CTRD_PIDFILE=/run/docker29-containerd.pid
BRIDGE=docker29br0
BRIDGE_CIDR="${DOCKER29_BRIDGE_CIDR:-172.29.0.1/24}"
HOST="unix://$SOCK"
LOG=.testenv/dockerd29.log
CTRD_LOG=.testenv/containerd29.log
DEADLINE="${DOCKER29_UP_TIMEOUT:-60}"

log() { printf '[docker29-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

answers() { timeout 5 docker -H "$HOST" version --format '{{.Server.Version}}' >/dev/null 2>&1; }
# live PIDFILE MARK: the pid in PIDFILE when that process runs with MARK in its argv.
live() {
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" && echo "$pid"
}

write_env() {
  printf 'export TEST_DOCKER29_HOST=%s\n' "$HOST" >.testenv/docker29.env.tmp
  mv .testenv/docker29.env.tmp .testenv/docker29.env
}

# The BuildKit image of buildkit-up.sh, pulled by digest into this engine (the
# registry wants a login for pulls too; the password goes through stdin).
pull_buildkit_image() {
  [ -f .testenv/buildkit.env ] && [ -f .testenv/registry.env ] || {
    log "no .testenv/buildkit.env yet: the BuildKit image is pulled by the first builder that needs it"
    return 0
  }
  local image config
  image="$(. .testenv/buildkit.env && echo "${DEPLOYER_BUILDKIT_IMAGE:-}")"
  [ -n "$image" ] || return 0
  if docker -H "$HOST" image inspect "$image" >/dev/null 2>&1; then
    log "BuildKit image already in the engine"
    return 0
  fi
  config="$(mktemp -d)"
  # shellcheck disable=SC1091
  if (. .testenv/registry.env
      printf '%s' "$TEST_REGISTRY_PASSWORD" | DOCKER_CONFIG="$config" timeout 30 \
        docker -H "$HOST" login -u "$TEST_REGISTRY_USERNAME" --password-stdin "$TEST_REGISTRY" >/dev/null 2>&1 \
      && DOCKER_CONFIG="$config" timeout 300 docker -H "$HOST" pull -q "$image" >/dev/null); then
    log "BuildKit image pulled by digest: $image"
  else
    rm -rf "$config"
    die "could not pull the BuildKit image $image into Docker 29"
  fi
  rm -rf "$config"
}

if answers; then
  log "engine $(docker -H "$HOST" version --format '{{.Server.Version}}') already answering on $HOST (reused)"
  write_env
  pull_buildkit_image
  exit 0
fi

[ "$(id -u)" = 0 ] || die "dockerd needs root"
bin="$(bash scripts/build-docker29.sh | tail -n1)"
[ -x "$bin/dockerd" ] && [ -x "$bin/containerd" ] || die "scripts/build-docker29.sh gave no binaries"
# Our containerd-shim-runc-v2, runc and docker-proxy come first (containerd
# hands its PATH to the shims, which look runc up there; so does runc-bounded).
export PATH="$bin:$PATH"

# -- containerd ----------------------------------------------------------------------------
ctrd_pid="$(live "$CTRD_PIDFILE" "$STATE/containerd.toml" || true)"
if [ -z "$ctrd_pid" ]; then
  mkdir -p "$STATE" "$CTRD_ROOT"
  sed -e "s|@ROOT@|$CTRD_ROOT|g" -e "s|@STATE@|$STATE|g" testenv/docker29/containerd.toml \
    >"$STATE/containerd.toml"
  log "starting containerd $("$bin/containerd" --version | awk '{print $3}') (root $CTRD_ROOT, socket $STATE/containerd.sock, log $CTRD_LOG)"
  setsid "$bin/containerd" --config "$STATE/containerd.toml" </dev/null >>"$CTRD_LOG" 2>&1 &
  ctrd_pid=$!
  echo "$ctrd_pid" >"$CTRD_PIDFILE"
fi
start=$SECONDS
until [ -S "$STATE/containerd.sock" ]; do
  kill -0 "$ctrd_pid" 2>/dev/null || { tail -n 20 "$CTRD_LOG" >&2; die "containerd exited during startup"; }
  (( SECONDS - start < DEADLINE )) || { tail -n 20 "$CTRD_LOG" >&2; die "containerd made no socket within ${DEADLINE}s"; }
  sleep 0.2
done

# -- the bridge -----------------------------------------------------------------------------
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
fi
ip link set "$BRIDGE" up

# -- dockerd --------------------------------------------------------------------------------
docker0_before=0
ip link show docker0 >/dev/null 2>&1 && docker0_before=1
pid="$(live "$PIDFILE" "--pidfile $PIDFILE" || true)"
if [ -n "$pid" ]; then
  log "dockerd (pid $pid) running but not answering yet; waiting"
else
  rm -f "$SOCK" "$PIDFILE"
  # No "default-address-pools": with it, dockerd deletes the interface named
  # docker0 when it clears its stale default network at start, and docker0 is
  # the other engine's bridge.
  # No runc-bounded (docker-up.sh) here: on a machine whose capability bounding
  # set is cut, runc 1.5 starts --privileged containers as they are.
  # The engine's own config file (never /etc/docker/daemon.json, which is the machine's).
  cat >.testenv/dockerd29.json <<EOF
{
  "bridge": "$BRIDGE",
  "iptables": false,
  "ip6tables": false,
  "cgroup-parent": "/docker29"
}
EOF
  log "starting dockerd $("$bin/dockerd" --version | awk '{print $3}' | tr -d ,) (data root $DATA_ROOT, socket $SOCK, log $LOG)"
  setsid "$bin/dockerd" \
    --config-file "$root/.testenv/dockerd29.json" \
    --containerd "$STATE/containerd.sock" \
    --data-root "$DATA_ROOT" \
    --exec-root "$EXEC_ROOT" \
    --host "$HOST" \
    --pidfile "$PIDFILE" \
    </dev/null >>"$LOG" 2>&1 &
  pid=$!
fi

start=$SECONDS
until answers; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$LOG" >&2
    die "dockerd exited during startup; last lines of $LOG above"
  fi
  if (( SECONDS - start >= DEADLINE )); then
    tail -n 20 "$LOG" >&2
    die "dockerd did not answer within ${DEADLINE}s; last lines of $LOG above"
  fi
  sleep 0.2
done
if [ "$docker0_before" = 1 ] && ! ip link show docker0 >/dev/null 2>&1; then
  die "starting Docker 29 removed the bridge docker0 of the other engine (recreate it: ip link add docker0 type bridge ...)"
fi
store="$(docker -H "$HOST" info --format '{{range .DriverStatus}}{{index . 0}}={{index . 1}} {{end}}')"
case "$store" in
  *io.containerd.snapshotter.v1*) ;;
  *) die "Docker 29 is up but its image store is not containerd's (DriverStatus: $store)" ;;
esac
log "engine $(docker -H "$HOST" version --format '{{.Server.Version}} (API {{.Server.APIVersion}}, containerd {{range .Server.Components}}{{if eq .Name "containerd"}}{{.Version}}{{end}}{{end}})') ready in $((SECONDS - start))s; image store: $store"
write_env
pull_buildkit_image
