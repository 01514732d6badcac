# syntax=docker/dockerfile:1
#
# One image for the whole service:
#   docker build -t two-tower-recall:dev .
#   docker run --rm -p 50051:50051 -p 50052:50052 -p 9102:9102 \
#       -e RECALL_REDIS_URL=redis://HOST:6379/0 -v recall-artifacts:/artifacts two-tower-recall:dev
#         → `recall serve` (the default CMD): RecallService + health + reflection on 50051,
#           RecallAdmin on 50052, Prometheus /metrics on 9102.
#   docker run --rm -v recall-artifacts:/artifacts -v recall-data:/data two-tower-recall:dev \
#       pipeline run --data /data/ml-100k --redis-url redis://HOST:6379/0
#         → the same image runs the Airflow pipeline (train → load user vectors → build index);
#           `data fetch --out /data/ml-100k` gets ML-100K first. Any `recall` subcommand works,
#           since the entrypoint is the `recall` CLI.
# infra/compose/docker-compose.yml wires both up with Redis, Prometheus and Grafana.
#
# Dependencies come from requirements.lock only (the same pins as `make venv`), so the image
# and a developer's .venv run the same versions. The lock also pins the dev tools (pytest,
# ruff, mypy); they end up in the image too — a few MB next to TensorFlow.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never

# uv lives in the builder's system Python only; /opt/venv gets exactly the lock's packages.
RUN pip install uv==0.13.9 \
 && python -m venv --without-pip /opt/venv

WORKDIR /src

# Dependencies first: this layer is rebuilt only when requirements.lock changes.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip sync --python /opt/venv/bin/python requirements.lock

# The project itself, installed non-editable (a wheel built from the source tree). The checks
# after it run the installed copy (python -P: the source tree in the cwd is not on sys.path).
# README.md* (glob): pyproject names README.md as the readme; the glob keeps the build
# working if it is ever missing, while pyproject.toml guarantees the COPY has a source.
COPY pyproject.toml README.md* ./
COPY protos/ protos/
COPY training/ training/
COPY serving/ serving/
COPY pipelines/ pipelines/
COPY artifacts/ artifacts/
COPY recall_cli/ recall_cli/
COPY bench/ bench/
# --no-build-isolation: build with the setuptools/wheel pinned in requirements.lock (already
# in /opt/venv) instead of fetching unpinned ones.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --python /opt/venv/bin/python --no-deps --no-build-isolation . \
 && /opt/venv/bin/recall --help > /dev/null \
 && /opt/venv/bin/python -P -c "import pipelines.runner as r, sys; sys.exit(0 if (r.DAGS_FOLDER / 'recall_pipelines.py').is_file() else 'DAG file missing from the installed package')"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="two-tower-recall" \
      org.opencontainers.image.description="Two-tower candidate retrieval: gRPC recall server and Airflow training/index pipeline"

# RECALL_HOME: the CLI's local state (Airflow home + SQLite DB, download cache).
# RECALL_CACHE_DIR: where the server copies remote (fsspec URL) artifacts; unused for a local root.
# Both must be writable by the non-root user; /app (the code) is not.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    RECALL_HOST=0.0.0.0 \
    RECALL_ARTIFACT_ROOT=/artifacts \
    RECALL_HOME=/var/lib/recall \
    RECALL_CACHE_DIR=/var/lib/recall/cache/artifacts

RUN groupadd --system --gid 10001 recall \
 && useradd --system --uid 10001 --gid recall --home-dir /home/recall --create-home \
        --shell /usr/sbin/nologin recall \
 && install -d -o recall -g recall -m 0755 /artifacts /data /var/lib/recall

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The source tree, read-only for `recall` (root-owned). The installed package in /opt/venv is
# what runs; this copy is for the protos (clients generating stubs) and for inspection.
COPY pyproject.toml README.md* requirements.lock ./
COPY protos/ protos/
COPY training/ training/
COPY serving/ serving/
COPY pipelines/ pipelines/
COPY artifacts/ artifacts/
COPY recall_cli/ recall_cli/
COPY bench/ bench/

# Numeric, so that Kubernetes' runAsNonRoot can verify it (10001 = recall).
USER 10001:10001

# 50051: RecallService + grpc.health.v1 + reflection; 50052: RecallAdmin; 9102: /metrics.
EXPOSE 50051 50052 9102

# SERVING only once an index is loaded (the server reports NOT_SERVING until then, so a
# container with nothing published stays "unhealthy" — by design). Meaningful for `serve`
# only; compose disables it for the pipeline service.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel('127.0.0.1:' + os.environ.get('RECALL_PORT', '50051')); r = g.HealthStub(ch).Check(h.HealthCheckRequest(service=''), timeout=3); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]

ENTRYPOINT ["recall"]
CMD ["serve"]
