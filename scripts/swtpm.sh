#!/usr/bin/env bash
# Helpers to manufacture and run a private swtpm (sourced by demo.sh).
# swtpm_start DIR  -> sets SWTPM_TCTI, SWTPM_PID, SWTPM_EK_CA (PEM of the EK issuing CA)
swtpm_start() {
    local dir=$1
    mkdir -p "$dir/state" "$dir/ca"
    cat > "$dir/swtpm-localca.conf" <<CONF
statedir = $dir/ca
signingkey = $dir/ca/signkey.pem
issuercert = $dir/ca/issuercert.pem
certserial = $dir/ca/certserial
CONF
    echo "--platform-manufacturer vmseal-demo --platform-version 2.1 --platform-model swtpm" > "$dir/swtpm-localca.options"
    cat > "$dir/swtpm_setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $dir/swtpm-localca.conf
create_certs_tool_options = $dir/swtpm-localca.options
CONF
    swtpm_setup --tpm2 --tpmstate "$dir/state" --create-ek-cert --config "$dir/swtpm_setup.conf" --overwrite >/dev/null
    local port
    for _ in $(seq 1 50); do
        port=$(python3 -c 'import socket,random
for _ in range(100):
    p=random.randrange(20000,60000,2)
    ok=True
    for q in (p,p+1):
        s=socket.socket()
        try: s.bind(("127.0.0.1",q))
        except OSError: ok=False
        finally: s.close()
    if ok: print(p); break')
        swtpm socket --tpm2 --tpmstate dir="$dir/state" \
            --server type=tcp,port="$port",bindaddr=127.0.0.1 \
            --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
            --flags not-need-init,startup-clear --pid file="$dir/swtpm.pid" --daemon 2>/dev/null && break
    done
    for _ in $(seq 1 100); do [ -s "$dir/swtpm.pid" ] && break; sleep 0.05; done
    SWTPM_PID=$(cat "$dir/swtpm.pid")
    SWTPM_TCTI="swtpm:host=127.0.0.1,port=$port"
    SWTPM_EK_CA="$dir/ca/issuercert.pem"
    export SWTPM_PID SWTPM_TCTI SWTPM_EK_CA
}

swtpm_stop() {
    if [ -n "${SWTPM_PID:-}" ]; then kill "$SWTPM_PID" 2>/dev/null || true; fi
}
