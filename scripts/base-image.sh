#!/usr/bin/env bash
# Builds the base image for the action's own Dockerfile without pulling
# anything: a Debian bookworm root file system made by debootstrap from the
# machine's configured Debian mirror, trimmed, cached as a tarball and
# `docker import`ed as deployer-base:bookworm.
#
#   cache:  ${DEPLOYER_CACHE:-$HOME/.cache/deployer-testenv}/base-bookworm-python.tar
#           (+ .key: rebuilt when the include list / suite / this recipe change)
#   image:  deployer-base:bookworm, labelled with the same key; re-imported
#           only when the engine lacks it or has another key.
# Environment: DOCKER_HOST (defaults to .testenv/docker.env when present),
# DEBIAN_MIRROR (overrides the mirror found in /etc/apt), BASE_INCLUDE.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
# python3-venv brings python3-pip-whl, so `python3 -m venv` gives a working pip
# inside the image: python3-pip itself is not needed.
INCLUDE="${BASE_INCLUDE:-python3,python3-venv,ca-certificates}"
IMAGE=deployer-base:bookworm
RECIPE=1   # bump when the trimming or import options below change
CACHE="${DEPLOYER_CACHE:-$HOME/.cache/deployer-testenv}"
TARBALL="$CACHE/base-$SUITE-python.tar"
KEY="$(printf '%s|%s|minbase|%s' "$SUITE" "$INCLUDE" "$RECIPE" | sha256sum | cut -c1-16)"

log() { printf '[base-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -z "${DOCKER_HOST:-}" ] && [ -f .testenv/docker.env ]; then
  # shellcheck disable=SC1091
  . .testenv/docker.env
fi
export DOCKER_HOST="${DOCKER_HOST:-unix:///run/docker-test.sock}"

# The Debian mirror apt uses on this machine: deb822 .sources first, then
# one-line .list files; the first enabled "deb" entry for $SUITE.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          if (line ~ /^Types:/)   { sub(/^Types:[ \t]*/, "", line);   types = line }
          if (line ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", line);    uris = line }
          if (line ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", line);  suites = line }
          if (line ~ /^Enabled:/) { sub(/^Enabled:[ \t]*/, "", line); enabled = line }
        }
        if (enabled == "no" || (" " types " ") !~ / deb /) next
        if ((" " suites " ") !~ (" " suite " ")) next
        split(uris, u, /[ \t]+/); print u[1]; exit
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
      | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }'
  done
}

have_image() {
  [ "$(docker image inspect -f '{{index .Config.Labels "org.deployer.base-key"}}' "$IMAGE" 2>/dev/null)" = "$KEY" ]
}

if have_image; then
  log "$IMAGE already in the engine (key $KEY)"
  exit 0
fi

if [ -s "$TARBALL" ] && [ "$(cat "$TARBALL.key" 2>/dev/null)" = "$KEY" ]; then
  log "using cached root file system $TARBALL"
else
  command -v debootstrap >/dev/null || { log "debootstrap not found; run scripts/install-deps.sh"; exit 1; }
  [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
  mirror="${DEBIAN_MIRROR:-$(find_mirror | head -n1)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  mkdir -p "$CACHE"
  work="$(mktemp -d "$CACHE/base-build.XXXXXX")"
  cleanup() {
    # debootstrap mounts proc/sys inside the target; never rm across a mount.
    local m
    for m in $(awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
      umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
  }
  trap cleanup EXIT
  rootfs="$work/rootfs"
  log "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $mirror (about a minute) ..."
  t=$SECONDS
  if ! timeout "${DEBOOTSTRAP_TIMEOUT:-900}" debootstrap --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    log "debootstrap failed; last lines of its log:"
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    exit 1
  fi
  log "debootstrap took $((SECONDS - t))s"

  # Trim: package lists and caches, docs (license files kept), man pages,
  # translations; and keep later `apt-get install`s in the image from
  # bringing them back.
  du_before="$(du -sm "$rootfs" | cut -f1)"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
         "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/debconf/*-old \
         "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/lintian \
         "$rootfs"/usr/share/linda "$rootfs"/var/log/* "$rootfs"/debootstrap
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-deployer-nodoc" <<'NODOC'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
NODOC
  printf 'APT::Install-Recommends "false";\n' >"$rootfs/etc/apt/apt.conf.d/01-deployer-norecommends"
  : >"$rootfs/etc/machine-id"
  log "root file system trimmed from ${du_before} MB to $(du -sm "$rootfs" | cut -f1) MB"

  tar --numeric-owner --xattrs --sort=name -C "$rootfs" -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$TARBALL"
  echo "$KEY" >"$TARBALL.key"
  log "cached $TARBALL ($(du -m "$TARBALL" | cut -f1) MB)"
fi

timeout 300 docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL org.deployer.base-key=$KEY" \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap $SUITE minbase + $INCLUDE" \
  "$TARBALL" "$IMAGE" >/dev/null
log "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1000000}'))"
