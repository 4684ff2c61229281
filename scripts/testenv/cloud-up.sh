#!/usr/bin/env bash
# Starts the cloud identity stand-ins (testenv/cloud/standin.py, see
# docs/cluster.md "Cloud credentials") for the test control plane: the
# kube-apiserver's token webhook and local EKS/STS/ECR, Google OAuth/STS,
# Entra ID and GitHub OIDC token endpoints on loopback.
#
# Called by scripts/testenv/cluster-up.sh (before the API server starts, which
# needs the webhook): cloud-up.sh STATE_DIR SERVER_URL
#   STATE_DIR  the cluster state directory (its pki/ca.{crt,key} signs the
#              stand-in's HTTPS certificate); the stand-in's keys and files go
#              to STATE_DIR/cloud/, its log and pid next to the others.
#   SERVER_URL the API server URL, written to cloud.env as TEST_CLOUD_SERVER.
# Writes STATE_DIR/cloud-webhook.kubeconfig (for --authentication-token-webhook-
# config-file) and <testenv>/cloud.env (merged into .testenv/env by env-up.sh).
# Idempotent: a running stand-in that answers is reused. Deadline 20 s.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
testenv="${DEPLOYER_TESTENV:-$root/.testenv}"
state="$1"
server="$2"
cloud="$state/cloud"
pki="$state/pki"
CLOUD_HTTPS_PORT=${CLOUD_HTTPS_PORT:-16480}
CLOUD_HTTP_PORT=${CLOUD_HTTP_PORT:-16481}
PYTHON="${PYTHON:-python3}"

say() { echo "cloud-up: $*"; }
die() { echo "cloud-up: ERROR: $*" >&2; exit 1; }

pidfile="$state/run/cloud-standin.pid"
alive() {
  local pid
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--state $cloud "
}
answers() {
  curl -fsS --max-time 2 --cacert "$pki/ca.crt" "https://127.0.0.1:$CLOUD_HTTPS_PORT/healthz" >/dev/null 2>&1 \
    && curl -fsS --max-time 2 "http://127.0.0.1:$CLOUD_HTTP_PORT/healthz" >/dev/null 2>&1
}

"$PYTHON" -c 'import cryptography' 2>/dev/null \
  || die "the Python package cryptography is needed (pip install -e '.[test]')"
mkdir -p "$cloud" "$state/run" "$state/logs"
chmod 700 "$cloud"

# HTTPS certificate for 127.0.0.1, signed by the cluster CA (which the API
# server's webhook kubeconfig trusts).
if ! [ -s "$cloud/tls.crt" ]; then
  (
    cd "$cloud"
    umask 077
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout tls.key -out tls.csr -subj "/CN=cloud-standin" 2>/dev/null
    openssl x509 -req -in tls.csr -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -out tls.crt.tmp -extfile <(printf '%s\n' "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost") 2>/dev/null
    rm -f tls.csr
    mv tls.crt.tmp tls.crt
  )
fi

if alive && answers; then
  say "stand-in already running (pid $(cat "$pidfile")); reusing it"
else
  if alive; then kill -TERM "$(cat "$pidfile")" 2>/dev/null || true; sleep 0.5; fi
  for port in $CLOUD_HTTPS_PORT $CLOUD_HTTP_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port 127.0.0.1:$port is already in use by another program"
    fi
  done
  setsid "$PYTHON" "$root/testenv/cloud/standin.py" --state "$cloud" \
    --http-port "$CLOUD_HTTP_PORT" --https-port "$CLOUD_HTTPS_PORT" \
    --cert "$cloud/tls.crt" --key "$cloud/tls.key" \
    --cluster-server "$server" --cluster-ca "$pki/ca.crt" \
    --registry-password-file "$testenv/registry/ecr-password" \
    </dev/null >>"$state/logs/cloud-standin.log" 2>&1 8>&- &
  echo $! >"$pidfile"
  end=$((SECONDS + 20))
  until answers; do
    if ! alive; then
      echo "cloud-up: ERROR: the stand-in exited; last lines of $state/logs/cloud-standin.log:" >&2
      tail -n 20 "$state/logs/cloud-standin.log" >&2 || true
      exit 1
    fi
    [ $SECONDS -lt $end ] || die "the stand-in does not answer after 20 s"
    sleep 0.2
  done
  say "stand-in serving on https://127.0.0.1:$CLOUD_HTTPS_PORT and http://127.0.0.1:$CLOUD_HTTP_PORT"
fi

umask 077
cat >"$state/cloud-webhook.kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cloud-standin
  cluster:
    server: https://127.0.0.1:$CLOUD_HTTPS_PORT/tokenreview
    certificate-authority: $pki/ca.crt
users:
- name: kube-apiserver
  user: {}
contexts:
- name: webhook
  context:
    cluster: cloud-standin
    user: kube-apiserver
current-context: webhook
EOF
mv "$state/cloud-webhook.kubeconfig.tmp" "$state/cloud-webhook.kubeconfig"
cp "$cloud/cloud.env" "$testenv/cloud.env.tmp"
mv "$testenv/cloud.env.tmp" "$testenv/cloud.env"
say "wrote $testenv/cloud.env"
