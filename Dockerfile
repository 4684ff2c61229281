# The action's image. The runner builds it for every job (`runs.image: Dockerfile`);
# release tags point at a prebuilt one on GHCR instead (docs/release.md).
# The base is an ARG so machines that cannot pull can pass a locally built one.
ARG BASE_IMAGE=python:3.12-slim

# Stage 1: the virtualenv, installed from pinned requirements. wheels/ is empty
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
 && /opt/deployer/venv/bin/pip install "$@" --no-deps -r /tmp/requirements.lock \
 && site="$(/opt/deployer/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "$site/kubernetes/aio" "$site/pip" "$site"/pip-* "$site/setuptools" \
        "$site"/setuptools-* "$site/pkg_resources" "$site/_distutils_hack" \
        "$site/distutils-precedence.pth" "$site"/*/tests "$site"/*/test \
        /opt/deployer/venv/bin/pip* \
 && /opt/deployer/venv/bin/python -m compileall -q "$site" \
 && /opt/deployer/venv/bin/python -m compileall -q -b "$site/kubernetes/client" \
 && find "$site/kubernetes/client" -name '*.py' -delete \
 && find "$site/kubernetes/client" -name '__pycache__' -prune -exec rm -rf {} +

# kubernetes/client is 57 MB of generated sources with long docstrings; it ships
# as bytecode only (compileall -b puts each .pyc where its .py was), which
# keeps the image under 200 MB without changing what is imported.

# Stage 2: the base, the venv and the code.
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/deployer/venv/bin:$PATH \
    PYTHONPATH=/opt/deployer
COPY --from=deps /opt/deployer/venv /opt/deployer/venv
COPY entrypoint.py /opt/deployer/entrypoint.py
COPY deployer /opt/deployer/deployer
RUN python3 -m compileall -q /opt/deployer/deployer

# Exec form: python is PID 1 and receives the runner's SIGINT/SIGTERM on cancel;
# entrypoint.py handles both.
ENTRYPOINT ["python3", "/opt/deployer/entrypoint.py"]
