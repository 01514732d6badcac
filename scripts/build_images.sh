#!/usr/bin/env bash
# Build the serving and pipeline images (`make image`).
#   BASE_IMAGE   python:3.11-slim (default, pulled from Docker Hub), or `local`: build the base
#                with scripts/build_base_image.sh (debootstrap; no registry needed)
#   IMAGE_TAG    tag of both images (default dev): two-tower-recall-{serving,pipeline}:$IMAGE_TAG
#   TARGETS      which Dockerfile targets (default "serving pipeline"; `gpu` needs a GPU host
#                to be of any use)
# Package indexes and the CA bundle come from this machine's pip settings (scripts/docker_env.sh).
# Prints each image's build time and size.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/docker_env.sh

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
IMAGE_TAG=${IMAGE_TAG:-dev}
TARGETS=${TARGETS:-serving pipeline}
if [ "$BASE_IMAGE" = local ]; then
  BASE_IMAGE=recall-local/python:3.11-bookworm
  scripts/build_base_image.sh "$BASE_IMAGE"
fi

for target in $TARGETS; do
  tag="two-tower-recall-$target:$IMAGE_TAG"
  start=$(date +%s)
  echo "building $tag (target $target, base $BASE_IMAGE)…"
  $DOCKER build --progress=plain --target "$target" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    "${BUILD_NET_ARGS[@]}" -t "$tag" . > "${BUILD_LOG_DIR:-/tmp}/recall-build-$target.log" 2>&1 \
    || { tail -40 "${BUILD_LOG_DIR:-/tmp}/recall-build-$target.log" >&2; echo "error: building $tag failed" >&2; exit 1; }
  size=$($DOCKER image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')
  echo "built $tag in $(( $(date +%s) - start )) s, $size"
done
