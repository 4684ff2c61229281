"""A kubeconfig with the wrong CA, against the real API server: the certificate is named.

Before, this read "cannot reach the API server at … MaxRetryError (gave up after
6 tries)", which sends the user looking for a network problem.
"""

from __future__ import annotations

import base64
import datetime
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import need_service
from tests.integration.test_build_push import go, registry_get, runner_env, services, workspace
from tests.unit.test_actions import commands

pytestmark = pytest.mark.integration
__all__ = ["services", "workspace"]  # fixtures used here


def other_ca() -> bytes:
    """A self-signed CA certificate that did not sign the API server's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-the-cluster-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_wrong_ca_is_named_as_a_certificate_problem_at_once(
    services: dict[str, str], workspace: Path
) -> None:
    settings = need_service("TEST_KUBECONFIG_RESTRICTED", "TEST_NAMESPACE")
    config = yaml.safe_load(Path(settings["TEST_KUBECONFIG_RESTRICTED"]).read_text())
    config["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        other_ca()
    ).decode()
    repo = f"tls-{uuid.uuid4().hex[:8]}/web"
    env = runner_env(services, workspace)
    env["INPUT_IMAGE"] = f"{services['TEST_REGISTRY']}/{repo}"
    env["INPUT_KUBECONFIG"] = yaml.safe_dump(config)
    env["INPUT_NAMESPACE"] = settings["TEST_NAMESPACE"]
    env["INPUT_DEPLOYMENTS"] = "web"
    started = time.monotonic()
    code, log, outputs, _ = go(env)
    assert code == 1
    assert outputs["status"] == "failed"
    [error] = [c for c in commands(log) if c.startswith("::error")]
    assert "TLS certificate is not trusted" in error
    assert "certificate-authority-data" in error
    assert "cannot reach" not in error
    assert time.monotonic() - started < 10  # no retries of a certificate problem
    assert registry_get(services, f"/v2/{repo}/tags/list")[0] == 404  # nothing built
