"""``python -m deployer --image ... --deployments web``: the action, run locally.

Each input of action.yml is a flag of the same name. Flags become the
``INPUT_*`` variables the runner would set, so local runs take the same path.
"""

from __future__ import annotations

import argparse
import os
import sys

from deployer.config import INPUTS, input_env_name


def parse_args(argv: list[str]) -> dict[str, str]:
    parser = argparse.ArgumentParser(
        prog="python -m deployer",
        description="Build, push and roll out an image to Kubernetes: the action, locally.",
    )
    for name, (default, example) in INPUTS.items():
        hint = f" (default: {default})" if default else ""
        parser.add_argument(f"--{name}", metavar="VALUE", help=f"e.g. {example}{hint}")
    args = vars(parser.parse_args(argv))
    return {
        input_env_name(name): value
        for name in INPUTS
        if (value := args[name.replace("-", "_")]) is not None
    }


def main(argv: list[str] | None = None) -> int:
    from deployer.pipeline import run

    env = dict(os.environ)
    env.update(parse_args(sys.argv[1:] if argv is None else argv))
    return run(env, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
