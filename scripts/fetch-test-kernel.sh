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
# The init: loads one module, prints the kernel symbols, the SHA-256 of the kernel's own BTF, its
# processes (pid and comm, as /proc shows them) and modules (name, size, address), then idles. The
# initramfs is built again whenever this text changes.
init='#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
echo 0 > /proc/sys/kernel/kptr_restrict
/bin/busybox insmod /lib/virtio_ring.ko
echo "vmseal-symbols-begin"
/bin/busybox grep -E " (_text|_stext|_etext|__start_rodata|__end_rodata|sys_call_table|_sdata|_edata|init_task|modules|idt_table|init_pid_ns|module_kset)$" /proc/kallsyms
echo "vmseal-symbols-end"
echo "vmseal-btf $(/bin/busybox sha256sum /sys/kernel/btf/vmlinux)"
for p in /proc/[0-9]*; do echo "vmseal-proc ${p#/proc/} $(/bin/busybox cat $p/comm)"; done
/bin/busybox awk "{print \"vmseal-module \" \$1 \" \" \$2 \" \" \$6}" /proc/modules
echo "vmseal-ready"
while true; do /bin/busybox sleep 1; done'
if [ ! -s "$dir/initrd.gz" ] || [ "$(cat "$dir/init.sh" 2>/dev/null)" != "$init" ]; then
    root=$(mktemp -d)
    mkdir -p "$root"/{bin,proc,sys,dev,lib}
    cp /bin/busybox "$root/bin/busybox"
    cp "$dir/modules/virtio_ring.ko" "$root/lib/"
    printf '%s\n' "$init" > "$root/init"
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$dir/initrd.gz.tmp") && mv "$dir/initrd.gz.tmp" "$dir/initrd.gz"
    printf '%s' "$init" > "$dir/init.sh"
    rm -rf "$root"
fi
echo "$dir"
