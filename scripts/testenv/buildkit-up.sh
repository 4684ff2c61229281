#!/usr/bin/env bash
# Makes BuildKit builds possible in the tests, with nothing pulled from the
# internet:
#   1. buildx, buildkitd and buildctl from the Go module proxy
#      (scripts/build-buildkit.sh; cached, built once);
#   2. a BuildKit image for buildx's docker-container driver, assembled from
#      those binaries and Debian's runc, pushed to the test registry; the
#      action refers to it by digest (DEPLOYER_BUILDKIT_IMAGE), as it refers
#      to moby/buildkit by digest on a real runner. The engine keeps it
#      locally too, so `buildx create` finds it without a pull;
#   3. several platforms: binfmt_misc with Debian's qemu-user-static, proved by
#      running an arm64 busybox (Debian's busybox-static:arm64, downloaded
#      once with a private apt state, the host's apt configuration untouched).
# Needs the engine and the registry (docker-up.sh, registry-up.sh) first.
# Idempotent: an image of the same binaries already in the engine and the
# registry is reused. Writes .testenv/buildkit.env.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cache="${DEPLOYER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deployer-testenv}"
RECIPE=1 # bump when the image's contents or layout below change
REPO=deployer-testenv/buildkit

log() { printf '[buildkit-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -f .testenv/docker.env ] || die ".testenv/docker.env missing: run scripts/testenv/docker-up.sh first"
[ -f .testenv/registry.env ] || die ".testenv/registry.env missing: run scripts/testenv/registry-up.sh first"
# shellcheck disable=SC1091
. .testenv/docker.env
# shellcheck disable=SC1091
. .testenv/registry.env
export DOCKER_HOST

# -- 1. binaries ------------------------------------------------------------------------
built="$(bash scripts/build-buildkit.sh)"
buildx="$(awk '$1 == "buildx" {print $2}' <<<"$built")"
bkdir="$(awk '$1 == "buildkit" {print $2}' <<<"$built")"
[ -x "$buildx" ] && [ -x "$bkdir/buildkitd" ] || die "scripts/build-buildkit.sh gave no binaries"
runc="$(command -v runc || true)"
[ -n "$runc" ] || die "runc not found; run scripts/install-deps.sh"

# A private docker config with the registry login, for the push and the smoke
# test; removed on exit. The password goes through stdin, never argv.
config="$(mktemp -d)"
cleanup() {
  if [ -n "${smoke_builder:-}" ]; then
    DOCKER_CONFIG="$config" timeout 60 "$buildx" rm --force "$smoke_builder" >/dev/null 2>&1 || true
  fi
  rm -rf "$config"
}
trap cleanup EXIT
printf '%s' "$TEST_REGISTRY_PASSWORD" | DOCKER_CONFIG="$config" timeout 30 \
  docker login -u "$TEST_REGISTRY_USERNAME" --password-stdin "$TEST_REGISTRY" >/dev/null 2>&1 \
  || die "docker login to the test registry $TEST_REGISTRY failed"

# -- 2. the BuildKit image --------------------------------------------------------------
# Keyed by what goes in: a change of any binary or of this recipe makes a new image.
key="$( (sha256sum "$bkdir/buildkitd" "$bkdir/buildctl" "$runc" /bin/busybox | cut -d' ' -f1
         echo "recipe=$RECIPE") | sha256sum | cut -c1-16)"
bkver="$("$bkdir/buildkitd" --version | awk '{print $3}')"
tag="$TEST_REGISTRY/$REPO:$bkver-$key"

# The digest the registry holds for $tag, or nothing.
registry_digest() {
  # Credentials through stdin (-K -), not argv.
  printf 'user = "%s:%s"\n' "$TEST_REGISTRY_USERNAME" "$TEST_REGISTRY_PASSWORD" \
  | curl -fsS --max-time 10 -K - \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -o /dev/null -D - "http://$TEST_REGISTRY/v2/$REPO/manifests/$bkver-$key" 2>/dev/null \
    | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}'
}

