#!/usr/bin/env bash
# Installs what the test environment and the tests need, on Debian 12 as root.
# Idempotent and fast when everything is already there:
#   - apt-get update/install only when a package is missing;
#   - `pip install -e '.[test]'` only when pyproject.toml changed since the last
#     successful install (stamp in .testenv/, keyed by its sha256) or the
#     project is not importable.
# Go is NOT installed here (the machines have it); build-cluster.sh says so
# clearly when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
PYTHON="${PYTHON:-python3}"

log() { printf '[install-deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

packages=(docker.io docker-registry apache2-utils busybox-static openssl debootstrap iproute2 procps
          curl ca-certificates make
          # BuildKit in the tests: runc for the BuildKit image, QEMU for foreign platforms
          # (and Debian's key for its arm64 busybox), python3 (/usr/bin) for
          # testenv/docker/runc-bounded.
          runc qemu-user-static binfmt-support python3 debian-archive-keyring
          # runc for the Docker 29 engine is built with cgo and libseccomp (scripts/build-docker29.sh).
          gcc libc6-dev libseccomp-dev pkg-config
          fonts-noto-color-emoji)
# The browser test of the job summary (tests/browser) needs a Chromium. Debian's
# package, unless one is there already (GitHub's Ubuntu runners ship one, and
# Ubuntu's `chromium` package is only a wrapper around a snap).
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || packages+=(chromium)
# A fresh Debian has python3 but no pip for it.
command -v "$PYTHON" >/dev/null && "$PYTHON" -c "import pip" >/dev/null 2>&1 \
  || packages+=(python3 python3-pip python3-venv)

missing=()
for p in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${missing[*]} (run this script as root)"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 1200 apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >/dev/null
  log "Debian packages installed"
fi

# Debian's docker-registry package ships a system service (systemd unit and
# /etc/init.d script) that listens on :5000 with its own config. On a machine
# booted with systemd it is started on install and would take the port our
# test registry wants; it serves no purpose here, so stop and disable it.
# (On machines without systemd, policy-rc.d usually stops it from starting.)
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  if systemctl is-enabled --quiet docker-registry 2>/dev/null \
     || systemctl is-active --quiet docker-registry 2>/dev/null; then
    log "stopping and disabling the system docker-registry service (it binds :5000)"
    timeout 60 systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
elif [ -x /etc/init.d/docker-registry ] \
     && pgrep -x docker-registry -a 2>/dev/null | grep -q '/etc/docker/registry/config.yml'; then
  log "stopping the system docker-registry service (it binds :5000)"
  timeout 60 /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi

# Python: the project (editable) with its test extras.
mkdir -p .testenv
stamp=.testenv/pip-install.stamp
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.executable)')"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ] || ! "$PYTHON" -c 'import deployer, pytest, docker' >/dev/null 2>&1; then
  log "installing the project and its test dependencies with pip"
  pipflags=()
  # Debian's own python3 refuses pip installs (PEP 668) outside a venv; the
  # Makefile and CI call python3 directly, so on such a (throwaway CI)
  # machine install into it anyway. pyenv / venv interpreters are unaffected.
  if "$PYTHON" -c 'import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'; then
    log "$PYTHON is Debian-managed (PEP 668): installing with --break-system-packages"
    pipflags+=(--break-system-packages)
  fi
  PIP_ROOT_USER_ACTION=ignore timeout 1200 "$PYTHON" -m pip install -q "${pipflags[@]}" -e "${root}[test]"
  printf '%s\n' "$want" >"$stamp"
  log "Python dependencies installed"
fi
