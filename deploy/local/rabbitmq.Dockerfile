# RabbitMQ 3.10 from Debian's packages, with the management plugin, for
# machines that reach no image registry (make compose-test; ADR 0018). Reads
# /etc/rabbitmq/conf.d like the official image; RABBITMQ_NODE_PORT,
# RABBITMQ_NODE_IP_ADDRESS, RABBITMQ_DIST_PORT, ERL_EPMD_PORT and
# RABBITMQ_NODENAME are RabbitMQ's own variables; RABBITMQ_MANAGEMENT_PORT
# and RABBITMQ_MANAGEMENT_IP, the entrypoint's, move the management UI.
ARG BASE=orderly-local/debian:bookworm
FROM ${BASE}
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && rabbitmq-plugins enable --offline rabbitmq_management >/dev/null \
 && mkdir -p /etc/rabbitmq/conf.d \
 && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq
COPY rabbitmq-entrypoint.sh /usr/local/bin/rabbitmq-entrypoint
USER rabbitmq
ENV HOME=/var/lib/rabbitmq
ENTRYPOINT ["/usr/local/bin/rabbitmq-entrypoint"]
