#!/usr/bin/env bash
# Assemble test VM initramfs images from cached parts (concatenated cpio.gz archives).
# Usage: scripts/mkinitramfs.sh FLAVOUR MODS [L2MODS]
#   MODS   = c | rvsock | both: which vsock modules the VM gets ("both": for scenarios that
#            compare the stacks by unloading one and loading the other; never loaded together)
#            install | uninstalled: the in-tree modules, and rvsock as `make install` puts it
#            beside them; or that root after `make uninstall` (rvsock-install's two boots)
#   L2MODS = c | rvsock: make an L1 host image that also carries QEMU and an L2 guest image
# Prints the path of the image.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
FLAVOUR=$1 MODS=$2 L2MODS=${3:-}
KOUT=$(kernel_dir "$FLAVOUR")
KVER=$(cat "$KOUT/include/config/kernel.release")
B=$TOP/build/$FLAVOUR/initramfs$BUILD_TAG
mkdir -p "$B"

# host_prog ROOT PROGRAM: a program of this machine with its shared libraries, at the same paths.
host_prog() {
    local p lib
    p=$(command -v "$2") || { echo "mkinitramfs: $2 not found on this machine" >&2; return 1; }
    mkdir -p "$1$(dirname "$p")"; rm -f "$1$p"; cp -L "$p" "$1$p"
    for lib in $(ldd "$p" | grep -o '/[^ ]*'); do
        mkdir -p "$1$(dirname "$lib")"; cp -L "$lib" "$1$lib"
    done
}

pack() { # DIR OUT.cpio.gz
    (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -1 > "$2"
}

base() {
    local r=$B/base.root; rm -rf "$r"; mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,etc,rvsock}
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list-full); do [ -e "$r/$a" ] || ln -s /bin/busybox "$r/$a"; done
    cp "$TOP/tools/testing/vsock/vm/init" "$r/init"; chmod +x "$r/init"
    cp -r "$TOP/tools/testing/vsock/vm/lib.sh" "$TOP/tools/testing/vsock/vm/scenarios" "$r/rvsock/"
    cp "$KOUT"/vsock-tests/* "$r/usr/bin/"
    # The newest upstream test programs (scripts/build-newest-vsock-tests.sh), beside the 6.12 ones.
    if [ -d "$TOP/build/vsock-tests-newest$BUILD_TAG" ]; then
        mkdir -p "$r/opt/vsock-7.3" && cp "$TOP/build/vsock-tests-newest$BUILD_TAG"/* "$r/opt/vsock-7.3/"
    fi
    if [ -d "$TOP/build/tools$BUILD_TAG" ]; then cp "$TOP/build/tools$BUILD_TAG"/* "$r/usr/bin/" 2>/dev/null || true; fi
    echo "root:x:0:0:root:/root:/bin/sh" > "$r/etc/passwd"
    # iproute2's ss and ip, tcpdump (rvsock-observe: `ss --vsock`, `ip link add type vsockmon`,
    # `tcpdump -i vsockmon0`); busybox keeps its own ip at /sbin/ip, iproute2's is /usr/sbin/ip.
    host_prog "$r" ss
    host_prog "$r" tcpdump
    # socat with AF_VSOCK (rvsock-netns: vmtest.sh's listeners and clients, the guest's shell).
    host_prog "$r" socat
    mkdir -p "$r/usr/sbin"; host_prog "$r" /usr/sbin/ip
    pack "$r" "$B/base.cpio.gz"; rm -rf "$r"
}

mods() { # c|rvsock|both|install|uninstalled
    local r=$B/mods-$1.root; rm -rf "$r"; mkdir -p "$r/lib/modules"
    cp -a "$KOUT/modinst/lib/modules/$KVER" "$r/lib/modules/"
    rm -f "$r/lib/modules/$KVER"/{build,source}
    if [ "$1" = rvsock ]; then
        # No in-tree vsock module may be present next to ours.
        rm -rf "$r/lib/modules/$KVER/kernel/net/vmw_vsock" "$r/lib/modules/$KVER/kernel/drivers/vhost/vsock.ko"
    fi
    if [ "$1" = rvsock ] || [ "$1" = both ]; then   # both: comparison runs swap stacks in one VM
        mkdir -p "$r/lib/modules/$KVER/extra"
        cp "$TOP/build/$FLAVOUR/modules$BUILD_TAG/"*.ko "$r/lib/modules/$KVER/extra/" 2>/dev/null || true
    fi
    depmod -b "$r" "$KVER"
    if [ "$1" = install ] || [ "$1" = uninstalled ]; then
        # rvsock-install: the in-tree modules stay; `make install` puts ours beside them, as on a
        # user's system. kmod's tools replace busybox's (whose modprobe knows no blacklist or
        # install commands).
        # (RVSOCK_INSTALL_MODULES: the modules DKMS built, scripts/dkms-stage.sh.)
        DESTDIR=$r KVER=$KVER MODULES=${RVSOCK_INSTALL_MODULES:-$TOP/build/$FLAVOUR/modules$BUILD_TAG} \
            "$TOP/scripts/install.sh" install
        # ... and its next boot: the same root after `make uninstall` (the same command a user
        # runs, on this root instead of /).
        [ "$1" = install ] || DESTDIR=$r KVER=$KVER "$TOP/scripts/install.sh" uninstall
        for t in modprobe depmod rmmod insmod lsmod modinfo; do host_prog "$r" "/sbin/$t"; done
    fi
    pack "$r" "$B/mods-$1.cpio.gz"; rm -rf "$r"
}

qemu() {
    local r=$B/qemu.root; rm -rf "$r"; mkdir -p "$r/usr/bin" "$r/usr/share" "$r/usr/lib/x86_64-linux-gnu"
    host_prog "$r" qemu-system-x86_64
    cp -rL /usr/share/qemu /usr/share/seabios "$r/usr/share/"
    cp -r /usr/lib/x86_64-linux-gnu/qemu "$r/usr/lib/x86_64-linux-gnu/"
    pack "$r" "$B/qemu.cpio.gz"; rm -rf "$r"
}

[ -f "$B/qemu.cpio.gz" ] || qemu
base
mods "$MODS"
if [ -z "$L2MODS" ]; then
    cat "$B/base.cpio.gz" "$B/mods-$MODS.cpio.gz" > "$B/vm-$MODS.cpio.gz"
    echo "$B/vm-$MODS.cpio.gz"
else
    [ "$L2MODS" = "$MODS" ] || mods "$L2MODS"
    r=$B/l2.root; rm -rf "$r"; mkdir -p "$r/l2"
    cp "$KOUT/arch/x86/boot/bzImage" "$r/l2/"
    cat "$B/base.cpio.gz" "$B/mods-$L2MODS.cpio.gz" > "$r/l2/initramfs.cpio.gz"
    pack "$r" "$B/l2-$L2MODS.cpio.gz"
    cat "$B/base.cpio.gz" "$B/mods-$MODS.cpio.gz" "$B/qemu.cpio.gz" "$B/l2-$L2MODS.cpio.gz" > "$B/l1-$MODS-$L2MODS.cpio.gz"
    rm -rf "$r" "$B/l2-$L2MODS.cpio.gz"
    echo "$B/l1-$MODS-$L2MODS.cpio.gz"
fi
