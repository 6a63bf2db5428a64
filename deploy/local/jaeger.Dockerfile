# Jaeger v2 (github.com/jaegertracing/jaeger v1.75.0, cmd/jaeger, the
# release of the jaegertracing/jaeger:2.12.0 image) on the local Debian
# base, for machines that reach no image registry (make compose-test; ADR
# 0018). The context is a directory holding the binary, which
# deploy/local/compose-test builds with the host's Go and caches. It runs
# both Jaeger and the OpenTelemetry collector, as the public image does in
# docker-compose.yml.
ARG BASE=orderly-local/debian:bookworm
FROM ${BASE}
COPY jaeger /usr/local/bin/jaeger
USER 10001
ENTRYPOINT ["/usr/local/bin/jaeger"]
