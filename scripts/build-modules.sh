#!/usr/bin/env bash
# Build the rvsock kernel modules out of tree against a kernel flavour; the .ko files land in
# build/FLAVOUR/modules/. The sources are copied to a per-flavour folder first so the release
# and sanitizer builds never share objects.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
FLAVOUR=${1:-release}
if [ -n "${KDIR:-}" ]; then
    # A kernel build tree of the user's (`make modules KDIR=...`): any Rust-enabled 6.12+ or
    # 7.x build (README "Building against your own kernel").
    KDIR=$(cd "$KDIR" && pwd) || die "KDIR: no such folder"
    [ -f "$KDIR/.config" ] && [ -f "$KDIR/Module.symvers" ] || die "$KDIR is not a built kernel tree (needs .config and Module.symvers: run its 'make' first)"
    grep -q '^CONFIG_RUST=y' "$KDIR/.config" || die "$KDIR: the kernel has no Rust support (CONFIG_RUST=y); rvsock is Rust"
    for o in CONFIG_NET CONFIG_MODULES; do grep -q "^$o=y" "$KDIR/.config" || die "$KDIR: $o is off"; done
    [ -f "$KDIR/rust/libkernel.rmeta" ] || [ -n "$(ls "$KDIR"/rust/libkernel*.rmeta 2>/dev/null)" ] || die "$KDIR: rust/libkernel.rmeta missing (build the kernel with CONFIG_RUST=y first)"
    # The kernel's Rust crates are only usable by the rustc that compiled them, and bindgen
    # must be there: say so before the compiler does.
    want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p' "$KDIR/.config")
    have=$("$RUSTC" --version 2>/dev/null) || die "rustc not found ($RUSTC): install the rustc the kernel was built with (${want:-see its .config}), or set RUSTC=/path/to/rustc"
    [ -z "$want" ] || [ "$have" = "$want" ] || die "$KDIR was built with '$want' but $RUSTC is '$have': Rust modules must be built by the kernel's own rustc (set RUSTC=/path/to/that rustc)"
    command -v bindgen > /dev/null || die "bindgen not found: 'cargo install --locked bindgen-cli' ($(sed -n 's/^CONFIG_BINDGEN_VERSION_TEXT="\(.*\)"$/\1/p' "$KDIR/.config") built this kernel), or 'make setup'"
    MAKE_FLAGS=""
    # A clang-built kernel: build with the same clang (its major version from the config).
    if grep -q '^CONFIG_CC_IS_CLANG=y' "$KDIR/.config"; then
        maj=$(sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)[0-9]\{4\}$/\1/p' "$KDIR/.config")
        if command -v "clang-$maj" > /dev/null; then MAKE_FLAGS="LLVM=-$maj"; else MAKE_FLAGS="LLVM=1"; fi
        [ -n "${LIBCLANG_PATH:-}" ] || [ ! -d "/usr/lib/llvm-$maj/lib" ] || export LIBCLANG_PATH=/usr/lib/llvm-$maj/lib
    fi
    key=$(echo "$KDIR" | sha256sum | cut -c1-8)
    W=$TOP/build/kdir-$key/modsrc
    OUTD=$TOP/build/kdir-$key/modules
    log "building against $KDIR (kernel $(cat "$KDIR/include/config/kernel.release" 2>/dev/null)${MAKE_FLAGS:+, $MAKE_FLAGS}${LIBCLANG_PATH:+, LIBCLANG_PATH=$LIBCLANG_PATH})"
else
    KDIR=$(kernel_dir "$FLAVOUR")
    [ -f "$KDIR/.rvsock-built" ] || die "kernel $FLAVOUR not built (scripts/build-kernel.sh $FLAVOUR)"
    kernel_env "$FLAVOUR"
    MAKE_FLAGS=$(kernel_make_flags "$FLAVOUR")
    # MODSRC_TAG gives a private build folder (parallel builds by several people).
    W=$TOP/build/$FLAVOUR/modsrc$BUILD_TAG
    OUTD=$TOP/build/$FLAVOUR/modules$BUILD_TAG
fi
mkdir -p "$W" "$OUTD"
rsync -a --delete --exclude target --exclude '*.o' --exclude '*.ko' --exclude '*.cmd' --exclude '*.mod*' \
    --exclude '*_generated.rs' --exclude '.*' --exclude Cargo.lock \
    --include 'Kbuild' --include 'include/***' --include 'af_vsock/***' --include 'vsock_loopback/***' \
    --include 'virtio_transport/***' --include 'vhost_vsock/***' --include 'virtio_transport_common/***' \
    --include 'tools/' --include 'tools/testing/' --include 'tools/testing/vsock/' --include 'tools/testing/vsock/ktest/***' \
    --exclude '*' "$TOP/" "$W/"
# RVSOCK_MODULE_DIRS="af_vsock vsock_loopback" builds a subset of the modules.
# tools/testing/vsock/ktest is the test-only in-kernel consumer (vsock_ktest.ko, never installed).
DIRS=${RVSOCK_MODULE_DIRS:-af_vsock vsock_loopback virtio_transport vhost_vsock tools/testing/vsock/ktest}
make -s -C "$KDIR" M="$W" $MAKE_FLAGS RUSTC="$RUSTC" RUSTDOC="$RUSTDOC" -j"$(nproc)" \
    rvsock-dirs="$DIRS" modules
rm -f "$OUTD/"*.ko
for d in $DIRS; do
    [ -d "$W/$d" ] && find "$W/$d" -maxdepth 1 -name '*.ko' -exec cp {} "$OUTD/" \;
done
log "modules built: $(cd "$OUTD" && echo *.ko)"
# Every symbol must fit in one /proc/kallsyms line of 512 bytes ("ADDR t NAME\t[MODULE]\n"), the
# line buffer of upstream vsock_test (tests 29 and 33 abort on a longer line) and of other tools
# that scan kallsyms. Rust generic instantiations can have long names; on the sanitizer kernel
# more of them stay out of line (af_vsock/tap.rs says how the ones found were shortened).
long=""
for ko in "$OUTD"/*.ko; do
    m=$(basename "$ko" .ko)
    long+=$(nm "$ko" 2>/dev/null | awk -v m="$m" '{ n = length($NF); if (16 + 3 + n + 1 + length(m) + 2 + 1 > 511) printf "  %s: %d bytes: %.120s...\n", m, n, $NF }')
done
[ -z "$long" ] || die "symbol names too long for one /proc/kallsyms line of 512 bytes:"$'\n'"$long"
