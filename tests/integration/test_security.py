"""Issue 17 against the real engine and registry: what a pushed image may not contain.

The build runs ``COPY . .`` on a context holding every credential file a job's
earlier steps leave in the workspace; the layers of the image the registry holds
are then listed, so the test sees what anyone who pulls it would get.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import need_service
from tests.integration.test_build_push import go, registry_get, runner_env, workspace

pytestmark = pytest.mark.integration
__all__ = ["workspace"]  # fixture used here

TOKEN_CONFIG = '[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic eC1hY2Nlc3M=\n'


@pytest.fixture
def services() -> dict[str, str]:
    return need_service(
        "DOCKER_HOST",
        "TEST_REGISTRY",
        "TEST_REGISTRY_USERNAME",
        "TEST_REGISTRY_PASSWORD",
        "DEPLOYER_BUILDX",
    )


def pushed_files(services: dict[str, str], image: str) -> set[str]:
    """Every path in every layer of ``repo@digest`` as the registry serves it."""
    repo, digest = image.split("@")
    path = repo.split("/", 1)[1]
    status, _, body = registry_get(services, f"/v2/{path}/manifests/{digest}")
    assert status == 200, body
    names: set[str] = set()
    for layer in json.loads(body)["layers"]:
        status, _, blob = registry_get(services, f"/v2/{path}/blobs/{layer['digest']}")
        assert status == 200
        data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names.update(member.name.removeprefix("./") for member in tar.getmembers())
    return names


def test_copy_everything_pushes_no_credential_file_of_the_job(
    services: dict[str, str], workspace: Path
) -> None:
    """Issue 17.5: checkout token (also a submodule's), the auth actions' files, and the
    files the job's credential variables name; one with pattern characters in its name."""
    (workspace / "Dockerfile").write_text("FROM scratch\nCOPY . .\n")
    (workspace / "app.txt").write_text("the application\n")
    git = workspace / ".git"
    (git / "modules" / "lib").mkdir(parents=True)
    (git / "config").write_text("[core]\n\tbare = false\n")
    (git / "modules" / "lib" / "config").write_text(TOKEN_CONFIG)
    (workspace / "gha-creds-0123456789abcdef.json").write_text('{"type": "external_account"}')
    (workspace / "tokens").mkdir()
    for name in ("aws-web-identity", "azure-federated", "[g]cp*key.json"):
        (workspace / "tokens" / name).write_text("token")
    env = runner_env(services, workspace)
    env["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(workspace / "tokens" / "aws-web-identity")
    env["AZURE_FEDERATED_TOKEN_FILE"] = str(workspace / "tokens" / "azure-federated")
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(workspace / "tokens" / "[g]cp*key.json")
    code, log, outputs, _ = go(env)
    assert code == 0, log
    files = pushed_files(services, outputs["image"])
    assert "app.txt" in files and "Dockerfile" in files  # the rest of the context is there
    leaked = {
        name
        for name in files
        if name.startswith((".git", "gha-creds-"))
        or name in ("tokens/aws-web-identity", "tokens/azure-federated", "tokens/[g]cp*key.json")
    }
    assert not leaked
    assert "Left out of the build context (credentials): .git (a credential in a git config)" in log
