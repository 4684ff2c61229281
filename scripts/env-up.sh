#!/usr/bin/env bash
# Brings up everything the integration tests need and writes .testenv/env:
#   Docker engine (own socket), registry (loopback, htpasswd auth), buildx and
#   a BuildKit image (scripts/testenv/buildkit-up.sh) and, when
#   scripts/testenv/cluster-up.sh exists, the Kubernetes control plane.
# Idempotent: running services are reused, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
log() { printf '[env-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

failed=()
# phase NAME FRAGMENT SCRIPT: run an up-script; its .testenv/FRAGMENT.env is
# removed first so a failed start never leaves stale settings behind.
phase() {
  local name="$1" fragment="$2" script="$3"
  local t=$SECONDS
  rm -f ".testenv/$fragment.env"
  if bash "$script"; then
    log "$name: up in $((SECONDS - t))s"
  else
    log "$name: FAILED after $((SECONDS - t))s"
    failed+=("$name")
  fi
}

t=$SECONDS
bash scripts/install-deps.sh
log "dependencies: checked in $((SECONDS - t))s"
mkdir -p .testenv
# Independent services: one failing does not stop the others, so the tests
# that need only the others can still run; env-up still exits non-zero.
phase "docker engine" docker scripts/testenv/docker-up.sh
phase "registry" registry scripts/testenv/registry-up.sh
# buildx, and the BuildKit image its docker-container builders run (needs both above).
phase "buildkit" buildkit scripts/testenv/buildkit-up.sh
# kustomize, helm, act, and the OCI chart in the registry (needs the registry).
phase "tools" tools scripts/testenv/tools-up.sh
if [ -f scripts/testenv/cluster-up.sh ]; then
  rm -f .testenv/cloud.env # written by cloud-up.sh, which cluster-up.sh runs
  phase "control plane" cluster scripts/testenv/cluster-up.sh
  # Argo Rollouts, Flagger and the webhook stand-in (needs the control plane).
  phase "progressive delivery" progressive scripts/testenv/progressive-up.sh
else
  log "control plane: scripts/testenv/cluster-up.sh not present, skipped"
fi

# One file for the tests (tests/conftest.py) and for `source .testenv/env`.
tmp="$(mktemp .testenv/env.XXXXXX)"
chmod 600 "$tmp"
{
  echo "# written by scripts/env-up.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ); do not edit"
  for f in .testenv/*.env; do
    [ -f "$f" ] || continue
    echo "# from ${f#.testenv/}"
    cat "$f"
  done
} >"$tmp"
mv "$tmp" .testenv/env

if [ "${#failed[@]}" -gt 0 ]; then
  log "test environment INCOMPLETE after $((SECONDS - t0))s; failed: ${failed[*]}; settings in .testenv/env:"
else
  log "test environment ready in $((SECONDS - t0))s; settings in .testenv/env:"
fi
sed -E -e '/^#/d' -e 's/(PASSWORD|TOKEN|SECRET)([A-Z_]*)=.*/\1\2=*****/' .testenv/env \
  | sed 's/^/    /' >&2
[ "${#failed[@]}" -eq 0 ]
