#!/usr/bin/env bash
# `make demo`: the action working end to end, on the test environment that
# `make env-up` started (Docker engine, registry, Kubernetes control plane).
#
#   1. builds the action's image (scripts/action-image.sh);
#   2. creates namespace demo and Deployment web (2 replicas) with kubectl;
#   3. runs the action's container the way the GitHub Actions runner does
#      (tests/integration/runner.py) on a changed examples/demo-app: it builds,
#      pushes and rolls out; prints the job summary and the outputs;
#   4. runs it again on a broken change, which is rolled back.
#
# Exits 0 when the first deploy succeeded and the second was rolled back (its
# non-zero exit code is the expected one); non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

section() {
  printf '\n\033[1m==================================================================\n'
  printf '== %s\n' "$*"
  printf '==================================================================\033[0m\n\n'
}
say() { printf '%s\n' "$*"; }
die() { printf '\ndemo FAILED: %s\n' "$*" >&2; exit 1; }

[ -f .testenv/env ] || die ".testenv/env not found: run 'make env-up' first (make demo does)"
# shellcheck disable=SC1091
. .testenv/env
for var in DOCKER_HOST KUBECONFIG TEST_REGISTRY TEST_REGISTRY_USERNAME TEST_REGISTRY_PASSWORD; do
  [ -n "${!var:-}" ] || die "$var is missing from .testenv/env: the test environment is incomplete (make env-up)"
done
export DOCKER_HOST KUBECONFIG TEST_REGISTRY_PASSWORD
command -v kubectl >/dev/null || die "kubectl not found (it comes with the test extras: make deps)"
[ -x /bin/busybox ] || die "/bin/busybox not found (Debian package busybox-static: make deps)"
PYTHON="${PYTHON:-python3}"

work="$(mktemp -d /tmp/deployer-demo.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# status FILE: the `status` output of a step, from the JSON the harness wrote.
status() {
  "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("status", ""))' "$1"
}
# step NAME IMAGE OUTPUTS: one run of the action's container, like the runner's.
step() {
  "$PYTHON" -m tests.integration.runner \
    --workspace "$work/app" \
    --input image="$2" \
    --input registry-username="$TEST_REGISTRY_USERNAME" \
    --input-env registry-password=TEST_REGISTRY_PASSWORD \
    --input-file kubeconfig="$KUBECONFIG" \
    --input namespace=demo \
    --input deployments=web \
    --input timeout=2m \
    --outputs-json "$3"
}
live_image() {
  kubectl -n demo get deployment web -o jsonpath='{.spec.template.spec.containers[0].image}'
}

section "1/4  The action's image (deployer-action:local, from the repository's Dockerfile)"
say "scripts/action-image.sh (its build log is shown only if it fails) ..."
if ! bash scripts/action-image.sh >"$work/action-image.log" 2>&1; then
  tail -n 40 "$work/action-image.log" >&2
  die "scripts/action-image.sh failed"
fi
grep '^\[' "$work/action-image.log" || true
docker image ls deployer-action:local

section "2/4  The cluster: namespace demo, Deployment web with 2 replicas"
say "kube-apiserver from \$KUBECONFIG; pods run on KWOK's simulated nodes."
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f examples/demo-app/deployment.yaml
kubectl -n demo rollout status deployment/web --timeout=90s
kubectl -n demo get deployment web -o wide

cp -r examples/demo-app "$work/app"
cp /bin/busybox "$work/app/busybox"
repo="$TEST_REGISTRY/demo/web"

section "3/4  A good change: build, push and roll out examples/demo-app"
printf '<p>Changed at %s: the demo deploys this.</p>\n' "$(date -u +%FT%TZ)" >>"$work/app/index.html"
say "The change (index.html in a copy of examples/demo-app):"
tail -n 1 "$work/app/index.html" | sed 's/^/    /'
say ""
say "Running the action container like the GitHub Actions runner (image: $repo):"
say ""
rc=0
step good "$repo" "$work/good.json" || rc=$?
good="$(status "$work/good.json")"
if [ "$rc" -ne 0 ] || [ "$good" != succeeded ]; then
  die "the good change should have rolled out (exit code $rc, status '$good')"
fi
good_image="$(live_image)"
say ""
say "Deployment web now runs: $good_image"

section "4/4  A broken change: the rollout fails and is rolled back"
broken="$TEST_REGISTRY/demo/crash-loop-web"
say "In this test cluster pods are simulated by KWOK, which decides their fate by"
say "the image's name: pods of an image whose repository is named crash-loop-*"
say "crash (CrashLoopBackOff), like an app that exits on start. So the broken"
say "change is the same app pushed to $broken."
say "The action should notice the crashing pods, fail the step and roll back."
say ""
rc=0
step broken "$broken" "$work/broken.json" || rc=$?
bad="$(status "$work/broken.json")"
say ""
[ "$rc" -ne 0 ] || die "the broken change should have failed the step (exit code 0)"
[ "$bad" = rolled-back ] || die "the broken change should have been rolled back (status '$bad')"
after="$(live_image)"
[ "$after" = "$good_image" ] || die "web should be back on $good_image, runs $after"
say "Expected: the step failed (exit code $rc) with status rolled-back;"
say "Deployment web is back on $after."
kubectl -n demo get deployment web -o wide

section "Demo finished in $((SECONDS - t0)) s: a good deploy rolled out, a broken one was rolled back"
