"""deployer: build, push and roll out a container image to Kubernetes, verified.

The pipeline, in the order it runs (one module per stage):

    config.py   inputs → one validated Config (the only reader of the environment)
    build.py    stage 1: build the image with the Docker engine
    push.py     stage 2: push the tags, take and verify the registry's digest
    rollout.py  stage 3: point Deployments at repo@digest, watch, diagnose, roll back
    report.py   stage 4: outputs and job summary
    pipeline.py runs the stages; the one top-level error handler

and beside them: actions.py (all GitHub Actions I/O), errors.py (the error
hierarchy), kubeconfig.py and cluster.py (reaching the cluster).
"""

__version__ = "0.1.0"
