#!/usr/bin/env bash
# Build the rvsock kernel modules out of tree against a kernel flavour; the .ko files land in
# build/FLAVOUR/modules/. The sources are copied to a per-flavour folder first so the release
# and sanitizer builds never share objects.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
FLAVOUR=${1:-release}
KDIR=$(kernel_dir "$FLAVOUR")
[ -f "$KDIR/.rvsock-built" ] || die "kernel $FLAVOUR not built (scripts/build-kernel.sh $FLAVOUR)"
kernel_env "$FLAVOUR"
# MODSRC_TAG gives a private build folder (parallel builds by several people).
W=$TOP/build/$FLAVOUR/modsrc$BUILD_TAG
OUTD=$TOP/build/$FLAVOUR/modules$BUILD_TAG
mkdir -p "$W" "$OUTD"
rsync -a --delete --exclude target --exclude '*.o' --exclude '*.ko' --exclude '*.cmd' --exclude '*.mod*' \
    --exclude '*_generated.rs' --exclude '.*' --exclude Cargo.lock \
    --include 'Kbuild' --include 'include/***' --include 'af_vsock/***' --include 'vsock_loopback/***' \
    --include 'virtio_transport/***' --include 'vhost_vsock/***' --include 'virtio_transport_common/***' \
    --exclude '*' "$TOP/" "$W/"
# RVSOCK_MODULE_DIRS="af_vsock vsock_loopback" builds a subset of the modules.
DIRS=${RVSOCK_MODULE_DIRS:-af_vsock vsock_loopback virtio_transport vhost_vsock}
make -s -C "$KDIR" M="$W" $(kernel_make_flags "$FLAVOUR") RUSTC="$RUSTC" RUSTDOC="$RUSTDOC" -j"$(nproc)" \
    rvsock-dirs="$DIRS" modules
rm -f "$OUTD/"*.ko
for d in $DIRS; do
    [ -d "$W/$d" ] && find "$W/$d" -maxdepth 1 -name '*.ko' -exec cp {} "$OUTD/" \;
done
log "modules built: $(cd "$OUTD" && echo *.ko)"
