#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok, etcd) from the Go modules pinned in testenv/cluster
# (and testenv/cluster/etcd), once.
# Binaries are cached outside the work tree, keyed by go.mod + go.sum, so a
# second run (or CI on the same machine) does not rebuild.
# Progress goes to stderr; the directory holding the binaries is printed on
# the last line of stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
mod="$here/testenv/cluster"
etcdmod="$mod/etcd"
# Bump recipe when the way the binaries are built changes (flags, ldflags).
recipe=2
key="$( (cat "$mod/go.mod" "$mod/go.sum"; echo "recipe=$recipe") | sha256sum | cut -c1-16)"
etcdkey="$(cat "$etcdmod/go.mod" "$etcdmod/go.sum" | sha256sum | cut -c1-16)"
cache="${DEPLOYER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deployer-testenv}"
out="$cache/cluster-$key"
bins=(kube-apiserver kube-controller-manager kube-scheduler kwok)

cached() {
  for b in "${bins[@]}" etcd; do [ -x "$out/$b" ] || return 1; done
  [ "$(cat "$out/etcd.key" 2>/dev/null)" = "$etcdkey" ]
}
if cached; then
  echo "control plane binaries cached in $out" >&2
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "build-cluster: the Go toolchain is needed (go not on PATH)" >&2; exit 1; }
mkdir -p "$cache"
# One build at a time (two cores); a second caller waits, then finds the cache.
exec 9>"$cache/.build.lock"
if ! flock -n 9; then
  echo "build-cluster: another build is running; waiting for it (at most 45 min) ..." >&2
  flock -w 2700 9 || { echo "build-cluster: gave up waiting for the other build" >&2; exit 1; }
  if cached; then echo "$out"; exit 0; fi
fi
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
start=$SECONDS

complete=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || complete=0; done
if [ "$complete" = 0 ]; then
  mkdir -p "$out.tmp"
  cd "$mod"
  pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
        k8s.io/kubernetes/cmd/kube-scheduler sigs.k8s.io/kwok/cmd/kwok)
  kver="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' go.mod)"
  vpkg=k8s.io/component-base/version
  kminor="$(echo "$kver" | cut -d. -f2)"
  # gitMajor/gitMinor must be set too: pod-security admission panics without a minor.
  ldflags="-s -w -X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$kminor"
  ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
  for p in "${pkgs[@]}"; do
    name="${p##*/}"
    if [ -x "$out.tmp/$name" ]; then continue; fi
    echo "build-cluster: building $name (first time only; several minutes) ..." >&2
    go build -trimpath -ldflags="$ldflags" -o "$out.tmp/$name" "$p"
    echo "build-cluster: $name built ($((SECONDS - start)) s so far)" >&2
  done
  rm -rf "$out"
  mv "$out.tmp" "$out"
fi

if ! [ -x "$out/etcd" ] || [ "$(cat "$out/etcd.key" 2>/dev/null)" != "$etcdkey" ]; then
  echo "build-cluster: building etcd (first time only; a few minutes) ..." >&2
  (cd "$etcdmod" && go build -trimpath -ldflags="-s -w" -o "$out/etcd.tmp" .)
  mv "$out/etcd.tmp" "$out/etcd"
  echo "$etcdkey" > "$out/etcd.key"
  echo "build-cluster: etcd built ($((SECONDS - start)) s so far)" >&2
fi
echo "build-cluster: done in $((SECONDS - start)) s" >&2
echo "$out"
