"""action.yml as the runner (and nektos/act) parse it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_no_expression_outside_the_places_that_allow_one() -> None:
    # The runner evaluates `${{ }}` only in an input's default (and in runs:); in a
    # description act refuses the whole action: "expressions are not allowed here".
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    for kind in ("inputs", "outputs"):
        for name, spec in action[kind].items():
            assert "${{" not in str(spec.get("description", "")), f"{kind} {name}"
    assert "${{" not in str(action.get("description", "")) + str(action.get("name", ""))
