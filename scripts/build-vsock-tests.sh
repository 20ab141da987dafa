#!/usr/bin/env bash
# Build the upstream test programs (vsock_test, vsock_perf, vsock_diag_test) of the same
# linux-source, statically, against a kernel flavour's uapi headers. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
FLAVOUR=${1:-release}
OUT=$(kernel_dir "$FLAVOUR")
[ -f "$OUT/.rvsock-built" ] || die "kernel $FLAVOUR not built"
DST=$OUT/vsock-tests
[ -x "$DST/vsock_test" ] && [ -x "$DST/vsock_perf" ] && [ -x "$DST/vsock_diag_test" ] && exit 0
rm -rf "$DST.tmp" && cp -r "$SRC/tools/testing/vsock" "$DST.tmp"
make -s -C "$DST.tmp" vsock_test vsock_perf vsock_diag_test \
    CFLAGS="-O2 -I. -I$SRC/tools/include -I$OUT/hdr/include -D_GNU_SOURCE -Wno-pointer-sign" LDFLAGS=-static
mkdir -p "$DST"
cp "$DST.tmp"/vsock_test "$DST.tmp"/vsock_perf "$DST.tmp"/vsock_diag_test "$DST/"
rm -rf "$DST.tmp"
log "upstream vsock tests built in $DST"
