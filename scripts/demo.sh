#!/usr/bin/env bash
# vmseal demo: capture a running KVM guest, seal its memory under a TPM-rooted, post-quantum key
# hierarchy, detect an injected attack, and check everything from public material.
#   1. install dependencies, build
#   2. start a freshly manufactured swtpm (EK certificate from a private CA) on a free port
#   3. vmseal-host init: AK under the EK, ML-DSA-87 intermediate bound by a TPM quote (and the
#      INSECURE SNP stand-in), intermediate seed sealed to PCRs 0-7
#   4. vmseal-host vm run: the micro-VM on /dev/kvm; a baseline capture, a clean one, then code and
#      syscall-table attacks and a capture that shows exactly those regions changed
#   5. vmseal-certs verify and inspect; a tampered snapshot and the INSECURE root are refused
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

step "vmseal-host vm run: a KVM micro-VM on /dev/kvm runs its guest program; three captures, the first is"
echo "   the baseline; before the third, rootkit-style attacks patch the guest's code and hook its syscall table"
"$bin/vmseal-host" vm run --state "$work/state" --vm-id demo-vm --captures 3 --interval-ms 300 \
    --attack code-patch --attack pointer-hook --attack-after 2 --incremental --out-dir "$work/evidence"
snap0=$work/evidence/demo-vm-000000.cose
snap2=$work/evidence/demo-vm-000002.cose
cp "$snap0" "$work/snap0.cose"

step "vmseal-certs verify every snapshot (trusting the swtpm EK CA and, for this demo only, the INSECURE SNP test root)"
"$bin/vmseal-certs" verify --roots "$SWTPM_EK_CA" --allow-insecure "$work"/evidence/*.cose

step "vmseal-certs inspect the attacked snapshot: its regions, and which pages changed"
"$bin/vmseal-certs" inspect --roots "$SWTPM_EK_CA" --allow-insecure "$snap2" | sed -n '1,/certificate:/p' | grep -v "certificate:"

step "the same evidence without --allow-insecure: the stand-in's SNP root is refused"
if "$bin/vmseal-certs" verify --roots "$SWTPM_EK_CA" --require both "$snap2"; then
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

step "done: every snapshot verifies, the attacks show up as changed code and syscall-table pages, and a tampered snapshot is rejected"
