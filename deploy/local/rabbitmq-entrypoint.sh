#!/bin/bash
# Write the management listener (which has no environment variable of its
# own) and run the broker in the foreground.
set -euo pipefail
{
	echo "management.tcp.port = ${RABBITMQ_MANAGEMENT_PORT:-15672}"
	echo "management.tcp.ip = ${RABBITMQ_MANAGEMENT_IP:-0.0.0.0}"
} > /etc/rabbitmq/conf.d/90-management.conf
exec rabbitmq-server
