"""README's table for users of docker/build-push-action names every one of its inputs.

The list is build-push-action v6's action.yml; a row says ``same``, ``renamed …``,
``different`` or ``not supported`` and why. What it calls ``same`` must be an input here.
"""

from __future__ import annotations

import re
from pathlib import Path

from deployer.config import INPUTS

ROOT = Path(__file__).resolve().parents[2]
# docker/build-push-action v6, action.yml `inputs:` (in its order).
BUILD_PUSH_ACTION_INPUTS = (
    "add-hosts",
    "allow",
    "annotations",
    "attests",
    "build-args",
    "build-contexts",
    "builder",
    "cache-from",
    "cache-to",
    "call",
    "cgroup-parent",
    "context",
    "file",
    "labels",
    "load",
    "network",
    "no-cache",
    "no-cache-filters",
    "outputs",
    "platforms",
    "provenance",
    "pull",
    "push",
    "sbom",
    "secrets",
    "secret-envs",
    "secret-files",
    "shm-size",
    "ssh",
    "tags",
    "target",
    "ulimit",
    "github-token",
)


def migration_rows() -> dict[str, tuple[str, str]]:
    """build-push-action input → (what it is here, why), from README.md's table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### Moving from docker/build-push-action\n", 1)[1]
    section = section.split("\n#", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        names, here, notes = (c.strip() for c in line.strip().strip("|").split("|"))
        for name in re.findall(r"`([a-z0-9-]+)`", names):
            assert name not in rows, f"README's migration table lists {name} twice"
            rows[name] = (here, notes)
    return rows


def test_the_migration_table_lists_every_build_push_action_input() -> None:
    rows = migration_rows()
    assert sorted(rows) == sorted(BUILD_PUSH_ACTION_INPUTS)


def test_each_row_says_same_renamed_different_or_not_supported_and_why() -> None:
    for name, (here, notes) in migration_rows().items():
        assert re.fullmatch(r"same|renamed `[a-z0-9-]+`|different|not supported", here), name
        if here != "same":
            assert notes, f"README says {name} is {here} but not why"
        if here == "same":
            assert name in INPUTS, f"README says {name} is the same, but it is no input here"
        if here.startswith("renamed"):
            assert here.split("`")[1] in INPUTS, name
