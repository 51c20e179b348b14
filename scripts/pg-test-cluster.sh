#!/usr/bin/env bash
# Start a throw-away PostgreSQL cluster for the test run on a free loopback port and print its
# URL (postgres://vmseal@127.0.0.1:PORT/postgres); `scripts/pg-test-cluster.sh stop DIR` stops it.
# Tests create one database each in it (VMSEAL_TEST_POSTGRES); without it, each test that needs
# PostgreSQL starts a private cluster itself (slower, same result).
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "${1:-}" = stop ]; then
    as_owner "$bin/pg_ctl" -D "$2/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$2"
    exit 0
fi
dir=$(mktemp -d /tmp/vmseal-pg-XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_owner "$bin/initdb" -D "$dir/data" -U vmseal --auth=trust -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null \
    || { cat "$dir/log" >&2; exit 1; }
echo "$dir postgres://vmseal@127.0.0.1:$port/postgres"
