#!/bin/bash
# Initialize an empty PGDATA (trust authentication, then every
# /docker-entrypoint-initdb.d/*.sql), then run the server in the foreground
# on PGPORT, listening on POSTGRES_LISTEN (default every interface).
set -euo pipefail
if [[ ! -s $PGDATA/PG_VERSION ]]; then
	initdb -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --no-sync >/dev/null
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w -s start
	for f in /docker-entrypoint-initdb.d/*.sql; do
		[[ -e $f ]] && psql -h /tmp -U postgres -q -v ON_ERROR_STOP=1 -f "$f"
	done
	pg_ctl -D "$PGDATA" -m fast -w -s stop
fi
exec postgres -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN:-*}" -c unix_socket_directories=/tmp
