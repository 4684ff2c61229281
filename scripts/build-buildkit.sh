#!/usr/bin/env bash
# Builds, once, the BuildKit tools the test environment needs, from the Go
# module proxy:
#   - buildx (github.com/docker/buildx, pinned below), cached at
#     $cache/buildx-$BUILDX_VERSION/buildx;
#   - buildkitd and buildctl (github.com/moby/buildkit, pinned in
#     testenv/buildkit/go.mod), cached at $cache/buildkit-<key>/.
# A second run (or CI on the same machine) finds the cache and builds nothing;
# a rebuild happens only when a pinned version or the recipe changes.
# Progress goes to stderr; stdout ends with two lines:
#   buildx <absolute path of the buildx binary>
#   buildkit <absolute directory holding buildkitd and buildctl>
# With the argument `buildx`, only buildx is built and only its line printed
# (scripts/action-image.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
BUILDX_VERSION=v0.38.2
mod="$here/testenv/buildkit"
# Bump recipe when the way the binaries are built changes (flags, ldflags).
recipe=1
cache="${DEPLOYER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deployer-testenv}"
bxdir="$cache/buildx-$BUILDX_VERSION"
bkkey="$( (cat "$mod/go.mod" "$mod/go.sum"; echo "recipe=$recipe") | sha256sum | cut -c1-16)"
bkdir="$cache/buildkit-$bkkey"

log() { echo "build-buildkit: $*" >&2; }
buildx_cached() { [ -x "$bxdir/buildx" ] && [ "$(cat "$bxdir/recipe" 2>/dev/null)" = "$recipe" ]; }
only_buildx=0
[ "${1:-}" != buildx ] || only_buildx=1
buildkit_cached() { [ "$only_buildx" = 1 ] || { [ -x "$bkdir/buildkitd" ] && [ -x "$bkdir/buildctl" ]; }; }
done_() {
  printf 'buildx %s\n' "$bxdir/buildx"
  [ "$only_buildx" = 1 ] || printf 'buildkit %s\n' "$bkdir"
  exit 0
}

if buildx_cached && buildkit_cached; then
  log "cached in $cache"
  done_
fi
command -v go >/dev/null || { log "the Go toolchain is needed (go not on PATH)"; exit 1; }
mkdir -p "$cache"
# One build at a time (two cores); a second caller waits, then finds the cache.
exec 9>"$cache/.buildkit.lock"
if ! flock -n 9; then
  log "another build is running; waiting for it (at most 20 min) ..."
  flock -w 1200 9 || { log "gave up waiting for the other build"; exit 1; }
  if buildx_cached && buildkit_cached; then done_; fi
fi
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
start=$SECONDS

if ! buildx_cached; then
  log "building buildx $BUILDX_VERSION (first time only; about 2 min) ..."
  rm -rf "$bxdir.tmp"
  mkdir -p "$bxdir.tmp"
  GOBIN="$bxdir.tmp" go install -trimpath \
    -ldflags="-s -w -X github.com/docker/buildx/version.Version=$BUILDX_VERSION" \
    "github.com/docker/buildx/cmd/buildx@$BUILDX_VERSION"
  echo "$recipe" >"$bxdir.tmp/recipe"
  mkdir -p "$bxdir"
  # Replace file by file, so a caller holding the path never sees it missing.
  mv -f "$bxdir.tmp/buildx" "$bxdir/buildx"
  mv -f "$bxdir.tmp/recipe" "$bxdir/recipe"
  rm -rf "$bxdir.tmp"
  log "buildx built ($((SECONDS - start)) s so far)"
fi

if ! buildkit_cached; then
  bkver="$(awk '$1 == "require" && $2 == "github.com/moby/buildkit" {print $3; exit}
                $1 == "github.com/moby/buildkit" {print $2; exit}' "$mod/go.mod")"
  log "building buildkitd and buildctl $bkver (first time only; about 2 min) ..."
  rm -rf "$bkdir.tmp"
  mkdir -p "$bkdir.tmp"
  for c in buildkitd buildctl; do
    (cd "$mod" && go build -trimpath \
      -ldflags="-s -w -X github.com/moby/buildkit/version.Version=$bkver" \
      -o "$bkdir.tmp/$c" "github.com/moby/buildkit/cmd/$c")
  done
  rm -rf "$bkdir"
  mv "$bkdir.tmp" "$bkdir"
  log "buildkitd and buildctl built ($((SECONDS - start)) s so far)"
fi
log "done in $((SECONDS - start)) s"
done_
