#!/usr/bin/env bash
# Builds, once, the tools the action image and the test environment need, from
# the Go module proxy, each pinned below:
#   kustomize      sigs.k8s.io/kustomize/kustomize/v5   (action image, issue 18)
#   helm           helm.sh/helm/v4 cmd/helm             (action image, issue 18)
#   act            github.com/nektos/act                (runs workflows in tests, issue 19)
#   argo-rollouts  github.com/argoproj/argo-rollouts    (controller + CRDs, issue 20)
#   flagger        github.com/fluxcd/flagger            (controller + CRDs, issue 20)
# Each is built inside its own module as the proxy serves it (go mod download
# MODULE@VERSION, then go build in that directory), so the module's go.mod,
# go.sum and replace directives apply exactly as upstream wrote them: `go
# install MODULE@VERSION` refuses modules with replace directives (Argo
# Rollouts has 34), and a local module repeating them would drift on a bump.
# Binaries are cached at $cache/<tool>-<key>/<tool>, key = hash of the pin and
# the recipe. The controllers' upstream manifests (CRDs, ClusterRoles) are
# copied from the same module source into $cache/<tool>-<key>/manifests/, so
# they always match the binary. A second run finds the cache and builds nothing.
#
# Usage: scripts/build-tools.sh [TOOL...]   (default: kustomize helm act)
# Progress and phase times go to stderr; stdout has one line per tool:
#   <tool> <absolute path of its binary>
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

# The pins. Bump a version here and the next run rebuilds that tool only.
KUSTOMIZE_VERSION=v5.8.2 # v5.8.3 needs Go 1.27
HELM_VERSION=v4.3.2
ACT_VERSION=v0.2.89
ARGO_ROLLOUTS_VERSION=v1.10.2
FLAGGER_VERSION=v1.36.1
# Argo Rollouts v1.10 needs Go >= 1.26.10; the one newer Go this machine may use.
NEWER_GO=go1.27.3
# Bump recipe when the way the binaries are built changes (flags, ldflags).
recipe=1

cache="${DEPLOYER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deployer-testenv}"
log() { echo "build-tools: $*" >&2; }

# spec TOOL: sets module, version, pkg (relative to the module), ldflags,
# toolchain and manifests (module-relative files or directories to copy).
spec() {
  toolchain=local manifests=()
  case "$1" in
    kustomize)
      module=sigs.k8s.io/kustomize/kustomize/v5 version=$KUSTOMIZE_VERSION pkg=.
      ldflags="-X sigs.k8s.io/kustomize/api/provenance.version=kustomize/$version" ;;
    helm)
      module=helm.sh/helm/v4 version=$HELM_VERSION pkg=./cmd/helm
      ldflags="-X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean" ;;
    act)
      module=github.com/nektos/act version=$ACT_VERSION pkg=.
      ldflags="-X main.version=${version#v}" ;;
    argo-rollouts)
      module=github.com/argoproj/argo-rollouts version=$ARGO_ROLLOUTS_VERSION
      pkg=./cmd/rollouts-controller toolchain=$NEWER_GO
      ldflags="-X github.com/argoproj/argo-rollouts/utils/version.version=${version#v}"
      ldflags+=" -X github.com/argoproj/argo-rollouts/utils/version.gitTreeState=clean"
      manifests=(manifests/crds manifests/role/argo-rollouts-clusterrole.yaml) ;;
    flagger)
      module=github.com/fluxcd/flagger version=$FLAGGER_VERSION pkg=./cmd/flagger
      ldflags=""
      manifests=(artifacts/flagger/crd.yaml artifacts/flagger/account.yaml) ;;
    *) log "unknown tool '$1' (known: kustomize helm act argo-rollouts flagger)"; exit 2 ;;
  esac
  local key
  key="$(printf '%s\n' "$1" "$module" "$version" "$pkg" "$ldflags" "$toolchain" "${manifests[@]}" \
    "recipe=$recipe" | sha256sum | cut -c1-16)"
  dir="$cache/$1-$key"
}

cached() { [ -x "$dir/$1" ] && [ -f "$dir/.complete" ]; }

build() {
  local tool="$1" t src
  export GOTOOLCHAIN="$toolchain"
  t=$SECONDS
  log "$tool $version: downloading $module (first time only) ..."
  src="$(timeout 900 go mod download -json "$module@$version" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
  # The module's whole build list (its own go.sum verifies every download).
  (cd "$src" && timeout 1800 go mod download)
  log "$tool $version: modules downloaded in $((SECONDS - t)) s"
  t=$SECONDS
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  (cd "$src" && timeout 2400 go build -trimpath -ldflags="-s -w $ldflags" -o "$dir.tmp/$tool" "$pkg")
  log "$tool $version: compiled in $((SECONDS - t)) s"
  if [ "${#manifests[@]}" -gt 0 ]; then
    mkdir -p "$dir.tmp/manifests"
    local m
    for m in "${manifests[@]}"; do
      cp -R "$src/$m" "$dir.tmp/manifests/"
    done
    chmod -R u+w "$dir.tmp/manifests" # the module cache is read-only
  fi
  printf '%s %s\n' "$module" "$version" >"$dir.tmp/.complete"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
}

tools=("$@")
[ "${#tools[@]}" -gt 0 ] || tools=(kustomize helm act)
for tool in "${tools[@]}"; do spec "$tool"; done # unknown names fail before any build
start=$SECONDS
locked=0
for tool in "${tools[@]}"; do
  spec "$tool"
  if ! cached "$tool"; then
    command -v go >/dev/null || { log "the Go toolchain is needed (go not on PATH)"; exit 1; }
    if [ "$locked" = 0 ]; then
      mkdir -p "$cache"
      # One build at a time (two cores); a second caller waits, then finds the cache.
      exec 9>"$cache/.tools.lock"
      if ! flock -n 9; then
        log "another build is running; waiting for it (at most 60 min) ..."
        flock -w 3600 9 || { log "gave up waiting for the other build"; exit 1; }
      fi
      locked=1
      export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
    fi
    cached "$tool" || build "$tool"
    log "$tool $version: ready in $dir"
  fi
  printf '%s %s\n' "$tool" "$dir/$tool"
done
[ "$locked" = 0 ] && log "cached in $cache" || log "done in $((SECONDS - start)) s"
