"""No secret, in any encoding, reaches the log, the outputs, the summary or an error.

:func:`leaks` is the reusable scanner (tests/faults use it against the real engine,
registry and cluster): every captured text is searched for each secret and its
base64 (standard and URL-safe, at the three byte alignments it can take inside a
larger base64 text), URL-encoded, hex and JSON-escaped forms, and every line of a
multi-line secret. ``::add-mask::`` lines are the only place a secret may appear.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.actions import ActionsIO
from deployer.config import Config
from deployer.errors import ClusterError
from deployer.pipeline import run
from deployer.rollout import DeploymentResult, RolloutResult
from tests.unit.fake_buildx import install
from tests.unit.test_actions import commands, runner_outputs
from tests.unit.test_pipeline import DIGEST, FakeDeploy, FakeEngine, push_failure

MIN_LENGTH = 6  # shorter fragments match ordinary text by chance


def encodings(secret: str) -> dict[str, str]:
    """``form name -> text`` for every form of ``secret`` a careless print could leak."""
    forms: dict[str, str] = {}
    values = {"value": secret}
    for number, line in enumerate(secret.splitlines()):
        values[f"line {number + 1}"] = line.strip()
    for label, value in values.items():
        raw = value.encode()
        forms[label] = value
        forms[f"{label} url-encoded"] = urllib.parse.quote(value, safe="")
        forms[f"{label} url-encoded (plus)"] = urllib.parse.quote_plus(value)
        forms[f"{label} hex"] = raw.hex()
        forms[f"{label} HEX"] = raw.hex().upper()
        forms[f"{label} json"] = json.dumps(value)[1:-1]
        for shift in range(3):
            chunk = raw[shift:]
            whole = chunk[: len(chunk) // 3 * 3]
            forms[f"{label} base64+{shift}"] = base64.b64encode(whole).decode()
            forms[f"{label} urlsafe-base64+{shift}"] = base64.urlsafe_b64encode(whole).decode()
    return {k: v for k, v in forms.items() if len(v) >= MIN_LENGTH}


def leaks(texts: Mapping[str, str], secrets: Mapping[str, str]) -> list[str]:
    """``where: which secret (form)`` for every hit outside ``::add-mask::`` lines."""
    found = []
    for where, text in texts.items():
        visible = "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("::add-mask::")
        )
        for name, secret in secrets.items():
            for form, value in encodings(secret).items():
                if value in visible:
                    found.append(f"{where}: {name} ({form})")
    return found


def assert_no_leaks(texts: Mapping[str, str], secrets: Mapping[str, str]) -> None:
    found = leaks(texts, secrets)
    assert not found, "secrets leaked:\n" + "\n".join(found)


# -- the scanner itself --------------------------------------------------------------------


def test_the_scanner_finds_every_form() -> None:
    secret = "s3cret-Value/+x"
    pair = base64.b64encode(f"user:{secret}".encode()).decode()
    for text in [
        f"the value {secret} here",
        f"hex {secret.encode().hex()}",
        f"url {urllib.parse.quote(secret, safe='')}",
        f"in basic auth {pair}",
        f"json {json.dumps({'p': secret})}",
    ]:
        assert leaks({"log": text}, {"p": secret}), text
    assert not leaks({"log": f"::add-mask::{secret}\nnothing"}, {"p": secret})
    assert leaks(
        {"log": "x\n-----line-two-of-key\n"}, {"key": "line-one-of-key\n-----line-two-of-key"}
    )


# -- one whole run with distinctive secrets ---------------------------------------------------

PASSWORD = "RegPass-7f3a9c1e-unit"
TOKEN = "kubetoken-4b8d2e6f0a1c3e5f"
# A client key of the shape kubeconfigs carry: base64 of a PEM block.
KEY_PEM = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIFakeKeyMaterialForTheSecretScanner0123456789abcdefoAoGCCqGSM49\n"
    "AwEHoUQDQgAEFakePublicPartOfTheKeyForTests0123456789ABCDEFGHIJKLMNOPQRSTU\n"
    "-----END EC PRIVATE KEY-----\n"
)
KEY_DATA = base64.b64encode(KEY_PEM.encode()).decode()
KUBECONFIG = yaml.safe_dump(
    {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": TOKEN, "client-key-data": KEY_DATA}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "p"}}],
        "current-context": "x",
    }
)
KUBECONFIG_B64 = base64.b64encode(KUBECONFIG.encode()).decode()
SECRETS = {
    "registry password": PASSWORD,
    "user:password": f"bob:{PASSWORD}",
    "kubeconfig token": TOKEN,
    "client-key-data": KEY_DATA,
    "client key (PEM)": KEY_PEM,
    "kubeconfig input (base64)": KUBECONFIG_B64,
}
# Everything an engine, a registry or the cluster might echo back at us.
ECHO = " ".join([PASSWORD, TOKEN, KEY_DATA, base64.b64encode(f"bob:{PASSWORD}".encode()).decode()])


class LeakyDeploy(FakeDeploy):
    """A deploy stage whose every message quotes the credentials."""

    def roll_out(self, config: Config, image: str, io: ActionsIO, cancel: Any) -> RolloutResult:
        self.calls.append("roll_out")
        io.info(f"connecting with {ECHO}")
        io.warning(f"retrying {ECHO}")
        with io.untrusted() as log:
            log.write(f"pod log: {ECHO}\n{KEY_PEM}")
        return RolloutResult(
            "rolled-back",
            (
                DeploymentResult(
                    "p",
                    "web",
                    ("web",),
                    f"old {TOKEN}",
                    f"ghcr.io/acme/web@{DIGEST}",
                    2,
                    "rolled-back",
                    f"failed: {ECHO}",
                    diagnosis=f"events: {ECHO}\n{KEY_PEM}",
                ),
            ),
        )


def runner_env(tmp_path: Path, kubeconfig: str) -> dict[str, str]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "output").write_text("")
    (tmp_path / "summary").write_text("")
    return {
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "GITHUB_SHA": "0123456789abcdef0123",
        "INPUT_IMAGE": "ghcr.io/acme/web",
        "INPUT_TAGS": "v1",
        "INPUT_REGISTRY-USERNAME": "bob",
        "INPUT_REGISTRY-PASSWORD": PASSWORD,
        "INPUT_KUBECONFIG": kubeconfig,
        "INPUT_DEPLOYMENTS": "web",
        "INPUT_BUILD-ARGS": f"TOKEN={PASSWORD}",
        "DEPLOYER_BUILDX": str(install(tmp_path / "bin")),  # the fake of fake_buildx.py
    }


def captured(
    env: Mapping[str, str], log: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, str]:
    std = capsys.readouterr()
    return {
        "log": log,
        "stdout": std.out,
        "stderr": std.err,
        "GITHUB_OUTPUT": Path(env["GITHUB_OUTPUT"]).read_text(),
        "GITHUB_STEP_SUMMARY": Path(env["GITHUB_STEP_SUMMARY"]).read_text(),
    }


def leaky_engine() -> FakeEngine:
    return FakeEngine([{"lines": [f"#1 [1/1] ARG TOKEN={PASSWORD}", f"#1 0.1 {ECHO}"]}])


@pytest.mark.parametrize("form", ["yaml", "base64"])
@pytest.mark.parametrize(
    "scenario", ["rolled-back", "check-refused", "push-refused", "config-error"]
)
def test_no_secret_in_any_encoding_leaves_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str, scenario: str
) -> None:
    env = runner_env(tmp_path, KUBECONFIG if form == "yaml" else KUBECONFIG_B64)
    engine = leaky_engine()
    calls: list[str] = []
    deploy: FakeDeploy = LeakyDeploy(calls)
    if scenario == "check-refused":
        deploy = FakeDeploy(calls, check_error=ClusterError(f"refused {ECHO}", details=ECHO))
    elif scenario == "push-refused":
        engine = FakeEngine([push_failure(f"denied: {ECHO}")])
    elif scenario == "config-error":
        env["INPUT_TIMEOUT"] = PASSWORD  # an invalid value that is also a secret
        env["INPUT_NAMESPACE"] = TOKEN
    out = io.StringIO()
    engine.attach(Path(env["DEPLOYER_BUILDX"]))
    code = run(env, out, make_docker=lambda _c: engine, make_deploy=lambda _c: deploy)
    texts = captured(env, out.getvalue(), capsys)
    assert code == 1
    assert_no_leaks(texts, SECRETS)
    # The masks went to the runner before anything else was printed.
    first = out.getvalue().splitlines()
    masks = [line for line in first if line.startswith("::add-mask::")]
    assert first[: len(masks)] == masks
    for value in (PASSWORD, TOKEN, KEY_DATA):
        assert f"::add-mask::{value}" in masks
    assert set(runner_outputs(texts["GITHUB_OUTPUT"])) >= {"status", "deployments"}


def test_a_short_secret_cannot_break_stop_commands(tmp_path: Path) -> None:
    """A secret line of one letter must not redact our own ``::stop-commands::`` line."""
    env = runner_env(tmp_path, "")
    env["INPUT_DEPLOYMENTS"] = ""
    env["INPUT_REGISTRY-USERNAME"] = "a\r0"  # masks the pair line by line: 'a' is one
    engine = FakeEngine()  # its build log says ::add-mask::evil
    engine.attach(Path(env["DEPLOYER_BUILDX"]))
    out = io.StringIO()
    run(env, out, make_docker=lambda _c: engine)
    executed = commands(out.getvalue())
    assert not [c for c in executed if "evil" in c]
    assert any(c.startswith("::stop-commands::deployer-") for c in out.getvalue().splitlines())


def iter_error_texts(errors: Iterable[BaseException]) -> list[str]:
    return [str(e) + getattr(e, "details", "") for e in errors]


def test_cluster_connect_errors_never_quote_the_kubeconfig(tmp_path: Path) -> None:
    """A kubeconfig the client library refuses: the error names the problem, not the content."""
    from deployer.cluster import connect
    from deployer.config import load_config
    from deployer.errors import DeployerError

    broken = yaml.safe_load(KUBECONFIG)
    broken["users"][0]["user"]["client-certificate-data"] = "not-base64-" + TOKEN
    text = yaml.safe_dump(broken)
    env = runner_env(tmp_path, text)
    config = load_config(env)
    with pytest.raises(DeployerError) as caught:
        connect(config)
    assert_no_leaks({"error": "\n".join(iter_error_texts([caught.value]))}, SECRETS)
