# PostgreSQL 15 from Debian's packages, for machines that reach no image
# registry (make compose-test; ADR 0018). BASE is the local Debian image
# (orderly-local/debian, a debootstrap rootfs). Like the official image it
# runs /docker-entrypoint-initdb.d/*.sql once, on an empty data directory,
# and honours POSTGRES_HOST_AUTH_METHOD=trust (the only method it offers);
# PGPORT moves the port (pg_isready reads it too).
ARG BASE=orderly-local/debian:bookworm
FROM ${BASE}
# Debian's package would create and start a "main" cluster; the entrypoint
# makes its own in PGDATA instead.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/orderly.conf \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d \
 && chown postgres:postgres /var/lib/postgresql/data && chmod 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data PGPORT=5432
USER postgres
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