digest=""
if docker image inspect "$tag" >/dev/null 2>&1; then
  digest="$(registry_digest || true)"
  if [ -n "$digest" ] && docker image inspect "$TEST_REGISTRY/$REPO@$digest" >/dev/null 2>&1; then
    log "BuildKit image $tag already in the engine and the registry (reused)"
  else
    digest=""
  fi
fi

if [ -z "$digest" ]; then
  log "assembling the BuildKit image $tag (buildkitd $bkver, $("$runc" --version | head -n1))"
  work="$(mktemp -d)"
  rootfs="$work/rootfs"
  mkdir -p "$rootfs"/{usr/bin,bin,etc/buildkit,var/lib/buildkit,run,tmp}
  chmod 1777 "$rootfs/tmp"
  cp "$bkdir/buildkitd" "$bkdir/buildctl" "$rootfs/usr/bin/"
  cp "$runc" "$rootfs/usr/bin/runc"
  # runc is dynamically linked (libseccomp, libc): its libraries, at the same paths.
  for lib in $(ldd "$runc" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  # A shell and the usual tools, for `docker exec` when something needs a look.
  cp /bin/busybox "$rootfs/bin/busybox"
  for tool in sh ls cat ps true mount; do ln -s busybox "$rootfs/bin/$tool"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$rootfs/etc/group"
  chroot "$rootfs" /usr/bin/runc --version >/dev/null || die "runc does not run inside the image's root file system"
  tar --numeric-owner -C "$rootfs" -c . | timeout 300 docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'VOLUME /var/lib/buildkit' \
    --change 'ENTRYPOINT ["buildkitd"]' \
    --change "LABEL org.deployer.buildkit-key=$key org.opencontainers.image.version=$bkver" \
    --message "buildkitd $bkver from Go modules + Debian runc" \
    - "$tag" >/dev/null
  rm -rf "$work"
  docker tag "$tag" "$REPO:$bkver"
  DOCKER_CONFIG="$config" timeout 300 docker push -q "$tag" >/dev/null
  digest="$(registry_digest)"
  [ -n "$digest" ] || die "pushed $tag but the registry reports no digest for it"
  docker image inspect "$TEST_REGISTRY/$REPO@$digest" >/dev/null 2>&1 \
    || die "the engine does not know $TEST_REGISTRY/$REPO@$digest after the push"
  log "BuildKit image $TEST_REGISTRY/$REPO@$digest ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}'))"
  smoke=1
fi
image="$TEST_REGISTRY/$REPO@$digest"

# -- 3. several platforms -----------------------------------------------------------------
arm64_busybox=""
bbdir="$cache/busybox-arm64"
if [ ! -x "$bbdir/busybox" ]; then
  # Its own sources list (Debian bookworm, arm64 only, signed by Debian's
  # archive key), lists and cache: the host's apt (Debian or, on GitHub's
  # runners, Ubuntu, whose main mirror has no arm64) is neither used nor changed.
  mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  log "downloading Debian's busybox-static for arm64 from $mirror (private apt state in $bbdir/apt)"
  mkdir -p "$bbdir/apt/lists/partial" "$bbdir/apt/cache/archives/partial"
  printf 'deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bookworm main\n' \
    "$mirror" >"$bbdir/apt/sources.list"
  apt=(-q -o APT::Architecture=arm64 -o APT::Architectures::=arm64
       -o "Dir::Etc::SourceList=$bbdir/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
       -o "Dir::State::Lists=$bbdir/apt/lists" -o "Dir::Cache=$bbdir/apt/cache"
       -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
  if timeout 300 apt-get "${apt[@]}" update >"$bbdir/apt.log" 2>&1 \
     && (cd "$bbdir/apt" && timeout 120 apt-get "${apt[@]}" download busybox-static:arm64 >>"$bbdir/apt.log" 2>&1); then
    rm -rf "$bbdir/x"
    dpkg-deb -x "$bbdir"/apt/busybox-static_*_arm64.deb "$bbdir/x"
    mv "$bbdir/x/bin/busybox" "$bbdir/busybox"
    rm -rf "$bbdir/x" "$bbdir"/apt/*.deb "$bbdir/apt/lists"
  else
    log "could not download busybox-static:arm64 (see $bbdir/apt.log); no arm64 RUN in the tests"
  fi
fi
if [ -x "$bbdir/busybox" ]; then
  binfmt=/proc/sys/fs/binfmt_misc
  if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
      || log "cannot mount binfmt_misc (not root, or not allowed in this VM)"
  fi
  if [ -e "$binfmt/register" ] && command -v update-binfmts >/dev/null; then
    # Registers the qemu-* formats Debian's qemu-user-static ships, and only
    # those (flags F: the interpreter is opened now, so it works inside
    # containers too).
    for format in $(ls /usr/share/binfmts/ 2>/dev/null | grep '^qemu-'); do
      [ -e "$binfmt/$format" ] || update-binfmts --enable "$format" >/dev/null 2>&1 || true
    done
  fi
  if [ "$(timeout 10 "$bbdir/busybox" uname -m 2>/dev/null)" = aarch64 ]; then
    arm64_busybox="$bbdir/busybox"
    log "arm64 emulation works (qemu-user-static through binfmt_misc)"
  else
    log "arm64 binaries do not run here (no binfmt_misc/qemu-user-static): no arm64 RUN in the tests"
  fi
fi

# -- smoke test: what the action does, once per new image ----------------------------------
if [ "${smoke:-0}" = 1 ] || [ "${BUILDKIT_UP_SMOKE:-0}" = 1 ]; then
  smoke_builder="deployer-testenv-smoke-$$"
  ctx="$(mktemp -d)"
  cp /bin/busybox "$ctx/busybox-amd64"
  platforms=linux/amd64
  if [ -n "$arm64_busybox" ]; then cp "$arm64_busybox" "$ctx/busybox-arm64"; platforms+=,linux/arm64; fi
  # The action writes its own buildkitd config like this one: the loopback
  # registry speaks plain HTTP.
  printf '[registry."%s"]\n  http = true\n' "$TEST_REGISTRY" >"$ctx/buildkitd.toml"
  printf 'FROM scratch\nARG TARGETARCH\nCOPY busybox-$TARGETARCH /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "/bin/busybox uname -m > /arch"]\n' >"$ctx/Dockerfile"
  log "smoke test: buildx create (docker-container, $image), build for $platforms with a RUN, push"
  t=$SECONDS
  DOCKER_CONFIG="$config" timeout 120 "$buildx" create --name "$smoke_builder" --driver docker-container \
    --driver-opt "image=$image,network=host" --buildkitd-config "$ctx/buildkitd.toml" >/dev/null
  DOCKER_CONFIG="$config" timeout 300 "$buildx" build --builder "$smoke_builder" --progress quiet \
    --platform "$platforms" --provenance false --push -t "$TEST_REGISTRY/deployer-testenv/smoke:latest" "$ctx" >/dev/null \
    || { rm -rf "$ctx"; die "smoke build on the docker-container builder failed"; }
  DOCKER_CONFIG="$config" timeout 60 "$buildx" rm "$smoke_builder" >/dev/null 2>&1
  smoke_builder=""
  rm -rf "$ctx"
  log "smoke test passed in $((SECONDS - t))s"
fi

tmp="$root/.testenv/buildkit.env.tmp"
{
  echo "# Written by scripts/testenv/buildkit-up.sh; merged into .testenv/env by scripts/env-up.sh."
  printf 'export DEPLOYER_BUILDX=%s\n' "$buildx"
  printf 'export DEPLOYER_BUILDKIT_IMAGE=%s\n' "$image"
  [ -z "$arm64_busybox" ] || printf 'export TEST_BUSYBOX_ARM64=%s\n' "$arm64_busybox"
} >"$tmp"
mv "$tmp" "$root/.testenv/buildkit.env"
log "BuildKit ready: buildx $("$buildx" version | awk '{print $2}'), image $image"
