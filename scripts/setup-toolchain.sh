#!/usr/bin/env bash
# Install everything rvsock needs on a Debian 12 machine (as root). Idempotent: a second run
# only checks and returns in seconds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PKGS=(rustc-web rust-web-src libclang-dev clang lld llvm bc flex bison libelf-dev libssl-dev
      cpio busybox-static qemu-system-x86 xz-utils make gcc git python3 rsync kmod file liburing-dev iproute2 tcpdump socat dkms procps
      debian-archive-keyring)
# 6.12: the kernel source is a package of the system's own suite. 7.3 (KERNEL=7.3): its source
# comes from trixie-backports through a private apt configuration (below), and it needs
# libclang >= 17 for bindgen and clang >= 17 for its sanitizer build: bookworm's clang 19.
if [ "$KERNEL" = 6.12 ]; then PKGS+=("$KERNEL_SRC_PKG"); else PKGS+=(clang-19 libclang-19-dev lld-19 llvm-19); fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for a concurrent apt (check.sh's background build of the other kernel line runs
    # this script too) instead of failing on its lock.
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$KERNEL" != 6.12 ]; then "$TOP/scripts/fetch-newest-kernel-src.sh" >/dev/null; fi
log "kernel source: $KERNEL_SRC_PKG $(kernel_pkg_version)"

mkdir -p "$TOOLS/bin"
if [ ! -x "$TOOLS/bin/bindgen" ]; then
    log "cargo: installing bindgen-cli $BINDGEN_VERSION"
    cargo install --locked --root "$TOOLS" --version "$BINDGEN_VERSION" bindgen-cli
fi
if [ ! -x "$TOOLS/bin/vhost-device-vsock" ]; then
    log "cargo: installing vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION"
    cargo install --locked --root "$TOOLS" --version "$VHOST_DEVICE_VSOCK_VERSION" vhost-device-vsock
fi
log "toolchain ready ($TOOLS)"
