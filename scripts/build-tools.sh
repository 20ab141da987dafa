#!/usr/bin/env bash
# Build rvsock's own test programs (Rust, statically linked) into build/tools/ (build/tools-TAG/
# with MODSRC_TAG: a private run's initramfs gets the binary it built).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
T=$TOP/tools/testing/vsock/rvsock-tests
OUT=$TOP/build/tools$BUILD_TAG
mkdir -p "$OUT"
[ -f "$T/Cargo.toml" ] && [ -z "${RVSOCK_SKIP_TOOLS:-}" ] || exit 0
# Statically linked against glibc so the binaries run in the busybox initramfs.
(cd "$T" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
    --target x86_64-unknown-linux-gnu --target-dir "$TOP/build/cargo-tools")
# Copy then rename: a running copy of the old binary (a VM host side) must not block us.
for f in $(find "$TOP/build/cargo-tools/x86_64-unknown-linux-gnu/release" -maxdepth 1 -type f -executable); do
    cp "$f" "$OUT/.$(basename "$f").new" && mv -f "$OUT/.$(basename "$f").new" "$OUT/$(basename "$f")"
done
