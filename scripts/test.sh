#!/usr/bin/env bash
# Run every vmseal test: unit, integration (real swtpm, real PostgreSQL, genuine AMD and NIST
# vectors) and end-to-end tests across the binaries. Installs what it needs first and starts a
# temporary PostgreSQL cluster on a free port for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export TSS2_LOG=all+NONE
if [ ! -d ../shared/vectors ] && [ -z "${VMSEAL_VECTORS:-}" ]; then
    echo "test vectors not found at ../shared/vectors: set VMSEAL_VECTORS" >&2
    exit 2
fi
cargo build --quiet --workspace --bins
# One PostgreSQL cluster for the whole run; each test makes its own database in it.
if [ -z "${VMSEAL_TEST_POSTGRES:-}" ]; then
    read -r pg_dir pg_url < <(scripts/pg-test-cluster.sh)
    trap 'scripts/pg-test-cluster.sh stop "$pg_dir"' EXIT
    export VMSEAL_TEST_POSTGRES="$pg_url"
    echo "PostgreSQL for the tests: $pg_url" >&2
fi
if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first, so the closing line is nextest's summary of the whole run.
    cargo test --quiet --workspace --doc
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
