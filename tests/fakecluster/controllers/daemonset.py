"""The daemonset controller (next milestone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakecluster.cluster import FakeCluster

__all__ = ["sync"]


def sync(cluster: FakeCluster, key: tuple[str, str]) -> None:
    del cluster, key
