# syntax=docker/dockerfile:1
# The API image: locked dependencies, models trained and verified at build time,
# gunicorn with uvicorn workers as an unprivileged user on a read-only root filesystem.
#
#   docker build -t housing-api .
#
# The base is pinned to an exact release and Debian version, not to a digest: no
# container registry is reachable from where this file is built and tested, and an
# unverified digest would be worse than none. For a release build, look the digest up
# on a machine that reaches Docker Hub and pin it, refreshing it the same way whenever
# the tag is rebuilt (README, "The image and the compose stack"):
#   docker buildx imagetools inspect python:3.11.15-slim-bookworm --format '{{json .Manifest.Digest}}'
#   docker build --build-arg PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# --- build: the virtualenv and the models -----------------------------------------------
FROM ${PYTHON_IMAGE} AS build
# The same uv as the Makefile's UV_VERSION.
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first (a layer that survives code changes), exactly as locked; every one
# of them ships a wheel, so no compiler is needed even here.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
# Every top-level package of the wheel ([tool.hatch.build.targets.wheel] packages);
# tests/deploy/test_dockerfile.py keeps the two lists equal.
COPY app ./app
COPY auth ./auth
COPY cli ./cli
COPY db ./db
COPY migrations ./migrations
COPY ml ./ml
COPY monitoring ./monitoring
RUN uv sync --frozen --no-dev --no-editable
# Train v1 and v2 from the shipped data; manifest.json records each artifact's sha256.
COPY data ./data
RUN MODEL_DIR=/src/models DATA_PATH=/src/data/housing.csv /opt/venv/bin/housing-api train

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    MODEL_DIR=/app/models \
    DATA_PATH=/app/data/housing.csv \
    VAR_DIR=/tmp/housing \
    XDG_RUNTIME_DIR=/tmp
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# Root-owned and read-only for the app user: a compromised worker cannot swap a model.
COPY --from=build /src/models /app/models
WORKDIR /app
# The artifacts load and match their recorded sha256 (a mismatch fails the build),
# and no compiler made it into this stage.
RUN python -c "from pathlib import Path; from ml.artifacts import load_all; \
print('verified models:', sorted(load_all(Path('/app/models'))))" \
 && ! command -v gcc && ! command -v cc
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# gunicorn (a master and N uvicorn workers): SIGTERM stops it gracefully, waiting up to
# its --graceful-timeout (20 s) for requests in flight; give it 30 s (compose
# stop_grace_period, Kubernetes terminationGracePeriodSeconds). Two workers per
# container for a one-CPU limit: the model work is CPU-bound, one more worker covers
# I/O waits; scale with replicas, not workers.
STOPSIGNAL SIGTERM
ENTRYPOINT ["housing-api"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
