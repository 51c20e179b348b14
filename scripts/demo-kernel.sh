#!/usr/bin/env bash
# vmseal kernel-objects demo: a hidden process found in a real Linux guest.
#   1. install dependencies, build, fetch Debian's cloud kernel (scripts/fetch-test-kernel.sh)
#   2. the verifier (SQLite, mutual TLS), a freshly manufactured swtpm, the host enrolled
#   3. boot the Debian kernel under QEMU with KASLR on, its RAM in a shared memory-backend file
#   4. register the VM with a policy that hashes the kernel's text (KASLR undone) and walks its
#      kernel objects ([kernel_objects]: the layout from the kernel's own BTF)
#   5. capture and promote the golden baseline with its kernel objects; capture again: score 100
#   6. a rootkit (vmseal-rootkit, from the host side, as DKOM rootkits do from inside) unlinks
#      the guest's user process from the kernel's task list: it keeps running, invisible to ps
#   7. capture: the pid namespace still knows the process, the task list does not — the verifier
#      names "hidden process pid N busybox", critical, and the trust score falls to 0; the
#      alert says so; vmseal-certs shows the two views disagree from the evidence alone
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
demo_start kernel-host
demo_guest
# No symbol map from the guest: the host decodes the kernel's own kallsyms tables from its image and
# learns this boot's KASLR slide from the guest's interrupt table.
source=(--source "qemu:$qmp,$mem" --policy "$work/linux.toml" --state "$work/host" --vm-id debian)

step "the admin registers the VM with a policy: kernel text (KASLR undone) and the kernel's objects"
demo_kernel_policy > "$work/linux.toml"
cat "$work/linux.toml"
"${admin[@]}" register-vm --vm-id debian --host-id kernel-host --threshold 70 --policy "$work/linux.toml"

step "capture the guest and submit it; the admin promotes it to the golden baseline (page hashes and kernel objects)"
"$bin/vmseal-host" capture "${source[@]}" --out "$work/k0.cose" --baseline-out "$work/k0.cbor" "${agent[@]}"
"${admin[@]}" promote-baseline --vm-id debian --seq 0 --baseline "$work/k0.cbor"

step "capture again: nothing differs from the golden state"
"$bin/vmseal-host" capture "${source[@]}" --out "$work/k1.cose" "${agent[@]}" | tee "$work/k1.log"
grep -q "VERIFIER: trust score 100" "$work/k1.log"

step "a rootkit unlinks the user's process (pid $user) from the kernel's task list: it keeps running, and ps inside the guest no longer shows it"
"$bin/vmseal-rootkit" --qemu "$qmp,$mem" --kernel "$kdir/vmlinuz" hide-process "$user"

step "capture: the kernel's pid namespace still knows the process, its task list does not"
"$bin/vmseal-host" capture "${source[@]}" --out "$work/k2.cose" "${agent[@]}" | tee "$work/k2.log"
grep -q "VERIFIER: trust score 0 (contraindicated)" "$work/k2.log"
grep -q "kernel: hidden process pid $user busybox (critical)" "$work/k2.log"

step "the verifier's record and the alert"
"${admin[@]}" appraisals --vm-id debian --limit 3
"${admin[@]}" alerts list --state-filter open --vm-id debian | tee "$work/alerts.log"
grep -q "hidden process pid $user busybox" "$work/alerts.log"

step "offline, from public material: the evidence's two views of the processes disagree"
"$bin/vmseal-certs" inspect "$work/k2.cose" | grep -E "kernel objects|objects|HIDDEN"

step "done: a process hidden by unlinking it from a real Linux kernel's task list was found from outside the guest, named (pid $user), scored critical (trust score 0) and alerted"
