#!/usr/bin/env bash
# `make demo`: install what is needed, build the kernel and rvsock, boot a VM whose AF_VSOCK
# stack is rvsock and show traffic through it (output streams to this terminal).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$TOP/scripts/setup-toolchain.sh"
"$TOP/scripts/build-kernel.sh" release
"$TOP/scripts/build-vsock-tests.sh" release
"$TOP/scripts/build-tools.sh"
"$TOP/scripts/build-modules.sh" release
img=$("$TOP/scripts/mkinitramfs.sh" release rvsock)
kdir=$(kernel_dir release)
log "booting the demo VM (QEMU, TCG)"
timeout -s KILL 600 qemu-system-x86_64 -accel tcg -cpu max -m 1G -smp 2,sockets=2 -nodefaults -no-user-config \
    -display none -nic none -no-reboot -chardev stdio,id=s0,signal=off -serial chardev:s0 \
    -kernel "$kdir/arch/x86/boot/bzImage" -initrd "$img" \
    -append "console=ttyS0 quiet panic=-1 rvsock_scenario=demo rvsock_role=l1 rvsock_mods=rvsock rvsock_script=demo" \
    < /dev/null | sed -n '/RVSOCK-DMESG-BEGIN/q;p'
