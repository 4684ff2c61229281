# The action's image. The runner builds it for every job (`runs.image: Dockerfile`);
# releases publish it prebuilt to GHCR (see docs/release.md).
# The base is an ARG so machines that cannot pull can pass a locally built one.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# wheels/ is empty in the repo; scripts/action-image.sh fills it on machines
# without internet so the install needs no index.
COPY requirements.lock /opt/deployer/requirements.lock
COPY wheels/ /opt/deployer/wheels/
RUN python3 -m venv /opt/deployer/venv \
 && if ls /opt/deployer/wheels/*.whl >/dev/null 2>&1; then \
        set -- --no-index --find-links /opt/deployer/wheels; \
    fi \
 && /opt/deployer/venv/bin/pip install "$@" --no-deps --require-virtualenv \
        -r /opt/deployer/requirements.lock \
 && rm -rf /opt/deployer/wheels

COPY entrypoint.py /opt/deployer/entrypoint.py
COPY deployer /opt/deployer/deployer
RUN python3 -m compileall -q /opt/deployer/deployer /opt/deployer/entrypoint.py
ENV PATH=/opt/deployer/venv/bin:$PATH \
    PYTHONPATH=/opt/deployer

# Exec form: python is PID 1 and gets SIGINT/SIGTERM from the runner's cancel;
# entrypoint.py handles both.
ENTRYPOINT ["python3", "/opt/deployer/entrypoint.py"]
