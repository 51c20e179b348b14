#!/usr/bin/env bash
# Fetch the Linux kernel the QEMU tests boot (Debian's linux-image-cloud-amd64, unpacked with
# dpkg-deb -x, not installed) with the modules a guest needs for user-mode networking (virtio-net),
# and build a busybox initramfs whose init prints the kernel symbols and BTF digest the tests need,
# then idles.
# Output: $VMSEAL_TEST_KERNEL_DIR (default ~/.cache/vmseal/kernel):
#   vmlinuz, initrd.gz, modules/*.ko (the same kernel build as vmlinuz)
set -euo pipefail
dir=${VMSEAL_TEST_KERNEL_DIR:-$HOME/.cache/vmseal/kernel}
mkdir -p "$dir"
# The network modules, in load order (virtio and virtio-pci are modules in the cloud kernel).
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"
if [ ! -s "$dir/vmlinuz" ] || [ ! -s "$dir/modules/virtio_net.ko" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    ( cd "$tmp"
      pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
      [ -n "$pkg" ] || { echo "cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
      apt-get download -q "$pkg" 2>/dev/null
      dpkg-deb -x ./*.deb x
      mkdir -p "$dir/modules.tmp"
      for m in $modules; do
          f=$(find x/lib/modules -name "$m.ko*" | head -1)
          [ -n "$f" ] || { echo "module $m not in $pkg" >&2; exit 1; }
          cp "$f" "$dir/modules.tmp/$m.ko"
      done
      rm -rf "$dir/modules" && mv "$dir/modules.tmp" "$dir/modules"
      cp x/boot/vmlinuz-* "$dir/vmlinuz.tmp" && mv "$dir/vmlinuz.tmp" "$dir/vmlinuz" )
fi
# The init: loads one module, starts one process as an unprivileged user (uid 1000), prints the
# kernel symbols the tests use (and the one after sys_call_table, where the table ends), the
# SHA-256 of the kernel's own BTF and of its sorted /proc/kallsyms (module symbols left out), its processes (pid, euid and comm, as /proc shows them) and
# modules (name, size, address), then runs each line that comes on its control line
# (/dev/ttyS1, when the test gives it one). The initramfs is built again whenever this text
# changes.
init='#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
echo 0 > /proc/sys/kernel/kptr_restrict
$B insmod /lib/virtio_ring.ko
$B su user -c "exec /bin/busybox sleep 1000000" </dev/null >/dev/null 2>&1 &
echo "vmseal-user $!"
echo "vmseal-symbols-begin"
$B grep -E " (_text|_stext|_etext|_sinittext|_einittext|__start_rodata|__end_rodata|sys_call_table|_sdata|_edata|init_task|modules|idt_table|init_pid_ns|module_kset)$" /proc/kallsyms
$B sort /proc/kallsyms | $B grep -A1 " sys_call_table$" | $B tail -1
echo "vmseal-symbols-end"
echo "vmseal-btf $($B sha256sum /sys/kernel/btf/vmlinux)"
echo "vmseal-kallsyms $($B grep -v "\[" /proc/kallsyms | $B sort | $B sha256sum | $B cut -d" " -f1) $($B grep -vc "\[" /proc/kallsyms)"
for p in /proc/[0-9]*; do echo "vmseal-proc ${p#/proc/} $($B awk "/^Uid:/ {print \$3}" $p/status) $($B cat $p/comm)"; done
$B awk "{print \"vmseal-module \" \$1 \" \" \$2 \" \" \$6}" /proc/modules
echo "vmseal-ready"
if ( : < /dev/ttyS1 ) 2>/dev/null; then
  exec 3</dev/ttyS1
  while true; do IFS= read -r line <&3 || { $B sleep 1; continue; }; $B sh -c "$line"; echo "vmseal-done $?"; done
fi
while true; do $B sleep 1; done'
if [ ! -s "$dir/initrd.gz" ] || [ "$(cat "$dir/init.sh" 2>/dev/null)" != "$init" ]; then
    root=$(mktemp -d)
    chmod 755 "$root" # the guest's / (its user process must reach /bin)
    mkdir -p "$root"/{bin,proc,sys,dev,lib,etc}
    cp /bin/busybox "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    printf 'root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000:user:/:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\nuser:x:1000:\n' > "$root/etc/group"
    cp "$dir/modules/virtio_ring.ko" "$root/lib/"
    printf '%s\n' "$init" > "$root/init"
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$dir/initrd.gz.tmp") && mv "$dir/initrd.gz.tmp" "$dir/initrd.gz"
    printf '%s' "$init" > "$dir/init.sh"
    rm -rf "$root"
fi
echo "$dir"
