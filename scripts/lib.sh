# Shared settings for rvsock scripts. Sourced, not run.
# Everything heavy (kernel builds, cargo-installed tools) lives in a cache outside the checkout so
# a fresh clone reuses it; kernel builds are keyed by the hash of their config fragment.
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${RVSOCK_CACHE:-/var/cache/rvsock}
TOOLS=$CACHE/tools
BINDGEN_VERSION=0.73.2
VHOST_DEVICE_VSOCK_VERSION=0.3.0
export PATH="$TOOLS/bin:$PATH"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
log() { echo "[rvsock $(date +%H:%M:%S)] $*" >&2; }
die() { echo "[rvsock] error: $*" >&2; exit 1; }
KERNEL_PKG_VERSION=6.12.117-1~deb12u1
SRC=$CACHE/src/linux-$KERNEL_PKG_VERSION

# kernel_dir FLAVOUR -> the O= build folder of that kernel flavour (kernel/FLAVOUR.config),
# keyed by the hash of its fragment, the source version and the build recipe.
kernel_key() {
    cat "$TOP/kernel/$1.config" "$TOP/scripts/build-kernel.sh" | { cat; echo "$KERNEL_PKG_VERSION"; } \
        | sha256sum | cut -c1-12
}
kernel_dir() { echo "$CACHE/kernel/$1-$(kernel_key "$1")"; }
# Extra make flags of a flavour (the sanitizer kernel is clang-built).
kernel_make_flags() {
    case "$1" in
        kasan) echo "LLVM=1" ;;
        *) echo "" ;;
    esac
}
# MODSRC_TAG: a private set of build outputs (modules, initramfs, logs) so several people can
# build and boot in one checkout at the same time.
BUILD_TAG=${MODSRC_TAG:+-$MODSRC_TAG}
