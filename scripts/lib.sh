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
# The kernel source is Debian's linux-source-6.12, whichever patch release the archive has
# newest (setup-toolchain.sh installs the candidate; patch releases replace each other in the
# archive, so no version is pinned). The exact version keys the caches and is printed.
KERNEL_SRC_PKG=linux-source-6.12
kernel_pkg_version() { dpkg-query -W -f='${Version}' "$KERNEL_SRC_PKG" 2>/dev/null || true; }
KERNEL_PKG_VERSION=$(kernel_pkg_version)
SRC=$CACHE/src/linux-${KERNEL_PKG_VERSION:-none}
# Bump when the kernel build recipe (scripts/build-kernel.sh) changes what it produces.
KERNEL_RECIPE=2

# kernel_dir FLAVOUR -> the O= build folder of that kernel flavour (kernel/FLAVOUR.config),
# keyed by the hash of its fragment, the source version, the toolchain pins and the recipe.
kernel_key() {
    { cat "$TOP/kernel/$1.config"; echo "$(kernel_pkg_version) $KERNEL_RECIPE $(kernel_make_flags "$1") $(kernel_libclang "$1")"; } \
        | sha256sum | cut -c1-12
}
kernel_dir() { echo "$CACHE/kernel/$1-$(kernel_key "$1")"; }
# Extra make flags of a flavour (the sanitizer kernel is clang-built). The clang version is
# pinned (LLVM=-14) and equals bindgen's libclang (kernel_libclang), so installing another
# clang (clang-19 for newer kernels) never changes an existing build.
kernel_make_flags() {
    case "$1" in
        kasan) echo "LLVM=-14" ;;
        *) echo "" ;;
    esac
}
# The libclang bindgen uses for a flavour: the same LLVM as the clang that builds it.
kernel_libclang() { echo /usr/lib/llvm-14/lib; }
# Every kernel or module build of FLAVOUR runs with this environment.
kernel_env() { export LIBCLANG_PATH; LIBCLANG_PATH=$(kernel_libclang "$1"); }
# MODSRC_TAG: a private set of build outputs (modules, initramfs, logs) so several people can
# build and boot in one checkout at the same time.
BUILD_TAG=${MODSRC_TAG:+-$MODSRC_TAG}
