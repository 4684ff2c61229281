#!/usr/bin/env bash
# Stops everything scripts/env-up.sh started, in reverse order, leaving no
# process behind. Succeeds when things are already down; when one part fails
# to stop, the others are still stopped and the exit status is non-zero.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
t0=$SECONDS
log() { printf '[env-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
rc=0
step() {
  if ! "$@"; then
    log "FAILED: $*"
    rc=1
  fi
}

step bash scripts/testenv/progressive-down.sh
if [ -f scripts/testenv/cluster-down.sh ]; then
  step bash scripts/testenv/cluster-down.sh
fi
step bash scripts/testenv/registry-down.sh
step bash scripts/testenv/docker-down.sh
rm -f .testenv/env
log "test environment down in $((SECONDS - t0))s"
exit "$rc"
