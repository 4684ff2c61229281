"""The ``image-pull-secret`` input: nodes may pull the image from a private registry.

The Secret (type ``kubernetes.io/dockerconfigjson``) is added to
``spec.template.spec.imagePullSecrets`` of every workload the run changes (and of
migration Jobs that run our images), in the same change as the image, so the
rollback takes it back with everything else. Before anything changes,
:func:`check_pull_secret` makes sure the Secret exists in each namespace with the
right type (or comes with the run's own manifests).

Never put the job's ``GITHUB_TOKEN`` into such a Secret: it expires when the job
ends, and nodes pull again later (a rescheduled pod, a new node, a scale-up), so
pods start failing with ImagePullBackOff hours after a green deploy. Use a
long-lived credential (a PAT or a machine user's token with ``read:packages``, a
GitHub App token refreshed by a job in the cluster), or make the package public.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from deployer.cluster import Kube, Resource, Response
from deployer.errors import ConfigError, InputProblem
from deployer.manifests import Manifest

__all__ = ["DOCKERCONFIGJSON", "SECRETS", "add_pull_secret", "check_pull_secret", "has_pull_secret"]

DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
SECRETS = Resource("", "v1", "secrets")
_EXAMPLE = "ghcr-pull"


def has_pull_secret(template: Mapping[str, Any], name: str) -> bool:
    """Whether a pod template already lists ``name`` in ``imagePullSecrets``."""
    spec = template.get("spec") or {}
    return any(
        isinstance(s, Mapping) and s.get("name") == name for s in spec.get("imagePullSecrets") or []
    )


def add_pull_secret(template: dict[str, Any], name: str) -> bool:
    """Add ``name`` to a pod template's ``imagePullSecrets`` in place; True if it was not there."""
    if has_pull_secret(template, name):
        return False
    spec = template.setdefault("spec", {})
    spec["imagePullSecrets"] = [*(spec.get("imagePullSecrets") or []), {"name": name}]
    return True


def _problem(text: str) -> InputProblem:
    return InputProblem("image-pull-secret", text, _EXAMPLE)


def check_pull_secret(
    kube: Kube, name: str, namespaces: Iterable[str], manifests: Iterable[Manifest]
) -> list[str]:
    """Raise :class:`ConfigError` if the Secret is missing or of another type in any of
    ``namespaces``; returns warnings for namespaces where it could not be read.

    A Secret of that name among the run's manifests counts (it is applied first).
    """
    own = {m.namespace(""): m for m in manifests if m.kind == "Secret" and m.name == name}
    problems: list[InputProblem] = []
    warnings: list[str] = []
    create = (
        f"create it: kubectl create secret docker-registry {name} --docker-server=<registry> "
        "--docker-username=<user> --docker-password=<a long-lived token> -n <namespace>"
    )
    for namespace in dict.fromkeys(namespaces):
        given = own.get(namespace) or own.get("")
        found: Any = given.doc if given is not None else None
        if found is None:
            found = kube.request(
                "GET",
                SECRETS,
                verb="get",
                namespace=namespace,
                name=name,
                expect=frozenset({403, 404}),
            )
        if isinstance(found, Response) and found.status == 403:
            warnings.append(
                f"Cannot check that Secret {name} exists in namespace {namespace} (the "
                "credentials may not get secrets); if it is missing, pods fail to pull"
            )
        elif isinstance(found, Response):
            problems.append(_problem(f"no Secret '{name}' in namespace {namespace}; {create}"))
        elif found.get("type") != DOCKERCONFIGJSON:
            problems.append(
                _problem(
                    f"Secret '{name}' in namespace {namespace} has type "
                    f"'{str(found.get('type', 'Opaque'))[:60]}', not {DOCKERCONFIGJSON}; {create}"
                )
            )
    if problems:
        raise ConfigError(problems)
    return warnings
