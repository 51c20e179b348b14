#!/usr/bin/env bash
# The fleet benchmark of docs/benchmarks.md: 1,000 agents (each its own host, agent certificate
# and mutual-TLS connection) and 10,000 VMs, on SQLite and on PostgreSQL (a temporary cluster on a
# free port), each twice: saturated (every agent back to back: throughput) and paced (a fixed
# offered rate: latency under load). Prints one JSON line per run. Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${AGENTS:-1000} vms=${VMS:-10000} rate=${RATE:-250}
scripts/install-deps.sh
cargo build --quiet --release -p vmseal-loadgen
bin=target/release/vmseal-loadgen
read -r pg_dir pg_url < <(scripts/pg-test-cluster.sh)
trap 'scripts/pg-test-cluster.sh stop "$pg_dir"' EXIT
run() {
    local db=("$@")
    "$bin" fleet --agents "$agents" --vms "$vms" --json "${db[@]}" 2>/dev/null
}
fresh_pg() {
    psql -X -q -d "$pg_url" -c "CREATE DATABASE $1" >&2
    echo "${pg_url%/*}/$1"
}
echo "# SQLite, saturated"; run --rounds 2
echo "# SQLite, paced at $rate/s"; run --rounds 1 --rate "$rate"
echo "# PostgreSQL, saturated"; run --rounds 2 --database "$(fresh_pg fleet_saturated)"
echo "# PostgreSQL, paced at $rate/s"; run --rounds 1 --rate "$rate" --database "$(fresh_pg fleet_paced)"
