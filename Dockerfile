# Images of the recall service (BuildKit: Docker ≥ 18.09 with DOCKER_BUILDKIT=1, or buildx).
#
#   serving   (default target) `recall serve`: gRPC RecallService + health + reflection on 50051,
#             RecallAdmin on 50052, /metrics on 9102. No TensorFlow, no Airflow: its packages
#             are infra/docker/requirements-serving.lock, derived from requirements.lock by
#             scripts/image_requirements.py (`make image-locks`).
#   pipeline  TensorFlow + Airflow 3 (+ the Postgres driver): the Airflow components
#             (`airflow api-server|scheduler|dag-processor`) with the project's DAGs, and
#             every `recall` subcommand (`recall pipeline run …`, `recall data synth …`).
#   gpu       the pipeline image with faiss-gpu instead of faiss-cpu (CUDA libraries come
#             with faiss-gpu's wheels; run with `--gpus all` on a host with the NVIDIA
#             container toolkit). Not built in CI: no GPU there.
#
#   make image                       # serving + pipeline, on the local or public base
#   docker build -t two-tower-recall-serving .
#   docker build --target pipeline -t two-tower-recall-pipeline .
#   docker build --target gpu -t two-tower-recall-gpu .
#
# BASE_IMAGE: any Debian-like image with Python 3.11 and `python -m venv`. The default is
# the public python:3.11-slim; machines without a registry build a local one with
# scripts/build_base_image.sh (debootstrap bookworm + docker import).
# Package indexes: PIP_INDEX_URL / PIP_EXTRA_INDEX_URL build args (unset: PyPI), and an
# optional BuildKit secret `ca_bundle` (a CA bundle for a TLS-intercepting proxy); neither
# ends up in an image layer.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- base (both images)
FROM ${BASE_IMAGE} AS base

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECALL_HOST=0.0.0.0 \
    RECALL_METRICS_HOST=0.0.0.0 \
    RECALL_ARTIFACT_ROOT=/artifacts \
    RECALL_HOME=/var/lib/recall \
    RECALL_CACHE_DIR=/var/lib/recall/cache/artifacts

# uid/gid 10001, numeric in USER so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 recall \
 && useradd --system --uid 10001 --gid recall --home-dir /home/recall --create-home \
        --shell /usr/sbin/nologin recall \
 && install -d -o recall -g recall -m 0755 /artifacts /data /var/lib/recall

# ---------------------------------------------------------------- tools (build only)
FROM base AS tools

ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never

WORKDIR /src
COPY requirements.lock ./

# Build tools in their own venv (Debian's system Python refuses pip installs, PEP 668):
# uv, and the setuptools/wheel that requirements.lock pins, to build the project's wheel.
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/pip \
    ca=/run/secrets/ca_bundle; if [ -s "$ca" ]; then export PIP_CERT="$ca"; fi; \
    python -m venv /opt/tools \
 && grep -E '^(setuptools|wheel)==' requirements.lock > /tmp/build-tools.txt \
 && /opt/tools/bin/pip install -q ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} \
        ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
        uv==0.13.9 -r /tmp/build-tools.txt \
 && python -m venv --without-pip /opt/venv

# ---------------------------------------------------------------- third-party packages
# Only the requirement sets go in here, so these layers (the slow ones) are rebuilt only
# when a lock changes, not when the project's code does.
FROM tools AS serving-deps
COPY infra/docker/requirements-serving.lock /tmp/
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/uv \
    ca=/run/secrets/ca_bundle; if [ -s "$ca" ]; then export SSL_CERT_FILE="$ca"; fi; \
    /opt/tools/bin/uv pip sync -q --python /opt/venv/bin/python \
        ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} \
        ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
        /tmp/requirements-serving.lock

FROM tools AS pipeline-deps
COPY infra/docker/requirements-pipeline.lock infra/docker/requirements-postgres.lock /tmp/
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/uv \
    ca=/run/secrets/ca_bundle; if [ -s "$ca" ]; then export SSL_CERT_FILE="$ca"; fi; \
    /opt/tools/bin/uv pip sync -q --python /opt/venv/bin/python \
        ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} \
        ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
        /tmp/requirements-pipeline.lock /tmp/requirements-postgres.lock

