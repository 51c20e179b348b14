#!/usr/bin/env bash
# vmseal demo: the whole loop.
#   1. install dependencies, build
#   2. start the verifier (SQLite, mutual TLS) and a freshly manufactured swtpm
#   3. vmseal-host init: AK under the EK, ML-DSA-87 intermediate bound by a TPM quote (and the
#      INSECURE SNP stand-in, since this machine has no SEV-SNP), seed sealed to PCRs 0-7
#   4. enrol the host at the verifier, register the VM with its capture policy
#   5. capture the KVM micro-VM; the admin promotes that snapshot to the golden baseline, exports
#      it as a signed CoRIM (draft-ietf-rats-corim-11) and vmseal-certs checks it offline
#   6. capture again (trust score 100), inject a code patch into the running guest, capture:
#      the verifier's trust score falls and names the region that changed
#   7. the alert reaches a local webhook receiver, which verifies its signature with ca.pem
#   8. a host that captures under a doctored policy leaving out the code region is refused, and the
#      refusal is an alert; the refused evidence is set aside, and once the cause is gone the next
#      capture is accepted on the verifier's chain, with no manual step
#   9. vmseal-certs verifies the evidence offline, and the VM's history as one unbroken chain; a
#      tampered copy is refused
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
demo_start demo-host

step "the admin registers the VM with its capture policy and alert threshold"
"${admin[@]}" register-vm --vm-id demo-vm --host-id demo-host --threshold 70 --policy host/policies/micro-vm.toml

step "a webhook receiver on 127.0.0.1 (it checks each alert's signature with the verifier's ca.pem alone); the admin adds it"
hook_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$bin/vmseal-verifier" webhook-receiver --listen "127.0.0.1:$hook_port" --verifier-ca "$work/verifier/ca.pem" \
    --name ops --count 2 >"$work/webhook.log" &
receiver_pid=$!
demo_pids+=("$receiver_pid")
"${admin[@]}" webhooks add --name ops --url "http://127.0.0.1:$hook_port/vmseal"

step "capture the KVM micro-VM (real guest code on /dev/kvm) and submit it: no baseline yet"
"$bin/vmseal-host" vm run --state "$work/host" --vm-id demo-vm --captures 1 --out-dir "$work/ev0" "${agent[@]}"

step "the admin promotes that snapshot to the golden baseline"
"${admin[@]}" promote-baseline --vm-id demo-vm --seq 0 --baseline "$work/ev0/baseline.cbor"

step "the golden baseline as a signed CoRIM (reference values other tools read), checked offline with the verifier's public key"
"${admin[@]}" baselines export --vm-id demo-vm --corim --out "$work/demo-vm.corim"
"${admin[@]}" baselines signer --out "$work/verifier-corim.pem"
"$bin/vmseal-certs" verify --corim-signer "$work/verifier-corim.pem" "$work/demo-vm.corim"

step "capture again, then inject a rootkit-style code patch into the running guest and capture once more"
"$bin/vmseal-host" vm run --state "$work/host" --vm-id demo-vm --captures 2 --interval-ms 300 \
    --attack code-patch --attack-after 1 --baseline "$work/ev0/baseline.cbor" --out-dir "$work/ev1" "${agent[@]}" \
    | tee "$work/run.log"
grep -q "VERIFIER: trust score 0 (contraindicated)" "$work/run.log"

step "the verifier's record of this VM, newest first"
"${admin[@]}" appraisals --vm-id demo-vm --limit 5

step "the alert: in the verifier, and at the webhook receiver with its signature verified"
"${admin[@]}" alerts list --state-filter open
for _ in $(seq 1 100); do grep -q "verified alert" "$work/webhook.log" && break; sleep 0.1; done
cat "$work/webhook.log"
grep -q "verified alert (signature OK" "$work/webhook.log"

step "a compromised host captures under a doctored policy without the code region: the verifier, which holds the policy, refuses it and raises an alert"
python3 - host/policies/micro-vm.toml "$work/doctored.toml" <<'PY'
import sys
blocks = open(sys.argv[1]).read().split('[[region]]')
open(sys.argv[2], 'w').write('[[region]]'.join(b for b in blocks if 'name = "guest-code"' not in b))
PY
if "$bin/vmseal-host" vm run --state "$work/host" --vm-id demo-vm --captures 1 --policy "$work/doctored.toml" \
    --out-dir "$work/ev2" "${agent[@]}" 2>&1 | tee "$work/refused.log"; then
    echo "UNEXPECTED: evidence under a doctored policy accepted" >&2; exit 1
fi
grep -q "policy_mismatch" "$work/refused.log"
"${admin[@]}" alerts list --state-filter open --vm-id demo-vm | tee "$work/alerts.log"
grep -q "evidence_refused" "$work/alerts.log"
for _ in $(seq 1 100); do grep -q "evidence_refused" "$work/webhook.log" && break; sleep 0.1; done
grep "evidence_refused" "$work/webhook.log"
wait "$receiver_pid"
echo "the refused evidence is kept, with the verifier's reason:"
ls "$work/ev2/refused"
cat "$work/ev2/refused/"*.json; echo

step "recovery: the host captures under the verifier's policy again; it builds on the verifier's chain, so the next snapshot is accepted with no manual step"
"$bin/vmseal-host" vm run --state "$work/host" --vm-id demo-vm --captures 1 --out-dir "$work/ev3" "${agent[@]}" \
    | tee "$work/recovered.log"
grep -q "VERIFIER: trust score 100" "$work/recovered.log"

step "offline: an auditor checks the VM's whole history as one chain (a removed or forked snapshot would be named)"
"$bin/vmseal-certs" verify --chain --roots "$SWTPM_EK_CA" --allow-insecure "$work/ev0" "$work/ev1" "$work/ev2" "$work/ev3"

step "offline: vmseal-certs verifies the attacked snapshot from public material"
"$bin/vmseal-certs" verify --roots "$SWTPM_EK_CA" --allow-insecure "$work/ev1/demo-vm-000002.cose"

step "a tampered copy of the evidence is refused"
cp "$work/ev1/demo-vm-000002.cose" "$work/tampered.cose"
python3 - "$work/tampered.cose" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
i = b.find(b'memory_root')
b[i + 20] ^= 0x01
open(p, 'wb').write(b)
PY
if "$bin/vmseal-certs" verify --roots "$SWTPM_EK_CA" --allow-insecure "$work/tampered.cose"; then
    echo "UNEXPECTED: tampered evidence accepted" >&2; exit 1
fi

step "done: baseline promoted, the clean capture scored 100, the code patch dropped the trust score to 0 and named region guest-code; the signed alert reached the webhook; a capture under a doctored policy was refused and alerted, and the next capture was accepted on the verifier's chain"
