#!/usr/bin/env bash
# Validates the GitHub Actions files of the repository:
#   1. check-jsonschema with its vendored (offline) schemas:
#      every workflow (.github/workflows/*.yml, examples/*.yml) against
#      vendor.github-workflows, action.yml against vendor.github-actions;
#   2. actionlint on the same workflows (expressions, contexts, `needs`,
#      runner labels, and the `run:` scripts, which it passes to the
#      ShellCheck binary when one is on PATH).
# actionlint is built once from its Go module into the test-environment cache
# (outside the work tree): ${DEPLOYER_CACHE:-$HOME/.cache/deployer-testenv}/bin.
# Works offline once that binary exists. Exits non-zero on any problem.
set -euo pipefail
cd "$(dirname "$0")/.."

ACTIONLINT_VERSION=v1.7.12
PYTHON="${PYTHON:-python3}"
cache="${DEPLOYER_CACHE:-$HOME/.cache/deployer-testenv}"
bindir="$cache/bin"
actionlint="$bindir/actionlint-$ACTIONLINT_VERSION"

log() { printf '[lint-workflows] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml examples/*.yml examples/*.yaml)
shopt -u nullglob
[ "${#workflows[@]}" -gt 0 ] || die "no workflow files found under .github/workflows/ or examples/"
[ -f action.yml ] || die "action.yml not found"

failed=0

# 1. JSON schemas (vendored in check-jsonschema: no network needed).
"$PYTHON" -m check_jsonschema --version >/dev/null 2>&1 \
  || die "check-jsonschema is not installed (it is in the test extras: pip install -e '.[test]')"
log "check-jsonschema (vendor.github-workflows): ${workflows[*]}"
"$PYTHON" -m check_jsonschema --builtin-schema vendor.github-workflows "${workflows[@]}" || failed=1
log "check-jsonschema (vendor.github-actions): action.yml"
"$PYTHON" -m check_jsonschema --builtin-schema vendor.github-actions action.yml || failed=1

# 2. actionlint, pinned; built from source only when this version is missing.
if [ ! -x "$actionlint" ]; then
  command -v go >/dev/null || die "go is needed once to build actionlint $ACTIONLINT_VERSION into $bindir"
  log "building actionlint $ACTIONLINT_VERSION into $bindir (once)"
  mkdir -p "$bindir"
  tmp="$(mktemp -d "$bindir/.actionlint.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  # Outside the work tree so the repository's go.mod files play no part.
  (cd "$tmp" && GOBIN="$tmp" GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false" \
    timeout 900 go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION") \
    || die "could not build actionlint $ACTIONLINT_VERSION"
  mv "$tmp/actionlint" "$actionlint"
fi
if command -v shellcheck >/dev/null; then
  log "actionlint $ACTIONLINT_VERSION (run: scripts checked with $(shellcheck --version | sed -n 's/^version: /shellcheck /p'))"
else
  log "actionlint $ACTIONLINT_VERSION (shellcheck not installed: run: scripts are not shellchecked)"
fi
# -shellcheck= (empty) disables the integration explicitly when it is absent.
sc_flag=()
command -v shellcheck >/dev/null || sc_flag=(-shellcheck=)
"$actionlint" "${sc_flag[@]}" "${workflows[@]}" || failed=1

if [ "$failed" -ne 0 ]; then
  die "workflow lint FAILED (see above)"
fi
log "ok: ${#workflows[@]} workflow(s) and action.yml"