# ---------------------------------------------------------------- the project's wheel
FROM tools AS wheel
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY training/ training/
COPY serving/ serving/
COPY pipelines/ pipelines/
COPY artifacts/ artifacts/
COPY keyspace/ keyspace/
COPY catalogue/ catalogue/
COPY recall_settings/ recall_settings/
COPY evaluation/ evaluation/
COPY recall_cli/ recall_cli/
COPY bench/ bench/
RUN /opt/tools/bin/pip wheel -q --no-deps --no-build-isolation -w /dist .

# ---------------------------------------------------------------- pipeline
FROM base AS pipeline

LABEL org.opencontainers.image.title="two-tower-recall-pipeline" \
      org.opencontainers.image.description="Two-tower recall: TensorFlow training, Faiss index build, Airflow 3 DAGs"

# Airflow reads the DAGs from the installed package; its home (config, logs) is writable.
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    AIRFLOW_HOME=/var/lib/recall/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/venv/lib/python3.11/site-packages/pipelines/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

COPY --from=pipeline-deps /opt/venv /opt/venv
# The project on top (a small layer; the wheel and uv are mounted from the build stages).
# The logs directory exists in the image so that a volume mounted there belongs to `recall`.
RUN --mount=type=bind,from=wheel,source=/,target=/mnt/build \
    UV_COMPILE_BYTECODE=1 /mnt/build/opt/tools/bin/uv pip install -q --no-cache \
        --python /opt/venv/bin/python --no-deps /mnt/build/dist/*.whl \
 && recall --help > /dev/null \
 && python -c "import pipelines.runner as r, sys; sys.exit(0 if (r.DAGS_FOLDER / 'recall_pipelines.py').is_file() else 'DAG file missing')" \
 && install -d -o recall -g recall /var/lib/recall/airflow /var/lib/recall/airflow/logs
WORKDIR /var/lib/recall
USER 10001:10001
CMD ["recall", "--help"]

# ---------------------------------------------------------------- gpu (pipeline + faiss-gpu)
FROM pipeline-deps AS gpu-deps
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/uv \
    ca=/run/secrets/ca_bundle; if [ -s "$ca" ]; then export SSL_CERT_FILE="$ca"; fi; \
    /opt/tools/bin/uv pip uninstall -q --python /opt/venv/bin/python faiss-cpu \
 && /opt/tools/bin/uv pip install -q --python /opt/venv/bin/python \
        ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} \
        ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
        "faiss-gpu==1.15.*" \
 && /opt/venv/bin/python -c "import faiss; print('faiss', faiss.__version__)"

FROM pipeline AS gpu
LABEL org.opencontainers.image.title="two-tower-recall-gpu"
# NVIDIA container toolkit: which driver capabilities to mount into the container.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER root
RUN --mount=type=bind,from=gpu-deps,source=/opt/venv/lib/python3.11/site-packages,target=/mnt/gpu \
    rm -rf /opt/venv/lib/python3.11/site-packages/faiss* \
 && cp -a /mnt/gpu/. /opt/venv/lib/python3.11/site-packages/ \
 && python -c "import faiss; print('faiss', faiss.__version__)"
USER 10001:10001

# ---------------------------------------------------------------- serving (default target)
FROM base AS serving

LABEL org.opencontainers.image.title="two-tower-recall-serving" \
      org.opencontainers.image.description="Two-tower recall: gRPC recall server (Faiss IVF-PQ + Redis user vectors)"

COPY --from=serving-deps /opt/venv /opt/venv
RUN --mount=type=bind,from=wheel,source=/,target=/mnt/build \
    UV_COMPILE_BYTECODE=1 /mnt/build/opt/tools/bin/uv pip install -q --no-cache \
        --python /opt/venv/bin/python --no-deps /mnt/build/dist/*.whl \
 && recall --help > /dev/null \
 && python -c "import serving.server, serving.index.loaded, faiss, redis" \
 && python -c "import importlib.util as u, sys; sys.exit('TensorFlow/Airflow in the serving image' if u.find_spec('tensorflow') or u.find_spec('airflow') else 0)"
COPY --chmod=0755 infra/docker/grpc_health_check.py /usr/local/bin/grpc-health-check

USER 10001:10001
WORKDIR /var/lib/recall

# 50051: RecallService + grpc.health.v1 + reflection; 50052: RecallAdmin; 9102: /metrics.
EXPOSE 50051 50052 9102

# grpc.health.v1 on 127.0.0.1:$RECALL_PORT: healthy only once SERVING (an index is loaded);
# a server still waiting for its first index shows "unhealthy" by design.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["grpc-health-check"]

ENTRYPOINT ["recall"]
CMD ["serve"]
