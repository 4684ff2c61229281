# The action's image. The runner builds it for every job (`runs.image: Dockerfile`);
# release tags point at a prebuilt one on GHCR instead (docs/release.md).
# Everything that runs is pinned: the base and buildx by digest, kustomize and
# helm by module version (scripts/build-tools.sh), the Python dependencies by
# hash (requirements.lock, scripts/lock.sh). The images are ARGs so machines
# that cannot pull pass locally built ones (scripts/action-image.sh); bump them
# together with a release (docs/release.md).
ARG BASE_IMAGE=python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea
# buildx, run as a standalone binary: every build is a BuildKit build (/buildx in the image).
ARG BUILDX_IMAGE=docker/buildx-bin:v0.38@sha256:8701a4994fb475672faddca19708b10d8d7d545d19dc6fc662811c6e234efe65
# kustomize and helm, which render the `kustomize` and `helm-chart` inputs: /kustomize
# and /helm, built from their Go modules at the versions pinned in
# scripts/build-tools.sh (neither project publishes one official image of both;
# Helm publishes none). Built and published by scripts/tools-image.sh; the tag
# names both versions (docs/release.md).
ARG TOOLS_IMAGE=ghcr.io/acme/deployer-tools:kustomize-v5.8.2-helm-v4.3.2

FROM ${BUILDX_IMAGE} AS buildx
FROM ${TOOLS_IMAGE} AS tools

# Stage 1: the virtualenv, installed from hashed requirements. wheels/ is empty
# in the repository; scripts/action-image.sh fills it on machines without an
# index. Nothing of this stage but the venv reaches the image.
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/deployer/venv \
 && if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
        set -- --no-index --find-links /tmp/wheels; \
    fi \
 && /opt/deployer/venv/bin/pip install "$@" --require-hashes --only-binary=:all: --no-deps \
        -r /tmp/requirements.lock \
 && site="$(/opt/deployer/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "$site/kubernetes/aio" "$site/pip" "$site"/pip-* "$site/setuptools" \
        "$site"/setuptools-* "$site/pkg_resources" "$site/_distutils_hack" \
        "$site/distutils-precedence.pth" "$site"/*/tests "$site"/*/test \
        /opt/deployer/venv/bin/pip* \
 && /opt/deployer/venv/bin/python -m compileall -q "$site" \
 && /opt/deployer/venv/bin/python -m compileall -q -b -o 2 "$site/kubernetes/client" \
 && find "$site/kubernetes/client" -name '*.py' -delete \
 && find "$site/kubernetes/client" -name '__pycache__' -prune -exec rm -rf {} +

# kubernetes/client is 57 MB of generated sources with long docstrings; it ships
# as bytecode only (compileall -b puts each .pyc where its .py was), compiled
# with -o 2 so the docstrings are left out (7 MB less; a sourceless .pyc is
# loaded whatever the interpreter's own optimisation level). What is imported
# does not change.

# Stage 2: the base, buildx, kustomize, helm, the venv and the code.
# DEPLOYER_BUILDX, DEPLOYER_KUSTOMIZE and DEPLOYER_HELM are how deployer finds
# them (before CLI plugin dirs and PATH).
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/deployer/venv/bin:$PATH \
    PYTHONPATH=/opt/deployer \
    DEPLOYER_BUILDX=/opt/deployer/bin/buildx \
    DEPLOYER_KUSTOMIZE=/opt/deployer/bin/kustomize \
    DEPLOYER_HELM=/opt/deployer/bin/helm
COPY --from=buildx /buildx /opt/deployer/bin/buildx
COPY --from=tools /kustomize /helm /opt/deployer/bin/
COPY --from=deps /opt/deployer/venv /opt/deployer/venv
COPY entrypoint.py /opt/deployer/entrypoint.py
COPY deployer /opt/deployer/deployer
RUN /opt/deployer/venv/bin/python3 -m compileall -q /opt/deployer/deployer

# Exec form: python is PID 1 and receives the runner's SIGINT/SIGTERM on cancel;
# entrypoint.py handles both. The venv's interpreter by its absolute path: a
# workflow may set `env: PATH` for the step, and the runner passes it in.
ENTRYPOINT ["/opt/deployer/venv/bin/python3", "/opt/deployer/entrypoint.py"]
