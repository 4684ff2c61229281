"""The one error hierarchy of deployer.

    DeployerError              ends the run: one ::error:: line, a summary section, exit 1
    ├── ConfigError            bad inputs; names each input, what is wrong and a right example
    ├── EngineError            the Docker engine could not be reached
    ├── BuildError             the image build failed (failing step, last log lines)
    ├── PushError              the push or the digest lookup failed
    │   └── RegistryAuthError  the registry refused the credentials (never retried)
    ├── ClusterError           the cluster could not be reached or refused a request
    │   ├── NamespaceLocked    another run held the namespace's Lease until our timeout
    │   └── NoCredentials      no kubeconfig, no KUBECONFIG, no in-cluster ServiceAccount
    ├── CredentialsError       cloud credentials (AWS, Google, Azure) missing or refused
    │   └── AccessDenied       401/403: names the verb and resource that were refused
    ├── RolloutError           a rollout failed (and was or was not rolled back)
    ├── Cancelled              SIGINT/SIGTERM arrived (the runner's cancel)
    ├── GitHubError            the pull request comment could not be written (only a warning)
    └── InternalError          anything else: a bug; reported like the others, never a traceback

Library and engine exceptions (kubernetes, urllib3, deployer.engine) are translated into these where
they enter our code, with ``raise ... from e``; nothing else escapes to the user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AccessDenied",
    "BuildError",
    "Cancelled",
    "ClusterError",
    "ConfigError",
    "CredentialsError",
    "DeployerError",
    "EngineError",
    "GitHubError",
    "InputProblem",
    "InternalError",
    "NamespaceLocked",
    "NoCredentials",
    "PushError",
    "RegistryAuthError",
    "RolloutError",
    "engine_message",
    "stream_error",
]


class DeployerError(Exception):
    """An error that ends the run with a message for the user."""

    title = "Deploy failed"

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class InputProblem:
    """One bad input: its name, what is wrong, and an example of a right value."""

    input: str
    problem: str
    example: str

    def message(self) -> str:
        sep = " " if self.problem.startswith("is ") else ": "
        return f"Input '{self.input}'{sep}{self.problem}. Example: {self.input}: {self.example}"


class ConfigError(DeployerError):
    """One or more inputs are invalid; nothing was built, pushed or changed."""

    title = "Invalid input"

    def __init__(self, problems: list[InputProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message() for p in problems))


class EngineError(DeployerError):
    """The Docker engine could not be reached or answered with an error."""

    title = "Docker engine error"


class BuildError(DeployerError):
    """The image build failed."""

    title = "Build failed"


class PushError(DeployerError):
    """The push, or reading the pushed digest back, failed."""

    title = "Push failed"


class RegistryAuthError(PushError):
    """The registry refused the credentials."""

    title = "Registry refused the credentials"


class ClusterError(DeployerError):
    """The cluster could not be reached or refused a request."""

    title = "Kubernetes error"


class NamespaceLocked(ClusterError):
    """Another run held the namespace's Lease for as long as we could wait."""

    title = "Another deploy holds the namespace"


class NoCredentials(ClusterError):
    """No cluster credentials at all (a fork's pull request run gets no secrets)."""


class CredentialsError(DeployerError):
    """Cloud credentials for the cluster or the registry are missing or were refused."""

    title = "Cloud credentials error"


class AccessDenied(ClusterError):
    """The credentials may not do what the deploy needs."""

    title = "Kubernetes access denied"


class RolloutError(DeployerError):
    """A rollout did not complete."""

    title = "Rollout failed"


class Cancelled(DeployerError):
    """The run was cancelled by SIGINT or SIGTERM."""

    title = "Cancelled"


class GitHubError(DeployerError):
    """The GitHub API refused a request or did not answer; ``status`` 0 when no answer came."""

    title = "GitHub API error"

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class InternalError(DeployerError):
    """An exception deployer did not expect (a bug), caught by the run's last resort."""

    title = "Internal error"


def engine_message(error: Exception) -> str:
    """What the Docker engine said, from an EngineAPIError (its ``explanation``) or an OSError."""
    return str(getattr(error, "explanation", None) or error)


def stream_error(chunk: Mapping[str, Any]) -> str | None:
    """The error in one line of the engine's JSON stream (build or push), if any.

    The engine reports failures inside the stream, not as HTTP errors.
    """
    if "error" not in chunk and "errorDetail" not in chunk:
        return None
    detail = chunk.get("errorDetail")
    message = detail.get("message") if isinstance(detail, Mapping) else None
    return str(message or chunk.get("error") or "unknown engine error")
