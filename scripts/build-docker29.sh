#!/usr/bin/env bash
# Builds, once, the second test engine (Docker Engine 29 on containerd 2) from
# the Go module proxy, pinned below:
#   - dockerd and docker-proxy: github.com/moby/moby/v2 $MOBY_VERSION. Docker
#     Engine releases are tagged docker-v29.x.y in git; the Go module carries
#     v2.0.0-beta.N tags of master, each merged into the docker-29.x branch as
#     a release. v2.0.0-beta.24 (2026-09-15) is the newest the proxy serves;
#     its releases/versions.yaml reads "last: 29.8.0, next: 29.8.1", i.e. it is
#     what ships as Docker Engine 29.8.1 ($ENGINE_VERSION, stamped into the
#     binary so `docker version` says so);
#   - containerd and containerd-shim-runc-v2: github.com/containerd/containerd/v2
#     $CONTAINERD_VERSION;
#   - runc: github.com/opencontainers/runc $RUNC_VERSION (with cgo and
#     libseccomp, as upstream builds it). Debian's runc 1.1.5 is refused: Docker
#     29 gives every container its own time namespace, which runc learned in 1.2
#     (`docker run` fails with 'runc create failed: namespace {"time" ""} does
#     not exist'). The engine's "time-namespaces": false feature would hide that,
#     but it is not what users run.
# Each `go install pkg@version` builds with the module's own go.mod, so the
# versions of every dependency are the ones upstream tested.
# Cached at $cache/docker29-<key>/, where key hashes the pins and the recipe:
# a second run builds nothing. Progress goes to stderr; stdout's last line is
# the directory holding the binaries.
set -euo pipefail
MOBY_VERSION=v2.0.0-beta.24
ENGINE_VERSION=29.8.1
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
# Bump when the way the binaries are built changes (flags, tags, ldflags).
recipe=1
cache="${DEPLOYER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deployer-testenv}"
key="$(printf 'moby=%s engine=%s containerd=%s runc=%s recipe=%s\n' \
  "$MOBY_VERSION" "$ENGINE_VERSION" "$CONTAINERD_VERSION" "$RUNC_VERSION" "$recipe" \
  | sha256sum | cut -c1-16)"
out="$cache/docker29-$key"
bins=(dockerd docker-proxy containerd containerd-shim-runc-v2 runc)

log() { echo "build-docker29: $*" >&2; }
cached() {
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}
if cached; then
  log "cached in $out"
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { log "the Go toolchain is needed (go not on PATH)"; exit 1; }
mkdir -p "$cache"
# One build at a time (two cores); a second caller waits, then finds the cache.
exec 9>"$cache/.docker29.lock"
if ! flock -n 9; then
  log "another build is running; waiting for it (at most 30 min) ..."
  flock -w 1800 9 || { log "gave up waiting for the other build"; exit 1; }
  if cached; then echo "$out"; exit 0; fi
fi
# Static Go binaries, as upstream's release builds (netgo, osusergo); no cgo
# (but runc), so no btrfs support (the engine uses overlayfs), nothing else is lost.
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
start=$SECONDS
mkdir -p "$out.tmp"

# install BINARY PACKAGE@VERSION [go flags...]: one binary into $out.tmp.
install() {
  local name="$1" pkg="$2"
  shift 2
  if [ -x "$out.tmp/$name" ]; then return 0; fi
  log "building $name ($pkg; first time only, a few minutes) ..."
  GOBIN="$out.tmp/gobin" go install -trimpath "$@" "$pkg"
  mv "$out.tmp/gobin/$name" "$out.tmp/$name"
  log "$name built ($((SECONDS - start)) s so far)"
}

moby=github.com/moby/moby/v2
mobyver="$moby/dockerversion"
install dockerd "$moby/cmd/dockerd@$MOBY_VERSION" \
  -tags "netgo osusergo static_build nri_no_wasm exclude_graphdriver_btrfs" \
  -ldflags "-s -w -X $mobyver.Version=$ENGINE_VERSION -X $mobyver.GitCommit=$MOBY_VERSION -X $mobyver.PlatformName=deployer-testenv"
install docker-proxy "$moby/cmd/docker-proxy@$MOBY_VERSION" -tags "netgo osusergo static_build" -ldflags "-s -w"
ctrd=github.com/containerd/containerd/v2
install containerd "$ctrd/cmd/containerd@$CONTAINERD_VERSION" \
  -tags "netgo osusergo static_build no_btrfs" \
  -ldflags "-s -w -X $ctrd/version.Version=$CONTAINERD_VERSION -X $ctrd/version.Revision=module-proxy"
install containerd-shim-runc-v2 "$ctrd/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
  -tags "netgo osusergo static_build no_btrfs" \
  -ldflags "-s -w -X $ctrd/version.Version=$CONTAINERD_VERSION -X $ctrd/version.Revision=module-proxy"
# runc needs cgo (its nsenter is C) and libseccomp (Debian's libseccomp-dev, pkg-config).
pkg-config --exists libseccomp \
  || { log "libseccomp-dev and pkg-config are needed for runc; run scripts/install-deps.sh"; exit 1; }
CGO_ENABLED=1 install runc "github.com/opencontainers/runc@$RUNC_VERSION" -tags "seccomp urfave_cli_no_docs" \
  -ldflags "-s -w -X main.gitCommit=module-proxy"

rm -rf "$out.tmp/gobin" "$out"
mv "$out.tmp" "$out"
log "done in $((SECONDS - start)) s: $out"
echo "$out"
