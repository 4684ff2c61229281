#!/usr/bin/env bash
# Progressive delivery in the test cluster (issue 20): the real Argo Rollouts
# and Flagger controllers, run as processes against the test kube-apiserver,
# and a local webhook stand-in for Flagger's checks.
#   - Binaries and their upstream manifests from scripts/build-tools.sh (built
#     once from the Go module proxy; the CRDs and ClusterRoles are copied from
#     the same module sources, never written here).
#   - CRDs applied server-side and waited for (Established).
#   - Each controller authenticates as its own user (a client certificate from
#     the cluster CA: deployer-testenv:argo-rollouts, deployer-testenv:flagger)
#     bound to the upstream ClusterRole, as in a real installation.
#   - Argo Rollouts: leader election off, metrics and healthz on loopback ports
#     below. Flagger: -mesh-provider=kubernetes, its -metrics-server pointed at
#     the stand-in (which answers Prometheus's start-up query; canaries here
#     use webhooks, not metrics), leader election off, new Canaries picked
#     up every 2 s (analysis itself keeps each Canary's interval, at least 10 s).
#   - The webhook stand-in (testenv/progressive/webhook.py): /pass, /fail,
#     /gate/<name> toggled by tests; TEST_WEBHOOK_URL.
# Needs scripts/testenv/cluster-up.sh first. State, logs and pids in
# .testenv/progressive/; settings in .testenv/progressive.env (merged into
# .testenv/env by scripts/env-up.sh). Idempotent: running controllers that
# answer their health checks and run the current binaries are reused.
# Every wait has a deadline.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
testenv="${DEPLOYER_TESTENV:-$root/.testenv}"
cluster="$testenv/cluster"
state="$testenv/progressive"
envfile="$testenv/progressive.env"
PYTHON="${PYTHON:-python3}"

ARGO_METRICS_PORT=16490
ARGO_HEALTHZ_PORT=16491
FLAGGER_PORT=16492
WEBHOOK_PORT=16493
ARGO_NAMESPACE=argo-rollouts
FLAGGER_NAMESPACE=flagger-system

t0=$SECONDS
log() { printf '[progressive-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

admin="$cluster/admin.kubeconfig"
[ -f "$admin" ] && [ -f "$cluster/pki/ca.key" ] \
  || die "no control plane state in $cluster: run scripts/testenv/cluster-up.sh first"
kc() { kubectl --kubeconfig "$admin" --request-timeout=30s "$@"; }
server="$(kc config view -o jsonpath='{.clusters[0].cluster.server}')"

# --- binaries and upstream manifests -----------------------------------------
t=$SECONDS
declare -A bin
while read -r tool path; do bin[$tool]="$path"; done \
  < <(bash scripts/build-tools.sh argo-rollouts flagger)
for tool in argo-rollouts flagger; do
  [ -x "${bin[$tool]:-}" ] || die "scripts/build-tools.sh gave no $tool"
done
argo_manifests="$(dirname "${bin[argo-rollouts]}")/manifests"
flagger_manifests="$(dirname "${bin[flagger]}")/manifests"
log "binaries ready in $((SECONDS - t))s"

mkdir -p "$state"
chmod 700 "$state"

# --- CRDs, namespaces, RBAC --------------------------------------------------
t=$SECONDS
crds=()
for f in "$argo_manifests"/crds/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || crds+=(-f "$f")
done
crds+=(-f "$flagger_manifests/crd.yaml")
# Server-side: the Rollout CRD is too large for the last-applied annotation.
# (kubectl warns about OpenAPI formats it does not know in these CRDs: noise.)
kc apply --server-side --force-conflicts --field-manager deployer-testenv "${crds[@]}" 2>&1 >/dev/null \
  | { grep -v "unrecognized format" || true; } >&2
kc wait --for condition=Established --timeout=60s \
  crd/rollouts.argoproj.io crd/analysisruns.argoproj.io crd/analysistemplates.argoproj.io \
  crd/clusteranalysistemplates.argoproj.io crd/experiments.argoproj.io \
  crd/canaries.flagger.app crd/metrictemplates.flagger.app crd/alertproviders.flagger.app >/dev/null
# Only the ClusterRoles of the upstream files (Flagger's account.yaml also
# holds a ServiceAccount and its binding, for an in-cluster install).
"$PYTHON" - "$argo_manifests/argo-rollouts-clusterrole.yaml" "$flagger_manifests/account.yaml" \
  >"$state/clusterroles.yaml" <<'EOF'
import sys, yaml
docs = [d for p in sys.argv[1:] for d in yaml.safe_load_all(open(p)) if d and d.get("kind") == "ClusterRole"]
yaml.safe_dump_all(docs, sys.stdout)
EOF
kc apply -f "$state/clusterroles.yaml" -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $ARGO_NAMESPACE}
---
apiVersion: v1
kind: Namespace
metadata: {name: $FLAGGER_NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: deployer-testenv-argo-rollouts}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: argo-rollouts}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "deployer-testenv:argo-rollouts"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: deployer-testenv-flagger}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: flagger}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "deployer-testenv:flagger"}
EOF
log "CRDs, namespaces and RBAC applied in $((SECONDS - t))s"

