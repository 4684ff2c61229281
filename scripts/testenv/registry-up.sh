#!/usr/bin/env bash
# Starts a real registry for the tests: Debian's `docker-registry` on loopback
# with htpasswd (bcrypt) auth and a random password generated once per
# environment. State lives under .testenv/registry/ (config, htpasswd,
# password, data, log, pid). Idempotent: a running registry that still answers
# is reused. Writes .testenv/registry.env.
#
# Port: 5000 when free; otherwise the first free port of 5001..5099, so the
# choice is deterministic on a given machine. The port in use is remembered in
# .testenv/registry/port and reused while the registry runs.
#
# A second user, AWS, has the password that the ECR stand-in's
# GetAuthorizationToken hands out (.testenv/registry/ecr-password, read by
# testenv/cloud/standin.py), so a push with ECR-issued credentials really works.
# DEPLOYER_TESTENV=DIR: the state is in DIR instead of <repo>/.testenv.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
testenv="${DEPLOYER_TESTENV:-$root/.testenv}"
dir="$testenv/registry"
mkdir -p "$dir/data"
chmod 700 "$dir"

USERNAME=deployer
ECR_USERNAME=AWS
PIDFILE="$dir/registry.pid"
LOG="$dir/registry.log"
DEADLINE="${REGISTRY_UP_TIMEOUT:-20}"

log() { printf '[registry-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# HTTP status of GET /v2/ on port $1, anonymous / with our credentials
# (000 when nothing answers).
anon_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$1/v2/" 2>/dev/null || true; }
auth_status() { # PORT [USER PASSWORD]
  curl -s -o /dev/null -w '%{http_code}' --max-time 3 -u "${2:-$USERNAME}:${3:-$password}" \
    "http://127.0.0.1:$1/v2/" 2>/dev/null || true
}
port_busy() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
ours_running() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$dir/config.yml"
}

write_env() {
  {
    printf 'export TEST_REGISTRY=127.0.0.1:%s\n' "$port"
    printf 'export TEST_REGISTRY_USERNAME=%s\n' "$USERNAME"
    printf 'export TEST_REGISTRY_PASSWORD=%s\n' "$password"
    printf 'export TEST_ECR_REGISTRY_PASSWORD=%s\n' "$ecr_password"
  } >"$testenv/registry.env.tmp"
  chmod 600 "$testenv/registry.env.tmp"
  mv "$testenv/registry.env.tmp" "$testenv/registry.env"
}

command -v docker-registry >/dev/null || { log "docker-registry not found; run scripts/install-deps.sh"; exit 1; }
command -v htpasswd >/dev/null || { log "htpasswd not found; run scripts/install-deps.sh"; exit 1; }

# Credentials: generated once per environment (removed by `rm -rf .testenv`).
if [ ! -s "$dir/password" ]; then
  (umask 077; openssl rand -hex 16 >"$dir/password")
  rm -f "$dir/htpasswd"
fi
if [ ! -s "$dir/ecr-password" ]; then
  (umask 077; openssl rand -hex 24 >"$dir/ecr-password")
  rm -f "$dir/htpasswd"
fi
password="$(cat "$dir/password")"
ecr_password="$(cat "$dir/ecr-password")"
if [ ! -s "$dir/htpasswd" ] || ! grep -q "^$ECR_USERNAME:" "$dir/htpasswd"; then
  (
    umask 077
    { htpasswd -Bbn "$USERNAME" "$password"; htpasswd -Bbn "$ECR_USERNAME" "$ecr_password"; } \
      | sed '/^$/d' >"$dir/htpasswd.tmp"
    mv "$dir/htpasswd.tmp" "$dir/htpasswd"
  )
fi
[ -s "$dir/http-secret" ] || (umask 077; openssl rand -hex 32 >"$dir/http-secret")

# Reuse a running registry of ours when it answers as expected.
if ours_running && [ -s "$dir/port" ]; then
  port="$(cat "$dir/port")"
  if [ "$(anon_status "$port")" = 401 ] && [ "$(auth_status "$port")" = 200 ] \
     && [ "$(auth_status "$port" "$ECR_USERNAME" "$ecr_password")" = 200 ]; then
    log "registry already answering on 127.0.0.1:$port (reused)"
    write_env
    exit 0
  fi
  log "registry (pid $(cat "$PIDFILE")) does not answer as expected; restarting it"
  bash "$root/scripts/testenv/registry-down.sh"
fi

port=""
for p in 5000 $(seq 5001 5099); do
  if ! port_busy "$p"; then port="$p"; break; fi
done
[ -n "$port" ] || { log "no free port in 5000..5099"; exit 1; }
[ "$port" = 5000 ] || log "port 5000 is taken ($(ss -Hltnp 'sport = :5000' | awk '{print $NF}' | head -n1)); using $port"
echo "$port" >"$dir/port"

tpl="$(cat "$root/testenv/registry/config.yml")"
tpl="${tpl//@DATA_DIR@/$dir/data}"
tpl="${tpl//@ADDR@/127.0.0.1:$port}"
tpl="${tpl//@HTPASSWD@/$dir/htpasswd}"
tpl="${tpl//@HTTP_SECRET@/$(cat "$dir/http-secret")}"
printf '%s\n' "$tpl" >"$dir/config.yml.tmp"
mv "$dir/config.yml.tmp" "$dir/config.yml"

log "starting docker-registry on 127.0.0.1:$port (log $LOG)"
setsid docker-registry serve "$dir/config.yml" </dev/null >>"$LOG" 2>&1 &
pid=$!
echo "$pid" >"$PIDFILE"

start=$SECONDS
until [ "$(anon_status "$port")" = 401 ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    log "docker-registry exited during startup; last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  if (( SECONDS - start >= DEADLINE )); then
    log "registry did not answer 401 on /v2/ within ${DEADLINE}s; last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  sleep 0.2
done
code="$(auth_status "$port")"
code_ecr="$(auth_status "$port" "$ECR_USERNAME" "$ecr_password")"
if [ "$code" != 200 ] || [ "$code_ecr" != 200 ]; then
  log "registry refuses our own credentials (HTTP $code, user $ECR_USERNAME: $code_ecr); see $LOG"
  exit 1
fi
log "registry ready on 127.0.0.1:$port in $((SECONDS - start))s"
write_env
