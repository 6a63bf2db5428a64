# Prometheus 2.42 from Debian's package, for machines that reach no image
# registry (make compose-test; ADR 0018): the same version as
# docker-compose.yml's prom/prometheus, the same flags.
ARG BASE=orderly-local/debian:bookworm
FROM ${BASE}
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
