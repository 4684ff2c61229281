#!/usr/bin/env bash
# Stops what scripts/testenv/progressive-up.sh started (Flagger, Argo Rollouts,
# the webhook stand-in) and removes .testenv/progressive.env. The CRDs and
# RBAC stay in the cluster, which cluster-down.sh deletes anyway. Logs are kept
# in .testenv/progressive/. Succeeds when nothing runs.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
testenv="${DEPLOYER_TESTENV:-$(pwd)/.testenv}"
state="$testenv/progressive"
rc=0
# What each process's command line holds, so a pid reused by another program is left alone.
declare -A marker=([flagger]="$state/flagger.kubeconfig" [argo-rollouts]="$state/argo-rollouts.kubeconfig"
  [webhook]="progressive/webhook.py")
for name in flagger argo-rollouts webhook; do
  pid="$(cat "$state/$name.pid" 2>/dev/null)" || continue
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "${marker[$name]}"; then
    kill -TERM "$pid" 2>/dev/null
    end=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
      sleep 0.5
      kill -0 "$pid" 2>/dev/null && { echo "progressive-down: $name (pid $pid) did not stop" >&2; rc=1; }
    fi
  fi
  rm -f "$state/$name.pid"
done
rm -f "$testenv/progressive.env"
echo "progressive-down: stopped" >&2
exit "$rc"
