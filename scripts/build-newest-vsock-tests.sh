#!/usr/bin/env bash
# Build the newest upstream test programs (tools/testing/vsock of linux-source-7.3: vsock_test,
# vsock_diag_test, vsock_perf and, when liburing's static library links, vsock_uring_test)
# statically against that tree's own uapi headers (`make headers_install` of the unconfigured
# source, ARCH=x86_64: no kernel build needed). Results are cached by source version, recipe
# and compiler; the programs of the current version are copied to build/vsock-tests-newest[-TAG]/,
# which scripts/mkinitramfs.sh installs as /opt/vsock-7.3/ in every VM image (next to the
# 6.12 programs in /usr/bin). Idempotent. Prints the directory.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ver=$("$TOP/scripts/fetch-newest-kernel-src.sh")
src=$(newest_src_dir "$ver")
hdr=$(newest_hdr_dir "$ver")
dst=$(newest_tests_dir "$ver")
mkdir -p "$CACHE/hdr" "$(dirname "$dst")"
exec 9> "$(dirname "$dst")/.lock"
flock 9

if [ ! -f "$hdr/.rvsock-done" ]; then
    log "headers_install of $NEWEST_SRC_PKG $ver into $hdr"
    rm -rf "$hdr" "$hdr.obj"
    # O=: the unpacked source stays pristine (a later O= kernel build of it needs that).
    make -s -C "$src" O="$hdr.obj" ARCH=x86_64 headers_install INSTALL_HDR_PATH="$hdr" >&2
    rm -rf "$hdr.obj"
    touch "$hdr/.rvsock-done"
fi

if [ ! -f "$dst/.rvsock-done" ]; then
    log "building the $NEWEST_SRC_PKG $ver vsock tests into $dst"
    b=$(mktemp -d "$dst.XXXXXX")
    cp -r "$src/tools/testing/vsock/." "$b/"
    # Upstream's flags minus -Werror and -g; include order: the test folder, the tree's
    # tools/include, then its installed uapi headers.
    cflags="-O2 -Wall -I. -I$src/tools/include -I$hdr/include -Wno-pointer-sign -fno-strict-overflow -fno-strict-aliasing -fno-common -U_FORTIFY_SOURCE -D_GNU_SOURCE"
    make -s -C "$b" vsock_test vsock_diag_test vsock_perf CFLAGS="$cflags" LDFLAGS=-static >&2
    progs="vsock_test vsock_diag_test vsock_perf"
    if make -s -C "$b" vsock_uring_test CFLAGS="$cflags" LDFLAGS=-static >&2; then
        progs+=" vsock_uring_test"
    else
        log "vsock_uring_test not built (needs liburing-dev with its static library)"
    fi
    mkdir -p "$b/out"
    for p in $progs; do cp "$b/$p" "$b/out/"; done
    echo "$NEWEST_SRC_PKG $ver" > "$b/out/VERSION"
    touch "$b/out/.rvsock-done"
    rm -rf "$dst" && mv "$b/out" "$dst" && rm -rf "$b"
fi

# This checkout's images take the programs of the current version.
out=$TOP/build/vsock-tests-newest$BUILD_TAG
mkdir -p "$out"
rm -f "$out"/*
cp "$dst"/* "$out/"
log "$NEWEST_SRC_PKG $ver vsock tests: $(cd "$out" && ls | tr '\n' ' ')($dst)"
echo "$out"
