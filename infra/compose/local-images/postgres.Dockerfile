# PostgreSQL 15 from Debian's packages, for machines that cannot pull postgres:15-bookworm.
#   docker build -f infra/compose/local-images/postgres.Dockerfile \
#       --build-arg BASE_IMAGE=recall-local/python:3.11-bookworm -t recall-local/postgres:15 infra/compose/local-images
# The subset of the official image's contract the compose file uses: POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB create the role and database on first start; data in
# /var/lib/postgresql/data; pg_isready for the health check; runs as `postgres`.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# Debian stable's version: the base's apt sources fix the release, security updates welcome.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY --chmod=0755 postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint"]
CMD ["postgres"]
