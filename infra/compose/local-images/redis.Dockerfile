# Redis from Debian's redis-server (7.0), for machines that cannot pull redis:7-bookworm.
# Built by tests/containers/run.sh (or by hand):
#   docker build -f infra/compose/local-images/redis.Dockerfile \
#       --build-arg BASE_IMAGE=recall-local/python:3.11-bookworm -t recall-local/redis:7 infra/compose/local-images
# Same contract as the official image for the compose file: `redis-server …` as the command,
# data in /data, redis-cli for the health check, non-root, and (like the official image's
# entrypoint) protected mode off: the container network is the boundary, not loopback.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# Debian stable's version: the base's apt sources fix the release, security updates welcome.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis -m 0750 /data
WORKDIR /data
COPY --chmod=0755 redis-entrypoint.sh /usr/local/bin/redis-entrypoint
USER redis
EXPOSE 6379
ENTRYPOINT ["redis-entrypoint"]
CMD ["redis-server"]
