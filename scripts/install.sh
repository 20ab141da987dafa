#!/usr/bin/env bash
# make install / make uninstall: put rvsock's modules into the module tree of a kernel
# (/lib/modules/KVER/updates/rvsock/), the modprobe.d file that makes them the AF_VSOCK stack
# (/etc/modprobe.d/rvsock.conf), and run depmod; or take all of that away again, which brings
# the in-tree stack back from the next module load (or boot) on.
#   scripts/install.sh install|uninstall   with, from the environment or make:
#   KDIR=/path/to/kernel/build  the kernel to install for (default: this tree's release kernel
#                               of KERNEL=6.12|7.3); KVER is its include/config/kernel.release
#   KVER=...                    uninstall only: the kernel release, without a KDIR
#   DESTDIR=/staging/root       install into a staging root instead of / (packaging, tests)
#   MODULES=/path/to/kos        the built .ko files (default: the ones `make modules` built)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ACTION=${1:-}
case "$ACTION" in install|uninstall) ;; *) die "usage: scripts/install.sh install|uninstall" ;; esac
DESTDIR=${DESTDIR:-}
if [ -z "${KVER:-}" ]; then
    if [ -n "${KDIR:-}" ]; then KD=$KDIR; else KD=$(kernel_dir release); fi
    [ -f "$KD/include/config/kernel.release" ] || die "$KD is not a built kernel tree (no include/config/kernel.release); pass KDIR=/path/to/kernel/build or KVER=..."
    KVER=$(cat "$KD/include/config/kernel.release")
fi
MODDIR=$DESTDIR/lib/modules/$KVER/updates/rvsock
CONF=$DESTDIR/etc/modprobe.d/rvsock.conf
depmod_run() {
    command -v depmod > /dev/null || { log "depmod not found: run 'depmod $KVER' yourself"; return 0; }
    if [ -n "$DESTDIR" ]; then depmod -b "$DESTDIR" "$KVER"; else depmod "$KVER"; fi
}
if [ "$ACTION" = install ]; then
    if [ -z "${MODULES:-}" ]; then
        if [ -n "${KDIR:-}" ]; then MODULES=$TOP/build/kdir-$(echo "$(cd "$KDIR" && pwd)" | sha256sum | cut -c1-8)/modules
        else MODULES=$TOP/build/release/modules$BUILD_TAG; fi
    fi
    ls "$MODULES"/rvsock*.ko > /dev/null 2>&1 || die "no rvsock modules in $MODULES: run 'make modules${KDIR:+ KDIR=$KDIR}' first"
    [ -d "$DESTDIR/lib/modules/$KVER" ] || [ -n "$DESTDIR" ] || die "/lib/modules/$KVER does not exist: is kernel $KVER installed here?"
    mkdir -p "$MODDIR" "$(dirname "$CONF")"
    for m in "$MODULES"/rvsock*.ko; do
        if command -v modinfo > /dev/null; then
            vermagic=$(modinfo -F vermagic "$m" 2>/dev/null) || die "$m is not a kernel module (modinfo cannot read it)"
            mod_kver=${vermagic%% *}
            [ -z "$mod_kver" ] || [ "$mod_kver" = "$KVER" ] || die "$m was built for $mod_kver, not $KVER"
        fi
        install -m 644 "$m" "$MODDIR/"
    done
    install -m 644 "$TOP/packaging/rvsock.conf" "$CONF"
    depmod_run
    log "installed for $KVER: $(cd "$MODDIR" && echo *.ko) in $MODDIR, $CONF; depmod done"
    log "the in-tree vsock modules stay on disk; rvsock loads in their place from now on (modules already loaded stay until unloaded or reboot)"
else
    rm -rf "$MODDIR"
    rm -f "$CONF"
    depmod_run
    log "removed rvsock for $KVER ($MODDIR, $CONF); depmod done: the in-tree stack loads again"
fi
