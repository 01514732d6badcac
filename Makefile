# Front door: `make demo`, `make test`, `make serve`. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RECALL_HOME ?= $(CURDIR)/var

.PHONY: help venv demo test test-unit test-integration serve lint proto proto-check lock \
        redis-install promtool-install redis-up redis-down bench gpu clean image image-locks image-locks-check \
        test-containers

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "error: Python 3.11 is required (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	@echo "creating $(VENV) from requirements.lock (first time: a few minutes, ~2 GB)…"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(PY) -m uv pip sync -q --python $(PY) requirements.lock
	$(PY) -m uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

venv: $(STAMP)  ## create/refresh the virtual environment from the lock file

redis-install:  ## install Debian's redis-server if missing (apt-get)
	@scripts/ensure_redis.sh

promtool-install: $(STAMP)  ## promtool for the alert-rule tests: the system's, else unpacked from Debian's prometheus package into .venv/bin
	@scripts/ensure_promtool.sh $(VENV)/bin

redis-up: $(STAMP) redis-install  ## start the project-local Redis (127.0.0.1:6390, data in var/redis)
	$(VENV)/bin/recall redis start

redis-down: $(STAMP)  ## stop the project-local Redis
	$(VENV)/bin/recall redis stop

demo: $(STAMP) redis-install  ## ML-100K end to end: fetch → Airflow pipeline → Redis + gRPC server → queries
	$(VENV)/bin/recall demo

serve: $(STAMP) redis-up  ## serve the latest index (RECALL_PORT=50051, RECALL_ADMIN_PORT=50052) + the refresher; Ctrl-C stops both
	@$(VENV)/bin/recall refresher & refresher=$$!; \
	trap 'kill $$refresher 2>/dev/null; wait $$refresher 2>/dev/null' EXIT; \
	$(VENV)/bin/recall serve

test: $(STAMP) redis-install promtool-install  ## unit + integration tests (real Redis, gRPC server, Airflow, promtool)
	RECALL_REQUIRE_PROMTOOL=1 $(PY) -m pytest -q tests

test-unit: $(STAMP)  ## fast tests of pure logic only
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP) redis-install  ## integration tests only
	$(PY) -m pytest -q tests/integration

lint: $(STAMP) proto-check  ## ruff + mypy + generated-code drift check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy training serving pipelines artifacts keyspace evaluation recall_cli bench catalogue recall_settings
	$(VENV)/bin/lint-imports  # dependency rules: [tool.importlinter] in pyproject.toml

proto: $(STAMP)  ## regenerate serving/api from protos/
	PYTHON=$(PY) scripts/gen_proto.sh

proto-check: $(STAMP)  ## fail if serving/api differs from what protos/ generates
	@tmp=$$(mktemp -d) && PYTHON=$(PY) scripts/gen_proto.sh $$tmp && \
	  diff -r -x __pycache__ $$tmp/recall serving/api/recall && rm -rf $$tmp && echo "generated code is up to date"

lock:  ## recompile requirements.lock from requirements.in (needs uv)
	$(PY) -m uv pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header requirements.in -o requirements.lock

bench: $(STAMP) redis-install  ## benchmarks (see bench/README.md)
	$(VENV)/bin/recall bench index
	$(PY) -m bench.recall_server

gpu: $(STAMP)  ## swap faiss-cpu for faiss-gpu in .venv (CUDA machines; index builds then use the GPU)
	$(PY) -m uv pip uninstall -q --python $(PY) faiss-cpu
	$(PY) -m uv pip install -q --python $(PY) "faiss-gpu==1.15.*"
	$(PY) -c "import faiss; print('faiss', faiss.__version__, 'GPUs:', faiss.get_num_gpus())"

image-locks: $(STAMP)  ## regenerate the images' requirement sets (infra/docker/*.lock) from requirements.lock
	$(PY) scripts/image_requirements.py serving > infra/docker/requirements-serving.lock
	$(PY) scripts/image_requirements.py pipeline > infra/docker/requirements-pipeline.lock
	$(PY) -m uv pip compile -q --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header \
	  infra/docker/requirements-postgres.in -c requirements.lock -o infra/docker/requirements-postgres.lock

image-locks-check: $(STAMP)  ## fail if infra/docker/requirements-{serving,pipeline}.lock are stale
	@for set in serving pipeline; do \
	  $(PY) scripts/image_requirements.py $$set | diff -u infra/docker/requirements-$$set.lock - \
	    || { echo "infra/docker/requirements-$$set.lock is stale: run make image-locks"; exit 1; }; \
	done; echo "image requirement sets are up to date"

image:  ## build the serving + pipeline images (BASE_IMAGE=local: debootstrap base, no registry)
	scripts/build_images.sh

test-containers: $(STAMP) image-locks-check  ## build the images, run the compose stack + Airflow end to end, tear down
	tests/containers/run.sh

clean:  ## remove local state (var/) — artifacts, Redis data, Airflow DB
	rm -rf var
