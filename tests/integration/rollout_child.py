"""One roll_out in its own process, with the pipeline's signal handling: for SIGINT/SIGKILL tests.

``python -m tests.integration.rollout_child IMAGE`` with the action's ``INPUT_*``
variables (and ``KUBECONFIG``, ``GITHUB_*``) in the environment. The log goes to
stdout as the runner would show it, flushed line by line; the last line is the
result as JSON: ``{"status": ..., "workloads": [...], "restored": [...], "notes": [...]}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from deployer.actions import ActionsIO
from deployer.cluster import connect
from deployer.config import load_config
from deployer.pipeline import cancellation
from deployer.rollout import roll_out


class _Flushed:
    def write(self, text: str) -> int:
        sys.stdout.write(text)
        sys.stdout.flush()
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


def main(image: str) -> int:
    config = load_config(dict(os.environ))
    io = ActionsIO(_Flushed(), {})  # type: ignore[arg-type]
    cancel = threading.Event()
    api, _ = connect(config)
    with cancellation(cancel) as scope, scope.deferred():
        result = roll_out(config, image, api, io, cancel)
    api.close()
    print(
        json.dumps(
            {
                "status": result.status,
                "workloads": [d.as_output() for d in result.deployments],
                "restored": list(result.restored),
                "notes": list(result.notes),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
