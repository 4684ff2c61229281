#!/usr/bin/env bash
# The test environment's command-line tools and the OCI chart (issues 18, 19):
#   - kustomize, helm and act, built once from the Go module proxy by
#     scripts/build-tools.sh (cached; rebuilt only when a pin changes);
#   - act's runner image deployer-act-runner:local (the action's Debian base,
#     scripts/base-image.sh, plus the docker CLI), which jobs run in;
#   - the chart testenv/charts/web packaged with that helm and pushed to the
#     test registry (needs scripts/testenv/registry-up.sh first), logged in
#     with the test credentials, so `helm-chart: oci://…` has something real to
#     pull. Pushed again only when the chart's files or the registry changed.
# Writes .testenv/tools.env (merged into .testenv/env by scripts/env-up.sh).
# Idempotent; a second run takes about a second. Every step has a deadline.
# DEPLOYER_TESTENV=DIR: the state is in DIR instead of <repo>/.testenv.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
testenv="${DEPLOYER_TESTENV:-$root/.testenv}"
state="$testenv/tools"
envfile="$testenv/tools.env"
chart_dir="$root/testenv/charts/web"
CHART_REPOSITORY=deployer-testenv/charts # the chart is <registry>/deployer-testenv/charts/web

t0=$SECONDS
log() { printf '[tools-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

t=$SECONDS
declare -A bin
while read -r tool path; do bin[$tool]="$path"; done < <(bash scripts/build-tools.sh kustomize helm act)
for tool in kustomize helm act; do
  [ -x "${bin[$tool]:-}" ] || die "scripts/build-tools.sh gave no $tool"
done
log "kustomize, helm, act: ready in $((SECONDS - t))s"

# --- act's runner image --------------------------------------------------------
# Jobs run by act (tests/act.py) run in this container, as on a hosted runner's
# VM: the action's base (Debian, bash, python3) plus the docker CLI, on the host
# network with the engine's socket, and stand-ins for the cloud CLIs a hosted
# runner has (testenv/act/bin/: `aws eks update-kubeconfig`). Rebuilt when the
# base, the CLI or a stand-in changes.
[ -f "$testenv/docker.env" ] || die "no $testenv/docker.env: run scripts/testenv/docker-up.sh first"
# shellcheck disable=SC1091
. "$testenv/docker.env"
export DOCKER_HOST
RUNNER_IMAGE=deployer-act-runner:local
t=$SECONDS
bash scripts/base-image.sh
docker_cli="$(command -v docker)" || die "the docker CLI is needed"
runner_key="$( (docker image inspect -f '{{.Id}}' deployer-base:bookworm; sha256sum <"$docker_cli"
  cd testenv/act/bin && sha256sum -- *) | sha256sum | cut -c1-16)"
if [ "$(docker image inspect -f '{{index .Config.Labels "org.deployer.runner-key"}}' "$RUNNER_IMAGE" \
  2>/dev/null)" != "$runner_key" ]; then
  ctx="$(mktemp -d)"
  cp "$docker_cli" "$ctx/docker"
  cp -r testenv/act/bin "$ctx/standins"
  printf '%s\n' "FROM deployer-base:bookworm" "COPY docker /usr/local/bin/docker" \
    "COPY standins/ /usr/local/bin/" \
    "LABEL org.deployer.runner-key=$runner_key" >"$ctx/Dockerfile"
  timeout 300 docker build -q -t "$RUNNER_IMAGE" "$ctx" >/dev/null 2>&1 \
    || { rm -rf "$ctx"; die "building $RUNNER_IMAGE failed"; }
  rm -rf "$ctx"
  log "act's runner image $RUNNER_IMAGE built in $((SECONDS - t))s"
else
  log "act's runner image $RUNNER_IMAGE is current"
fi

# --- the OCI chart ------------------------------------------------------------
[ -f "$testenv/registry.env" ] || die "no $testenv/registry.env: run scripts/testenv/registry-up.sh first"
# shellcheck disable=SC1091
. "$testenv/registry.env"
mkdir -p "$state"
chmod 700 "$state"
# helm's own state (registry login, caches) stays here, never in ~/.config/helm.
export HELM_CONFIG_HOME="$state/helm/config" HELM_CACHE_HOME="$state/helm/cache" \
  HELM_DATA_HOME="$state/helm/data" HELM_REGISTRY_CONFIG="$state/helm/registry.json"
helm() { timeout 60 "${bin[helm]}" "$@"; }

version="$(awk '$1 == "version:" {print $2; exit}' "$chart_dir/Chart.yaml")"
name="$(awk '$1 == "name:" {print $2; exit}' "$chart_dir/Chart.yaml")"
ref="oci://$TEST_REGISTRY/$CHART_REPOSITORY/$name"
# The stamp: the chart's files, the registry (its data dir may be new) and helm.
want="$( (cd "$chart_dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum
  echo "$TEST_REGISTRY $(stat -c %i "$testenv/registry/data") ${bin[helm]}") | sha256sum | cut -c1-16)"
stamp="$state/chart.stamp"
digest=""
if [ "$(head -n 1 "$stamp" 2>/dev/null)" = "$want" ]; then
  digest="$(sed -n 2p "$stamp")"
  # Still there? (A registry wiped without a new data directory would not show in the stamp.)
  helm show chart "$ref" --version "$version" --plain-http >/dev/null 2>&1 || digest=""
fi
if [ -z "$digest" ]; then
  t=$SECONDS
  printf '%s' "$TEST_REGISTRY_PASSWORD" \
    | helm registry login "$TEST_REGISTRY" --plain-http -u "$TEST_REGISTRY_USERNAME" --password-stdin >/dev/null 2>&1 \
    || die "helm registry login $TEST_REGISTRY as $TEST_REGISTRY_USERNAME failed"
  pkg="$(mktemp -d)"
  trap 'rm -rf "$pkg"' EXIT
  helm package "$chart_dir" -d "$pkg" >/dev/null
  out="$(helm push "$pkg/$name-$version.tgz" "oci://$TEST_REGISTRY/$CHART_REPOSITORY" --plain-http 2>&1)" \
    || die "helm push to oci://$TEST_REGISTRY/$CHART_REPOSITORY failed: $out"
  digest="$(printf '%s\n' "$out" | awk '$1 == "Digest:" {print $2; exit}')"
  [ -n "$digest" ] || die "helm push printed no digest: $out"
  printf '%s\n%s\n' "$want" "$digest" >"$stamp"
  log "chart $ref:$version pushed ($digest) in $((SECONDS - t))s"
else
  log "chart $ref:$version already in the registry ($digest)"
fi

umask 077
cat >"$envfile.tmp" <<EOF
# Written by scripts/testenv/tools-up.sh; merged into .testenv/env by scripts/env-up.sh.
export DEPLOYER_KUSTOMIZE=${bin[kustomize]}
export DEPLOYER_HELM=${bin[helm]}
export TEST_ACT=${bin[act]}
export TEST_ACT_RUNNER_IMAGE=$RUNNER_IMAGE
export TEST_OCI_CHART=$ref
export TEST_OCI_CHART_VERSION=$version
export TEST_OCI_CHART_DIGEST=$digest
EOF
mv "$envfile.tmp" "$envfile"
log "tools ready in $((SECONDS - t0))s; wrote $envfile"