# kubeconfig USER NAMESPACE: a client certificate from the cluster CA (made once).
kubeconfig() {
  local user=$1 ns=$2 file="$state/$1.kubeconfig" pki="$cluster/pki"
  if ! [ -s "$state/$user.crt" ] \
    || ! openssl verify -CAfile "$pki/ca.crt" "$state/$user.crt" >/dev/null 2>&1; then
    (
      umask 077
      cd "$state"
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$user.key" -out "$user.csr" -subj "/CN=deployer-testenv:$user" 2>/dev/null
      openssl x509 -req -in "$user.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 3650 -out "$user.crt" -extfile <(printf '%s\n' "basicConstraints=CA:FALSE" \
          "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth") 2>/dev/null
      rm -f "$user.csr"
    )
  fi
  (
    umask 077
    cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: deployer-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$state/$user.crt")
    client-key-data: $(base64 -w0 "$state/$user.key")
contexts:
- name: $user@deployer-test
  context: {cluster: deployer-test, user: $user, namespace: $ns}
current-context: $user@deployer-test
EOF
    mv "$file.tmp" "$file"
  )
}
kubeconfig argo-rollouts "$ARGO_NAMESPACE"
kubeconfig flagger "$FLAGGER_NAMESPACE"

# --- processes -----------------------------------------------------------------
alive() { # NAME [WORD]: is the process from NAME.pid running (with WORD in its command line)?
  local pid
  pid="$(cat "$state/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -z "${2:-}" ] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}
stop() { # NAME WORD: TERM, then KILL after 10 s (only our process: WORD in its command line)
  local pid
  pid="$(cat "$state/$1.pid" 2>/dev/null)" || return 0
  if alive "$1" "$2"; then
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/$1.pid"
}
start() { # NAME CMD...: detached, log and pid in the state dir
  local name=$1; shift
  setsid "$@" </dev/null >>"$state/$name.log" 2>&1 8>&- 9>&- &
  echo $! >"$state/$name.pid"
}
healthy() { curl -fsS --max-time 2 "$1" >/dev/null 2>&1; }
wait_healthy() { # NAME URL DEADLINE_S
  local end=$((SECONDS + $3))
  until healthy "$2"; do
    if ! alive "$1"; then
      log "ERROR: $1 exited; last lines of $state/$1.log:"
      tail -n 20 "$state/$1.log" >&2 || true
      return 1
    fi
    if [ $SECONDS -ge $end ]; then
      log "ERROR: $1 not healthy at $2 after $3 s; last lines of $state/$1.log:"
      tail -n 20 "$state/$1.log" >&2 || true
      return 1
    fi
    sleep 0.3
  done
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# ensure NAME MARKER HEALTH_URL PORT... -- CMD...: reuse or (re)start one process;
# MARKER is in its command line whatever the binary's version (a pid reused by
# another program is never stopped).
# Reused only when it runs the same command with the same files: the key is a
# hash of the command line and of every file it names (binary, kubeconfig), so
# a new binary or a cluster made anew (new CA, new certificates) restarts it.
ensure() {
  local name=$1 marker=$2 url=$3; shift 3
  local ports=()
  while [ "$1" != -- ]; do ports+=("$1"); shift; done
  shift
  local key arg
  key="$(for arg in "$@"; do echo "$arg"; if [ -f "$arg" ]; then sha256sum <"$arg"; fi; done \
    | sha256sum | cut -c1-16)"
  if alive "$name" "$marker" && healthy "$url" \
    && [ "$(cat "$state/$name.identity" 2>/dev/null)" = "$key" ]; then
    log "$name already running (pid $(cat "$state/$name.pid")); reusing it"
    return 0
  fi
  stop "$name" "$marker"
  local p
  for p in "${ports[@]}"; do
    port_free "$p" || die "port 127.0.0.1:$p is already in use by another program"
  done
  local t=$SECONDS
  start "$name" "$@"
  echo "$key" >"$state/$name.identity"
  wait_healthy "$name" "$url" 90 || exit 1
  log "$name started in $((SECONDS - t))s (log $state/$name.log)"
}

webhook_url="http://127.0.0.1:$WEBHOOK_PORT"
ensure webhook "$root/testenv/progressive/webhook.py" "$webhook_url/healthz" "$WEBHOOK_PORT" -- \
  "$PYTHON" "$root/testenv/progressive/webhook.py" --port "$WEBHOOK_PORT"

ensure argo-rollouts "$state/argo-rollouts.kubeconfig" "http://127.0.0.1:$ARGO_HEALTHZ_PORT/healthz" \
  "$ARGO_METRICS_PORT" "$ARGO_HEALTHZ_PORT" -- \
  "${bin[argo-rollouts]}" --kubeconfig "$state/argo-rollouts.kubeconfig" \
  --leader-elect=false --metricsPort "$ARGO_METRICS_PORT" --healthzPort "$ARGO_HEALTHZ_PORT" \
  --loglevel info --logformat text

ensure flagger "$state/flagger.kubeconfig" "http://127.0.0.1:$FLAGGER_PORT/healthz" "$FLAGGER_PORT" -- \
  "${bin[flagger]}" -kubeconfig "$state/flagger.kubeconfig" -mesh-provider=kubernetes \
  -metrics-server "$webhook_url" -port "$FLAGGER_PORT" -log-level info \
  -enable-leader-election=false -zap-encoding console -control-loop-interval 2s

argo_version="$("${bin[argo-rollouts]}" --version 2>/dev/null | head -n 1 || true)"
flagger_version="$("${bin[flagger]}" -version 2>/dev/null | awk '{print $3; exit}' || true)" # "Flagger version 1.36.1 …"
umask 077
cat >"$envfile.tmp" <<EOF
# Written by scripts/testenv/progressive-up.sh; merged into .testenv/env by scripts/env-up.sh.
export TEST_ARGO_ROLLOUTS_VERSION=${argo_version:-unknown}
export TEST_FLAGGER_VERSION=${flagger_version:-unknown}
export TEST_WEBHOOK_URL=$webhook_url
export TEST_PROGRESSIVE_LOGS=$state
EOF
mv "$envfile.tmp" "$envfile"
log "Argo Rollouts and Flagger ready in $((SECONDS - t0))s; wrote $envfile"
