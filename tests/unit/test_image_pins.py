"""What the action image runs is pinned: base and buildx by digest, kustomize and helm by
module version, Python dependencies by hash.

The image itself is built and run in tests/integration/test_action_container.py;
these read the Dockerfile and requirements.lock the runner builds from.
"""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
LOCK = (ROOT / "requirements.lock").read_text()
DIGEST = r"@sha256:[0-9a-f]{64}"


def arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert match, f"no ARG {name}=... in the Dockerfile"
    return match.group(1)


def test_base_and_buildx_images_are_pinned_by_digest() -> None:
    assert re.fullmatch(r"python:[\w.-]+" + DIGEST, arg_default("BASE_IMAGE"))
    assert re.fullmatch(r"docker/buildx-bin:[\w.-]+" + DIGEST, arg_default("BUILDX_IMAGE"))
    # Every FROM goes through those ARGs (a bare `FROM python:...` would bypass the pin).
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert froms and all(
        f in ("${BASE_IMAGE}", "${BUILDX_IMAGE}", "${TOOLS_IMAGE}") for f in froms
    ), froms


def test_the_tools_image_names_the_kustomize_and_helm_that_build_tools_pins() -> None:
    # scripts/build-tools.sh is what builds /kustomize and /helm (tools-image.sh);
    # the ARG's tag says which, so a bump of one without the other fails here.
    script = (ROOT / "scripts" / "build-tools.sh").read_text()
    pins = dict(re.findall(r"^(KUSTOMIZE|HELM)_VERSION=(v[\d.]+)", script, re.MULTILINE))
    expected = f"kustomize-{pins['KUSTOMIZE']}-helm-{pins['HELM']}"
    assert re.fullmatch(
        rf"ghcr\.io/[\w.-]+/deployer-tools:{re.escape(expected)}(?:{DIGEST})?",
        arg_default("TOOLS_IMAGE"),
    ), arg_default("TOOLS_IMAGE")


def test_kustomize_and_helm_are_copied_where_their_variables_point() -> None:
    for name, variable in (("kustomize", "DEPLOYER_KUSTOMIZE"), ("helm", "DEPLOYER_HELM")):
        match = re.search(rf"{variable}=(\S+)", DOCKERFILE)
        assert match, variable
        assert match.group(1) == f"/opt/deployer/bin/{name}"
    assert "COPY --from=tools /kustomize /helm /opt/deployer/bin/" in DOCKERFILE


def test_buildx_is_copied_where_deployer_buildx_points() -> None:
    match = re.search(r"DEPLOYER_BUILDX=(\S+)", DOCKERFILE)
    assert match
    assert f"COPY --from=buildx /buildx {match.group(1)}" in DOCKERFILE


def test_entrypoint_runs_the_venv_interpreter_by_absolute_path() -> None:
    # A workflow's `env: PATH` reaches the container; the entrypoint must not need it.
    match = re.search(r"^ENTRYPOINT \[\"([^\"]+)\"", DOCKERFILE, re.MULTILINE)
    assert match and match.group(1) == "/opt/deployer/venv/bin/python3"


def test_dependencies_install_only_hashed_wheels() -> None:
    assert "--require-hashes --only-binary=:all: --no-deps" in DOCKERFILE


def lock_entries() -> dict[str, list[str]]:
    """name -> hashes, from requirements.lock's `name==version \\ --hash=...` entries."""
    entries: dict[str, list[str]] = {}
    text = re.sub(r"\\\n\s*", " ", LOCK)
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split()
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", words[0]), line
        hashes = [w.removeprefix("--hash=sha256:") for w in words[1:]]
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
        entries[canonicalize_name(words[0].split("==")[0])] = hashes
    return entries


def test_every_lock_entry_is_pinned_with_hashes() -> None:
    assert len(lock_entries()) >= 10


def test_every_runtime_dependency_is_in_the_lock() -> None:
    # A dependency added to pyproject.toml without `bash scripts/lock.sh` fails here.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entries = lock_entries()
    missing = [
        r for r in project["dependencies"] if canonicalize_name(Requirement(r).name) not in entries
    ]
    assert not missing, f"not in requirements.lock (run scripts/lock.sh): {missing}"
