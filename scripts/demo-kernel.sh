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
kdir=$(scripts/fetch-test-kernel.sh)

step "boot Debian's cloud kernel under QEMU TCG (KASLR on; RAM in a shared memory-backend file; QMP socket)"
mem=/dev/shm/vmseal-demo-kernel-$$
qemu-system-x86_64 -machine q35,memory-backend=mem -accel tcg -m 256M \
    -object "memory-backend-file,id=mem,size=256M,mem-path=$mem,share=on" \
    -kernel "$kdir/vmlinuz" -initrd "$kdir/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
    -display none -no-reboot -serial "file:$work/console.log" -qmp "unix:$work/qmp.sock,server=on,wait=off" &
demo_pids+=($!)
trap 'demo_cleanup; rm -f "$mem"' EXIT
for _ in $(seq 1 1800); do grep -q vmseal-ready "$work/console.log" 2>/dev/null && break; sleep 0.1; done
grep -q vmseal-ready "$work/console.log" || { echo "the guest did not boot:" >&2; cat "$work/console.log" >&2; exit 1; }
# The running kernel's symbols, as its /proc/kallsyms gives them (the guest printed them).
sed -n '/vmseal-symbols-begin/,/vmseal-symbols-end/p' "$work/console.log" | tr -d '\r' | grep -v vmseal-symbols > "$work/System.map"
user=$(sed -n 's/^vmseal-user \([0-9]*\).*/\1/p' "$work/console.log")
echo "guest up; its _text is at $(awk '$3 == "_text" {print $1}' "$work/System.map") (KASLR); the user's process is pid $user"
source=(--source "qemu:$work/qmp.sock,$mem" --policy "$work/linux.toml" --symbols "$work/System.map"
        --state "$work/host" --vm-id debian)

step "the admin registers the VM with a policy: kernel text (KASLR undone) and the kernel's objects"
cat > "$work/linux.toml" <<POLICY
name = "debian-cloud"
version = 1
kernel = "$kdir/vmlinuz"          # the guest's bzImage: relocations, and the BTF for the objects' layout

[[region]]
name = "kernel-text"
class = "code"
severity = "critical"
symbol = "_stext"
end_symbol = "_etext"
kaslr = "undo"

[kernel_objects]                  # processes, modules, interrupt gates, system calls
POLICY
cat "$work/linux.toml"
"${admin[@]}" register-vm --vm-id debian --host-id kernel-host --threshold 70 --policy "$work/linux.toml"

step "capture the guest and submit it; the admin promotes it to the golden baseline (page hashes and kernel objects)"
"$bin/vmseal-host" capture "${source[@]}" --out "$work/k0.cose" --baseline-out "$work/k0.cbor" "${agent[@]}"
"${admin[@]}" promote-baseline --vm-id debian --seq 0 --baseline "$work/k0.cbor"

step "capture again: nothing differs from the golden state"
"$bin/vmseal-host" capture "${source[@]}" --out "$work/k1.cose" "${agent[@]}" | tee "$work/k1.log"
grep -q "VERIFIER: trust score 100" "$work/k1.log"

step "a rootkit unlinks the user's process (pid $user) from the kernel's task list: it keeps running, and ps inside the guest no longer shows it"
"$bin/vmseal-rootkit" --qemu "$work/qmp.sock,$mem" --kernel "$kdir/vmlinuz" --symbols "$work/System.map" hide-process "$user"

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
