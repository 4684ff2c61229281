#!/usr/bin/env bash
# Regenerates requirements.lock (pins + sha256 hashes of the runtime
# dependencies) from pyproject.toml; see scripts/lock.py. Needs PyPI.
#   bash scripts/lock.sh            keep current pins where still allowed
#   bash scripts/lock.sh --upgrade  newest versions
#   bash scripts/lock.sh --check    fail when requirements.lock is stale
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/lock.py "$@"
