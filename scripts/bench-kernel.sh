#!/usr/bin/env bash
# What walking a Linux guest's kernel objects adds to a capture's pause: boots the test guest
# (Debian's cloud kernel under QEMU TCG, KASLR on) and runs `vmseal-host bench --source qemu:…`,
# which interleaves stop-and-copy captures of its kernel text with and without the walk and
# prints the medians, the walk as a ratio to the page-hash pause (docs/benchmarks.md).
#   scripts/bench-kernel.sh [--rounds N] [--json]
set -euo pipefail
. "$(dirname "$0")/demo-lib.sh"
demo_build
demo_guest
demo_kernel_policy > "$work/linux.toml"
"$bin/vmseal-host" bench --source "qemu:$qmp,$mem" --policy "$work/linux.toml" "$@"
