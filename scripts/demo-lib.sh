#!/usr/bin/env bash
# What the demos share (sourced by demo.sh and demo-kernel.sh): install and build, a freshly
# manufactured swtpm, the verifier on SQLite with mutual TLS on 127.0.0.1, and the host
# initialised and enrolled with a one-use token.
#   demo_start HOST_ID  -> sets root bin work admin[] agent[]; cleans up on exit (swtpm, the
#                          verifier, every pid in demo_pids, the work directory)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

demo_pids=()
demo_cleanup() {
    swtpm_stop
    local p
    for p in "${demo_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}

demo_start() {
    local host_id=$1
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    root=$PWD
    scripts/install-deps.sh
    echo "== building" >&2
    cargo build --quiet --bins
    bin=$root/target/debug
    export TSS2_LOG=all+NONE VMSEAL_LOG=warn
    work=$(mktemp -d /tmp/vmseal-demo.XXXXXX)
    . scripts/swtpm.sh
    trap demo_cleanup EXIT
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
