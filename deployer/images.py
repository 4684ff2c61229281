"""The images one run deploys: the built (or named) ``image`` and the ``images`` input.

A reference in a manifest or a workload's container is matched by repository
(any tag or digest; Docker Hub's spellings are one repository) and replaced by
the run's ``repo@sha256:…`` for that repository. Pure: no I/O here; the registry
check of the extra images is :func:`deployer.push.verify_images`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ImageSet", "repository_of", "same_repository"]

_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def repository_of(reference: str) -> str:
    """``host/path:tag@sha256:…`` → ``host/path``."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name


def _normalised(repository: str) -> str:
    for prefix in _HUB:
        if repository.startswith(prefix):
            repository = repository[len(prefix) :]
            break
    return repository.removeprefix("library/")


def same_repository(reference: str, repository: str) -> bool:
    """Whether ``reference`` is an image of ``repository`` (Docker Hub spellings equal)."""
    return _normalised(repository_of(reference)) == _normalised(repository)


@dataclass(frozen=True)
class ImageSet:
    """Repository → the ``repo@sha256:…`` this run deploys for it; the first is ``image``."""

    main_repository: str
    main_image: str
    extra: tuple[str, ...] = ()  # the ``images`` input, repo@sha256:… each
    _by_repository: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        found = {_normalised(self.main_repository): self.main_image}
        for reference in self.extra:
            found.setdefault(_normalised(repository_of(reference)), reference)
        self._by_repository.update(found)

    @property
    def repositories(self) -> tuple[str, ...]:
        return (self.main_repository, *(repository_of(r) for r in self.extra))

    @property
    def references(self) -> tuple[str, ...]:
        return (self.main_image, *self.extra)

    def target(self, reference: str) -> str | None:
        """The image that replaces ``reference``, or None when it is none of ours."""
        return self._by_repository.get(_normalised(repository_of(reference)))

    def for_container(self, reference: str) -> str:
        """The image a named workload's container gets: its repository's, else ``image``."""
        return self.target(reference) or self.main_image

    def substitute(self, node: Any) -> dict[str, int]:
        """Replace every ``image:`` of ours in ``node`` in place; image → times replaced."""
        counts: dict[str, int] = {}
        _substitute(node, self, counts)
        return counts


def _substitute(node: Any, images: ImageSet, counts: dict[str, int]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            target = images.target(value) if key == "image" and isinstance(value, str) else None
            if target is not None:
                node[key] = target
                counts[target] = counts.get(target, 0) + 1
            else:
                _substitute(value, images, counts)
    elif isinstance(node, list):
        for item in node:
            _substitute(item, images, counts)
