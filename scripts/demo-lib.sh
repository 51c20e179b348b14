#!/usr/bin/env bash
# What the demos share (sourced by demo.sh and demo-kernel.sh): install and build, a freshly
# manufactured swtpm, the verifier on SQLite with mutual TLS on 127.0.0.1, and the host
# initialised and enrolled with a one-use token.
#   demo_build          -> installs, builds; sets root bin work; cleans up on exit (every pid in
#                          demo_pids, the swtpm if one was started, the work directory)
#   demo_start HOST_ID  -> demo_build, then the swtpm, the verifier and the enrolled host; sets
#                          url admin[] agent[]
#   demo_guest          -> boots Debian's cloud kernel under QEMU TCG (KASLR on, RAM in a shared
#                          memory-backend file); sets kdir mem qmp user (its uid-1000 process) and
#                          writes the running kernel's symbols to $work/System.map
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

demo_pids=()
mem=""
demo_cleanup() {
    if declare -F swtpm_stop >/dev/null; then swtpm_stop; fi
    local p
    for p in "${demo_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
    if [ -n "$mem" ]; then rm -f "$mem"; fi
}

demo_build() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    root=$PWD
    scripts/install-deps.sh
    echo "== building" >&2
    cargo build --quiet --bins
    bin=$root/target/debug
    export TSS2_LOG=all+NONE VMSEAL_LOG=warn
    work=$(mktemp -d /tmp/vmseal-demo.XXXXXX)
    trap demo_cleanup EXIT
}

demo_start() {
    local host_id=$1
    demo_build
    . scripts/swtpm.sh
    swtpm_start "$work/tpm"

    step "vmseal-host init (TPM root on swtpm; INSECURE software SNP stand-in, since this machine has no SEV-SNP)"
    "$bin/vmseal-host" init --state "$work/host" --tpm "$SWTPM_TCTI" --snp insecure-soft --host-id "$host_id"

    step "vmseal-verifier init and serve (SQLite in its state directory, mutual TLS on 127.0.0.1)"
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    url=https://localhost:$port
    "$bin/vmseal-verifier" init --state "$work/verifier"
    "$bin/vmseal-verifier" serve --state "$work/verifier" --listen "127.0.0.1:$port" --require both \
        --ek-roots "$SWTPM_EK_CA" --insecure-snp-root "$work/host/insecure-snp-ark.pem" &
    demo_pids+=($!)
    admin=("$bin/vmseal-verifier" admin --verifier "$url" --state "$work/verifier")
    for _ in $(seq 1 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
        sleep 0.1
    done

    step "the admin makes a one-use enrollment token; the host enrols with it (TPM quote + EK chain + credential activation in swtpm; INSECURE SNP root allowed by config)"
    "${admin[@]}" enrollment-token --host-id "$host_id" --out-cert "$work/token.pem" --out-key "$work/token.key"
    "$bin/vmseal-host" enroll --state "$work/host" --verifier "$url" --verifier-ca "$work/verifier/ca.pem" \
        --token-cert "$work/token.pem" --token-key "$work/token.key" --agent-cert "$work/agent.pem" --agent-key "$work/agent.key"
    agent=(--verifier "$url" --verifier-ca "$work/verifier/ca.pem" --agent-cert "$work/agent.pem" --agent-key "$work/agent.key")
}

demo_guest() {
    kdir=$(scripts/fetch-test-kernel.sh)
    step "boot Debian's cloud kernel under QEMU TCG (KASLR on; RAM in a shared memory-backend file; QMP socket)"
    mem=/dev/shm/vmseal-demo-kernel-$$
    qmp=$work/qmp.sock
    qemu-system-x86_64 -machine q35,memory-backend=mem -accel tcg -m 256M \
        -object "memory-backend-file,id=mem,size=256M,mem-path=$mem,share=on" \
        -kernel "$kdir/vmlinuz" -initrd "$kdir/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
        -display none -no-reboot -serial "file:$work/console.log" -qmp "unix:$qmp,server=on,wait=off" &
    demo_pids+=($!)
    for _ in $(seq 1 1800); do grep -q vmseal-ready "$work/console.log" 2>/dev/null && break; sleep 0.1; done
    grep -q vmseal-ready "$work/console.log" || { echo "the guest did not boot:" >&2; cat "$work/console.log" >&2; exit 1; }
    # The running kernel's symbols, as its /proc/kallsyms gives them (the guest printed them).
    sed -n '/vmseal-symbols-begin/,/vmseal-symbols-end/p' "$work/console.log" | tr -d '\r' | grep -v vmseal-symbols > "$work/System.map"
    user=$(sed -n 's/^vmseal-user \([0-9]*\).*/\1/p' "$work/console.log")
    echo "guest up; its _text is at $(awk '$3 == "_text" {print $1}' "$work/System.map") (KASLR); the user's process is pid $user"
}

# A policy for the demo guest: its kernel text (KASLR undone) and its kernel objects.
demo_kernel_policy() {
    cat <<POLICY
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
}
