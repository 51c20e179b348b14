#!/usr/bin/env bash
# vmseal demo: a TPM-rooted, post-quantum seal over a memory image, checked from public material.
#   1. install dependencies, build
#   2. start a freshly manufactured swtpm (EK certificate from a private CA) on a free port
#   3. vmseal-host init: AK under the EK, ML-DSA-87 intermediate bound by a TPM quote (and the
#      INSECURE SNP stand-in), intermediate seed sealed to PCRs 0-7
#   4. vmseal-host seal: hash a memory image page by page into Merkle trees, sign the snapshot
#   5. vmseal-certs inspect and verify it; then show a tampered copy rejected
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/install-deps.sh
echo "== building" >&2
cargo build --quiet --bins
bin=$root/target/debug
export TSS2_LOG=all+NONE
work=$(mktemp -d /tmp/vmseal-demo.XXXXXX)
. scripts/swtpm.sh
trap 'swtpm_stop; rm -rf "$work"' EXIT
swtpm_start "$work/tpm"
echo "== swtpm running: $SWTPM_TCTI" >&2

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "vmseal-host init (TPM root; INSECURE software SNP stand-in, since this machine has no SEV-SNP)"
"$bin/vmseal-host" init --state "$work/state" --tpm "$SWTPM_TCTI" --snp insecure-soft --host-id demo-host

step "a 64 MiB memory image: 2 MiB of 'code', the rest data"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$work/mem.raw"

step "vmseal-host seal"
"$bin/vmseal-host" seal --state "$work/state" --vm-id demo-vm --image "$work/mem.raw" --out "$work/snap0.cose" \
    --region kernel-text:code:critical:0:0x200000 --region heap:data:medium:0x200000:0x3e00000

step "vmseal-certs inspect (trusting the swtpm EK CA and, for this demo only, the INSECURE SNP test root)"
"$bin/vmseal-certs" inspect --roots "$SWTPM_EK_CA" --allow-insecure "$work/snap0.cose"

step "vmseal-certs verify"
"$bin/vmseal-certs" verify --roots "$SWTPM_EK_CA" --allow-insecure "$work/snap0.cose"

step "the same evidence without --allow-insecure: the stand-in's SNP root is refused"
if "$bin/vmseal-certs" verify --roots "$SWTPM_EK_CA" --require both "$work/snap0.cose"; then
    echo "UNEXPECTED: accepted" >&2; exit 1
fi

step "a tampered copy: one byte of the signed claims flipped"
cp "$work/snap0.cose" "$work/tampered.cose"
python3 - "$work/tampered.cose" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
i = b.find(b'memory_root')          # a byte of the signed payload, next to the memory root
b[i + 20] ^= 0x01
open(p, 'wb').write(b)
PY
if "$bin/vmseal-certs" verify --roots "$SWTPM_EK_CA" --allow-insecure "$work/tampered.cose"; then
    echo "UNEXPECTED: tampered evidence accepted" >&2; exit 1
fi

step "done: the genuine snapshot verifies, the tampered one is rejected"
