#!/usr/bin/env bash
# The image the action's Dockerfile takes kustomize and helm from (ARG
# TOOLS_IMAGE): /kustomize and /helm, built from their Go modules by
# scripts/build-tools.sh at the pinned versions, `docker import`ed as one
# layer (no base, nothing else). Used by scripts/action-image.sh (a local
# image, since nothing can be pulled here) and by the release workflow, which
# pushes it and builds the action with it by digest (docs/release.md).
#
# Usage: scripts/tools-image.sh [NAME]   (default deployer-tools:local)
# Re-imported only when a binary changed (a new image ID would invalidate the
# action build's cache of every later layer). Prints NAME on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-deployer-tools:local}"
log() { printf '[tools-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

declare -A bin
while read -r tool path; do bin[$tool]="$path"; done < <(bash scripts/build-tools.sh kustomize helm)
for tool in kustomize helm; do
  [ -x "${bin[$tool]:-}" ] || { log "scripts/build-tools.sh gave no $tool"; exit 1; }
done
key="$(cat "${bin[kustomize]}" "${bin[helm]}" | sha256sum | cut -c1-16)"
label=org.deployer.tools-key
if [ "$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$name" 2>/dev/null)" != "$key" ]; then
  log "importing $("${bin[kustomize]}" version) and helm $("${bin[helm]}" version --template '{{.Version}}') as $name"
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
  cp "${bin[kustomize]}" "$dir/kustomize"
  cp "${bin[helm]}" "$dir/helm"
  chmod 0755 "$dir/kustomize" "$dir/helm"
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$dir" -c kustomize helm \
    | timeout 300 docker import --change "LABEL $label=$key" - "$name" >/dev/null
fi
echo "$name"
