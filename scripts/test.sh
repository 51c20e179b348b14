#!/usr/bin/env bash
# Run every vmseal test: unit, integration (real swtpm, genuine AMD and NIST vectors) and
# end-to-end tests across the binaries. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export TSS2_LOG=all+NONE
if [ ! -d ../shared/vectors ] && [ -z "${VMSEAL_VECTORS:-}" ]; then
    echo "test vectors not found at ../shared/vectors: set VMSEAL_VECTORS" >&2
    exit 2
fi
cargo build --quiet --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first, so the closing line is nextest's summary of the whole run.
    cargo test --quiet --workspace --doc
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
