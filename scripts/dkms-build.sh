#!/usr/bin/env bash
# DKMS's build step (dkms.conf MAKE[0]): scripts/dkms-build.sh KERNEL_BUILD_DIR. Builds the
# four modules against that tree (scripts/build-modules.sh, which names what is missing when
# the kernel or the toolchain cannot build Rust modules) and leaves them in build/dkms/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -n "${1:-}" ] || die "usage: scripts/dkms-build.sh /path/to/kernel/build"
KDIR=$1 "$TOP/scripts/build-modules.sh"
key=$(echo "$(cd "$1" && pwd)" | sha256sum | cut -c1-8)
mkdir -p "$TOP/build/dkms"
cp "$TOP/build/kdir-$key/modules/"*.ko "$TOP/build/dkms/"
