#!/usr/bin/env bash
# Stops everything scripts/testenv/cluster-up.sh started and deletes its state
# (PKI, etcd data, kubeconfigs), so the next cluster-up starts a fresh cluster.
# The logs of the stopped cluster are kept in .testenv/cluster-logs/.
# Stops by pid file first, then (fallback) any process whose command line
# names the state directory; waits at most DEADLINE seconds, then SIGKILLs.
# The cloud stand-ins (scripts/testenv/cloud-up.sh) are stopped with it.
# DEPLOYER_TESTENV=DIR: the state is in DIR instead of <repo>/.testenv.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
testenv="${DEPLOYER_TESTENV:-$root/.testenv}"
state="$testenv/cluster"
envfile="$testenv/cluster.env"
DEADLINE=${DEADLINE:-20}

if [ -z "${DEPLOYER_CLUSTER_LOCKED:-}" ] && [ -d "$testenv" ]; then
  exec 8>"$testenv/cluster.lock"
  if ! flock -n 8; then
    echo "cluster-down: a cluster-up/cluster-down is running; waiting for it (at most 15 min)"
    flock -w 900 8 || { echo "cluster-down: ERROR: gave up waiting" >&2; exit 1; }
  fi
fi

ours() { # PID: is it one of our daemons (by program name) started with our state dir?
  local argv0
  argv0="$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n 1)" || return 1
  case "${argv0##*/}" in
    etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok) ;;
    python*) # the cloud stand-in
      tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "/standin.py --state $state/cloud " \
        || return 1 ;;
    *) return 1 ;;
  esac
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$state/"
}
leftovers() { local p; for p in $(pgrep -f -- "$state/" || true); do ours "$p" && echo "$p"; done; return 0; }

pids=()
# Reverse start order: clients before the API server, the API server before etcd.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd cloud-standin; do
  f="$state/run/$name.pid"
  [ -f "$f" ] || continue
  pid="$(cat "$f")"
  # Only a process that still runs one of our binaries with our state dir.
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ours "$pid"; then
    echo "cluster-down: stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  fi
done
# Fallback: anything else started with our state directory on its command line
# (e.g. pid files lost): our five programs and the stand-in, with this repo's state path.
while read -r pid; do
  [ -n "$pid" ] || continue
  case " ${pids[*]} " in *" $pid "*) continue ;; esac
  echo "cluster-down: stopping leftover pid $pid ($(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-80))"
  kill -TERM "$pid" 2>/dev/null || true
  pids+=("$pid")
done < <(leftovers)

end=$((SECONDS + DEADLINE))
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $end ]; then
      echo "cluster-down: pid $pid still running after ${DEADLINE}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
  done
done
left="$(leftovers)"
if [ -n "$left" ]; then
  echo "cluster-down: ERROR: processes still running: ${left//$'\n'/ }" >&2
  exit 1
fi

if [ -d "$state" ]; then
  rm -rf "$testenv/cluster-logs"
  [ -d "$state/logs" ] && mv "$state/logs" "$testenv/cluster-logs"
  rm -rf "$state"
fi
rm -f "$envfile" "$testenv/cloud.env"
echo "cluster-down: control plane stopped${pids[*]:+ (${#pids[@]} processes)}; state removed"
