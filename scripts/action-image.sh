#!/usr/bin/env bash
# Builds the action's own image from the repo's Dockerfile on local stand-ins
# for the images it pins by digest (nothing can be pulled): the debootstrap
# base (scripts/base-image.sh) and an image holding the buildx the test
# environment builds from Go modules (scripts/build-buildkit.sh), at /buildx
# like docker/buildx-bin, and one holding kustomize and helm
# (scripts/tools-image.sh). Result: deployer-action:local.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[action-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -z "${DOCKER_HOST:-}" ] && [ -f .testenv/docker.env ]; then
  # shellcheck disable=SC1091
  . .testenv/docker.env
fi
export DOCKER_HOST="${DOCKER_HOST:-unix:///run/docker-test.sock}"
if ! timeout 5 docker version >/dev/null 2>&1; then
  log "no Docker engine answers on $DOCKER_HOST; starting the test engine"
  bash scripts/testenv/docker-up.sh
  . .testenv/docker.env
fi

bash scripts/base-image.sh

if [ ! -f Dockerfile ]; then
  log "no Dockerfile in the repository yet; stopping after the base image (deployer-base:bookworm)"
  exit 0
fi
# wheels/: the runtime dependencies as wheels for the image's Python and libc,
# so the Dockerfile's pip install needs no index (containers here cannot reach
# PyPI over TLS). Refilled only when requirements.lock or the base changes.
read -r pyver glibc < <(timeout 60 docker run --rm --network none deployer-base:bookworm \
  python3 -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1].replace(".", "_"))')
mkdir -p .testenv
want="$(sha256sum <requirements.lock | cut -d' ' -f1) $pyver $glibc"
if [ "$(cat .testenv/wheels.stamp 2>/dev/null)" != "$want" ] || ! ls wheels/*.whl >/dev/null 2>&1; then
  log "downloading wheels for CPython $pyver, glibc $glibc into wheels/"
  rm -f wheels/*.whl
  abi="cp${pyver/./}"
  # pip does not widen an explicit manylinux_2_N platform to older glibcs:
  # list every compatible tag (manylinux_2_5 .. 2_N, and the legacy aliases).
  plats=(--platform any --platform manylinux1_x86_64 --platform manylinux2010_x86_64
         --platform manylinux2014_x86_64)
  for ((minor = 5; minor <= ${glibc#2_}; minor++)); do
    plats+=(--platform "manylinux_2_${minor}_x86_64")
  done
  timeout 600 python3 -m pip download -q --no-deps --only-binary=:all: -d wheels \
    --python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 --abi none \
    "${plats[@]}" \
    -r requirements.lock
  echo "$want" >.testenv/wheels.stamp
fi

# buildx: re-imported only when the binary changes (a new image ID would
# invalidate the build cache of every layer after it).
buildx="$(bash scripts/build-buildkit.sh buildx | awk '$1 == "buildx" {print $2}')"
[ -x "$buildx" ] || { log "scripts/build-buildkit.sh gave no buildx"; exit 1; }
BUILDX_IMAGE=deployer-buildx-bin:local
bxkey="$(sha256sum "$buildx" | cut -c1-16)"
if [ "$(docker image inspect -f '{{index .Config.Labels "org.deployer.buildx-key"}}' "$BUILDX_IMAGE" 2>/dev/null)" != "$bxkey" ]; then
  log "importing $("$buildx" version | awk '{print $2}') as $BUILDX_IMAGE"
  bxtmp="$(mktemp -d)"
  cp "$buildx" "$bxtmp/buildx"
  tar --numeric-owner -C "$bxtmp" -c buildx \
    | timeout 300 docker import --change "LABEL org.deployer.buildx-key=$bxkey" - "$BUILDX_IMAGE" >/dev/null
  rm -rf "$bxtmp"
fi

# kustomize and helm (scripts/build-tools.sh), as the image ARG TOOLS_IMAGE names.
TOOLS_IMAGE="$(bash scripts/tools-image.sh deployer-tools:local)"

t=$SECONDS
timeout "${ACTION_BUILD_TIMEOUT:-900}" \
  docker build --build-arg BASE_IMAGE=deployer-base:bookworm --build-arg BUILDX_IMAGE="$BUILDX_IMAGE" \
  --build-arg TOOLS_IMAGE="$TOOLS_IMAGE" \
  -t deployer-action:local .
log "built deployer-action:local in $((SECONDS - t))s"
