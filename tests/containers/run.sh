#!/usr/bin/env bash
# `make test-containers`: build the images and run the compose stack end to end, like a
# user's first `docker compose up`, then tear everything down (also on failure).
#
#  1. docker.io / debootstrap / a Compose: installed with apt-get when missing (root);
#  2. an engine: the one that answers, else `dockerd` started here (its PID recorded, stopped
#     at the end); no engine → one line saying why, exit 0;
#  3. images: the debootstrap base, serving + pipeline, and Redis/Postgres/Prometheus from
#     Debian's packages (no registry needed); Docker's layer cache and the base tarball under
#     var/cache/containers make warm runs quick;
#  4. the stack (Redis, two recall servers, Postgres, Airflow api-server/scheduler/
#     dag-processor, Prometheus) on a project of its own, host ports on 127.0.0.1 only;
#  5. every service healthy; the DAG chain recall_train → recall_vectors → recall_index →
#     recall_ship run by Airflow's scheduler on synthetic data (each link scheduled by the
#     previous link's asset event); both servers SERVING; tests/containers/check_stack.py
#     from the host.
# Env: KEEP_STACK=1 leaves the stack (and a daemon started here) running for inspection.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
T0=$(date +%s)
LOG_DIR=${LOG_DIR:-$ROOT/var/log/test-containers}
mkdir -p "$LOG_DIR"
say() { printf '[test-containers %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
skip() { echo "test-containers: skipped: $*"; exit 0; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then command -v sudo >/dev/null && SUDO="sudo -n"; fi

# ---------------------------------------------------------------- 1. packages
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  need+=(docker-compose)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    skip "missing ${need[*]} and not root to install them"
  fi
  say "apt-get install ${need[*]}"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      $(printf '%s\n' "${need[@]}" | sort -u) > "$LOG_DIR/apt.log" 2>&1; } \
    || skip "apt-get install ${need[*]} failed (see $LOG_DIR/apt.log)"
fi

# ---------------------------------------------------------------- 2. engine
source scripts/docker_env.sh
DOCKERD_PID=""
COMPOSE=()
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  if [ "${KEEP_STACK:-0}" = 1 ]; then
    say "KEEP_STACK=1: leaving the stack up (dockerd PID ${DOCKERD_PID:-not ours})"; exit $rc
  fi
  if [ ${#COMPOSE[@]} -gt 0 ]; then
    say "tearing down the stack"
    "${COMPOSE[@]}" down -v --remove-orphans -t 10 > "$LOG_DIR/down.log" 2>&1 || true
  fi
  if [ -n "$DOCKERD_PID" ]; then
    say "stopping dockerd (PID $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$DOCKERD_PID" 2>/dev/null || true
  fi
  say "done (exit $rc)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! $DOCKER info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || skip "no Docker engine answers and dockerd is not installed"
  [ "$(id -u)" -eq 0 ] || skip "no Docker engine answers and only root may start dockerd here"
  say "starting dockerd (log: $LOG_DIR/dockerd.log)"
  dockerd > "$LOG_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  echo "$DOCKERD_PID" > "$LOG_DIR/dockerd.pid"
  for _ in $(seq 60); do
    $DOCKER info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 1
  done
  if ! $DOCKER info >/dev/null 2>&1; then
    reason=$(grep -m1 -iE 'level=(fatal|error)' "$LOG_DIR/dockerd.log" | sed 's/.*msg=//' | cut -c1-160)
    skip "dockerd did not start: ${reason:-no answer within 60 s}"
  fi
fi
if $DOCKER compose version >/dev/null 2>&1; then COMPOSE=($DOCKER compose)
else COMPOSE=(docker-compose); fi
say "engine $($DOCKER version -f '{{.Server.Version}}'), compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"

# ---------------------------------------------------------------- 3. images
export IMAGE_TAG=${IMAGE_TAG:-ci}
BASE=recall-local/python:3.11-bookworm
t=$(date +%s)
BUILD_LOG_DIR=$LOG_DIR BASE_IMAGE=local scripts/build_images.sh
for svc in redis:7 postgres:15 prometheus:2; do
  name=${svc%%:*}
  $DOCKER build -q -f "infra/compose/local-images/$name.Dockerfile" --build-arg "BASE_IMAGE=$BASE" \
    -t "recall-local/$svc" infra/compose/local-images > "$LOG_DIR/build-$name.log" 2>&1 \
    || { cat "$LOG_DIR/build-$name.log" >&2; exit 1; }
done
say "images ready in $(( $(date +%s) - t )) s"

# ---------------------------------------------------------------- 4. stack
export REDIS_IMAGE=recall-local/redis:7 POSTGRES_IMAGE=recall-local/postgres:15 \
       PROMETHEUS_IMAGE=recall-local/prometheus:2 RECALL_DATASET=synth RECALL_EPOCHS=${RECALL_EPOCHS:-10} RECALL_GATE_ENFORCE=false \
       REDIS_HOST_PORT=36390 RECALL_HOST_PORT=35051 RECALL_ADMIN_HOST_PORT=35052 \
       RECALL_METRICS_HOST_PORT=39102 RECALL_2_HOST_PORT=35061 RECALL_2_ADMIN_HOST_PORT=35062 \
       RECALL_2_METRICS_HOST_PORT=39112 AIRFLOW_HOST_PORT=38080 PROMETHEUS_HOST_PORT=39090 \
       GRAFANA_HOST_PORT=33000
COMPOSE+=(-f infra/compose/docker-compose.yml -p recall-citest)
SERVICES=(redis recall-server-1 recall-server-2 postgres data-init airflow-init airflow-apiserver
          airflow-scheduler airflow-dag-processor prometheus)
HEALTHY=(redis postgres airflow-apiserver airflow-scheduler airflow-dag-processor prometheus)
t=$(date +%s)
say "starting ${SERVICES[*]}"
"${COMPOSE[@]}" up -d --no-build "${SERVICES[@]}" > "$LOG_DIR/up.log" 2>&1 \
  || { cat "$LOG_DIR/up.log" >&2; "${COMPOSE[@]}" logs --tail 40 >&2 || true; exit 1; }

health() { $DOCKER inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$("${COMPOSE[@]}" ps -q "$1")" 2>/dev/null; }
wait_healthy() {  # $1: seconds, rest: services
  local until=$(( $(date +%s) + $1 )); shift
  local pending=("$@")
  while [ ${#pending[@]} -gt 0 ]; do
    local still=()
    for s in "${pending[@]}"; do [ "$(health "$s")" = healthy ] || still+=("$s"); done
    pending=("${still[@]+"${still[@]}"}")
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ "$(date +%s)" -ge "$until" ]; then
      echo "not healthy in time: ${pending[*]}" >&2
      for s in "${pending[@]}"; do echo "--- $s ($(health "$s"))" >&2; "${COMPOSE[@]}" logs --tail 30 "$s" >&2; done
      return 1
    fi
    sleep 5
  done
}
wait_healthy 420 "${HEALTHY[@]}"
say "Redis, Postgres, Airflow (api-server, scheduler, dag-processor), Prometheus healthy in $(( $(date +%s) - t )) s"

# ---------------------------------------------------------------- 5. pipeline in Airflow
airflow() { "${COMPOSE[@]}" exec -T airflow-scheduler airflow "$@"; }
CHAIN=(recall_train recall_vectors recall_index recall_ship)  # pipelines/assets.py
all_parsed() {
  local listed d
  listed=$(airflow dags list -o plain 2>/dev/null) || return 1
  for d in "${CHAIN[@]}"; do grep -qw "$d" <<<"$listed" || return 1; done
}
t=$(date +%s)
until all_parsed; do
  [ $(( $(date +%s) - t )) -lt 240 ] || { echo "DAGs ${CHAIN[*]} never all parsed" >&2; airflow dags list-import-errors >&2 || true; exit 1; }
  sleep 10
done
# The consumers first, so the asset events find them unpaused. Unpausing recall_train lets
# the scheduler start its latest daily run (catchup=False), as it would in production; a
# manual trigger only if it has not done so within a minute.
say "DAGs ${CHAIN[*]} parsed; unpausing them"
for ((i = ${#CHAIN[@]} - 1; i >= 0; i--)); do airflow dags unpause "${CHAIN[$i]}" > /dev/null; done

wait_success() {  # $1: DAG, $2: seconds; $3=trigger: trigger a run if none started in 60 s
  local dag=$1 limit=$2 trigger=${3:-} t0 state="" triggered=0 runs
  t0=$(date +%s)
  until [ "$state" = success ]; do
    sleep 15
    if [ -z "$state" ] && [ -n "$trigger" ] && [ $triggered = 0 ] && [ $(( $(date +%s) - t0 )) -gt 60 ]; then
      say "no scheduled run of $dag yet: triggering one"
      airflow dags trigger "$dag" > "$LOG_DIR/trigger.log" 2>&1 || { cat "$LOG_DIR/trigger.log" >&2; exit 1; }
      triggered=1
    fi
    runs=$(airflow dags list-runs "$dag" -o json 2>/dev/null || echo '[]')
    state=$(python3 tests/containers/run_state.py <<<"$runs")
    [ "$state" != failed ] || { echo "DAG run of $dag failed" >&2; "${COMPOSE[@]}" logs --tail 80 airflow-scheduler >&2;
      $DOCKER run --rm -v recall-citest_airflow-logs:/logs "two-tower-recall-pipeline:$IMAGE_TAG" sh -c 'tail -n 40 $(find /logs -name "*.log" | sort | tail -5)' >&2 || true; exit 1; }
    [ $(( $(date +%s) - t0 )) -lt "$limit" ] || { echo "$dag run not done after $limit s (state: ${state:-no run})" >&2; exit 1; }
  done
  say "Airflow ran $dag to success in $(( $(date +%s) - t0 )) s"
}
wait_success recall_train 900 trigger
# Each later link runs only when the previous link's asset event schedules it.
wait_success recall_vectors 300
wait_success recall_index 600
wait_success recall_ship 300
for d in "${CHAIN[@]}"; do airflow dags pause "$d" > /dev/null; done

t=$(date +%s)
wait_healthy 120 recall-server-1 recall-server-2
say "both recall servers SERVING $(( $(date +%s) - t )) s after the run"

# ---------------------------------------------------------------- 6. checks from the host
RECALL_TARGETS=127.0.0.1:$RECALL_HOST_PORT,127.0.0.1:$RECALL_2_HOST_PORT \
PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_HOST_PORT REDIS_URL=redis://127.0.0.1:$REDIS_HOST_PORT/0 \
COMPOSE="${COMPOSE[*]}" \
  "$ROOT/.venv/bin/python" tests/containers/check_stack.py
say "all container checks passed"
