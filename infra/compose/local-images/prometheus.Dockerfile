# Prometheus from Debian's package (2.42), for machines that cannot pull prom/prometheus.
#   docker build -f infra/compose/local-images/prometheus.Dockerfile \
#       --build-arg BASE_IMAGE=recall-local/python:3.11-bookworm -t recall-local/prometheus:2 infra/compose/local-images
# Same contract as prom/prometheus for the compose file: flags as the command, config in
# /etc/prometheus, data in /prometheus, non-root.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# Debian stable's version: the base's apt sources fix the release, security updates welcome.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o prometheus -g prometheus -m 0755 /prometheus
WORKDIR /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
