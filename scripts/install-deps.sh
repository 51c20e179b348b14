#!/usr/bin/env bash
# Install what vmseal needs on Debian 12 (idempotent): the TPM stack and swtpm for the root of
# trust, a C toolchain for aws-lc-sys and tss-esapi-sys, QEMU, busybox and cpio for the Linux guest
# tests, PostgreSQL (the tests start their own clusters; the packaged one is not used), Chromium and
# Node.js with playwright-core for the web page's browser test, and the test kernel itself
# (scripts/fetch-test-kernel.sh). Needs root (or sudo).
set -euo pipefail

packages=(build-essential pkg-config cmake libtss2-dev swtpm swtpm-tools tpm2-tools libssl-dev
          qemu-system-x86 busybox-static cpio postgresql chromium python3 python3-venv)
# Node.js: Debian's, unless one is installed already.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    echo "installing: ${missing[*]}" >&2
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
# playwright-core drives Debian's Chromium in the web page test (no browser download).
ui="$(dirname "$0")/../verifier/tests/ui"
if [ ! -d "$ui/node_modules/playwright-core" ]; then
    npm ci --prefix "$ui" --no-audit --no-fund --loglevel=error >/dev/null
fi
"$(dirname "$0")/fetch-test-kernel.sh" >/dev/null
