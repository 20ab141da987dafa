# Shared settings for rvsock scripts. Sourced, not run.
# Everything heavy (kernel builds, cargo-installed tools) lives in a cache outside the checkout so
# a fresh clone reuses it; kernel builds are keyed by the hash of their config fragment.
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${RVSOCK_CACHE:-/var/cache/rvsock}
TOOLS=$CACHE/tools
BINDGEN_VERSION=0.73.2
VHOST_DEVICE_VSOCK_VERSION=0.3.0
export PATH="$TOOLS/bin:$PATH"
export RUSTC=${RUSTC:-/usr/bin/rustc} RUSTDOC=${RUSTDOC:-/usr/bin/rustdoc}
log() { echo "[rvsock $(date +%H:%M:%S)] $*" >&2; }
die() { echo "[rvsock] error: $*" >&2; exit 1; }
# KERNEL selects the kernel line every script builds for and boots: 6.12 (the LTS line,
# default) or 7.3 (the newest stable line). Both come from Debian's linux-source packages,
# whichever patch release the archive has newest (patch releases replace each other in the
# archive, so no version is pinned); the exact version keys the caches and is printed.
#   6.12: linux-source-6.12 of the system's own suite (bookworm), installed by
#         setup-toolchain.sh; GCC release kernel, clang 14 sanitizer kernel, bindgen on
#         libclang 14.
#   7.3:  linux-source-7.3 of trixie-backports, fetched with a private apt configuration
#         (scripts/fetch-newest-kernel-src.sh, never the system's sources); GCC release
#         kernel, clang 19 sanitizer kernel, bindgen on libclang 19 (7.3 needs >= 17).
KERNEL=${KERNEL:-6.12}
case "$KERNEL" in
    6.12|7.3) ;;
    *) echo "[rvsock] error: KERNEL=$KERNEL: supported kernel lines are 6.12 and 7.3" >&2; exit 2 ;;
esac
export KERNEL
if [ "$KERNEL" = 6.12 ]; then
    KERNEL_SRC_PKG=linux-source-6.12
    kernel_pkg_version() { dpkg-query -W -f='${Version}' "$KERNEL_SRC_PKG" 2>/dev/null || true; }
    KERNEL_LLVM=14
    KERNEL_TAG=""
else
    KERNEL_SRC_PKG=linux-source-$KERNEL
    kernel_pkg_version() { newest_pkg_version; }
    KERNEL_LLVM=19
    KERNEL_TAG=-$KERNEL
fi
# Bump when the kernel build recipe (scripts/build-kernel.sh) changes what it produces.
KERNEL_RECIPE=2

# kernel_dir FLAVOUR -> the O= build folder of that kernel flavour (kernel/FLAVOUR.config, plus
# kernel/KERNEL.config on lines other than 6.12), keyed by the hash of its fragments' settings
# (their comments left out, so rewording one rebuilds nothing), the source version, the toolchain
# pins and the recipe.
kernel_fragments() {
    echo "$TOP/kernel/$1.config"
    if [ -f "$TOP/kernel/line-$KERNEL.config" ]; then echo "$TOP/kernel/line-$KERNEL.config"; fi
}
kernel_key() {
    { grep -hE '^(CONFIG_|# CONFIG_[A-Za-z0-9_]+ is not set|# absent )' $(kernel_fragments "$1"); echo "$(kernel_pkg_version) $KERNEL_RECIPE $(kernel_make_flags "$1") $(kernel_libclang "$1")"; } \
        | sha256sum | cut -c1-12
}
kernel_dir() { echo "$CACHE/kernel/$1$KERNEL_TAG-$(kernel_key "$1")"; }
# Extra make flags of a flavour (the sanitizer kernel is clang-built). The clang version is
# pinned (LLVM=-14 on 6.12, -19 on 7.3) and equals bindgen's libclang (kernel_libclang), so
# installing another clang never changes an existing build.
kernel_make_flags() {
    case "$1" in
        kasan) echo "LLVM=-$KERNEL_LLVM" ;;
        *) echo "" ;;
    esac
}
# The libclang bindgen uses for a flavour: the same LLVM as the clang that builds it.
kernel_libclang() { echo "/usr/lib/llvm-$KERNEL_LLVM/lib"; }
# Every kernel or module build of FLAVOUR runs with this environment.
kernel_env() { export LIBCLANG_PATH; LIBCLANG_PATH=$(kernel_libclang "$1"); }
# l1_tsc_karg: "tsc_early_khz=N" with this machine's TSC frequency, for every L1 VM. A TCG
# guest's TSC runs at the host's rate, but the L1 kernel measures it against the emulated PIT,
# which fails when the machine is busy ("tsc: Marking TSC unstable due to could not calculate
# TSC khz", about 1 L1 boot in 6 here); with tsc_khz 0 its KVM spins in kvm_guest_time_update()
# and the KVM L2 never runs (issue 19). Only when the frequency is known: a constant TSC and no
# cpufreq driver (then "cpu MHz" is the TSC rate), or the kernel's own calibration in dmesg.
l1_tsc_karg() {
    local mhz=""
    if grep -qw constant_tsc /proc/cpuinfo && ! [ -d /sys/devices/system/cpu/cpu0/cpufreq ]; then
        mhz=$(awk -F': *' '/^cpu MHz/ { print $2; exit }' /proc/cpuinfo)
    fi
    [ -n "$mhz" ] || mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p' | tail -n 1)
    [ -n "$mhz" ] && awk -v m="$mhz" 'BEGIN { if (m + 0 > 0) printf "tsc_early_khz=%d", m * 1000 + 0.5 }'
}

# MODSRC_TAG: a private set of build outputs (modules, initramfs, logs) so several people can
# build and boot in one checkout at the same time.
# The kernel line is part of it (build/release/modules-7.3, build/logs-7.3, ...).
BUILD_TAG=$KERNEL_TAG${MODSRC_TAG:+-$MODSRC_TAG}

# The newest upstream vsock test suite: tools/testing/vsock of Debian's linux-source-7.3 from
# trixie-backports, fetched with a private apt configuration (the system's apt sources are never
# touched; scripts/fetch-newest-kernel-src.sh). Whatever 7.3.x the suite has newest is taken:
# only the newest stays in the archive, so no patch version is pinned; the exact version keys
# the caches (source, headers, test programs) and is printed.
NEWEST_SRC_PKG=${RVSOCK_NEWEST_SRC_PKG:-linux-source-7.3}
NEWEST_SUITE=trixie-backports
NEWEST_APT=$CACHE/apt/$NEWEST_SUITE
# Bump when scripts/build-newest-vsock-tests.sh changes what it produces.
NEWEST_TESTS_RECIPE=1
# The Debian archive the system's apt sources use (the first non-security one), so the private
# configuration fetches from the same mirror; RVSOCK_DEBIAN_MIRROR overrides it.
debian_mirror() {
    local m=${RVSOCK_DEBIAN_MIRROR:-}
    [ -n "$m" ] || m=$(awk 'tolower($1) == "uris:" { u = $2 }
        tolower($1) == "suites:" && u != "" && u !~ /security/ && u ~ /debian/ { print u; exit }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/ && $i ~ /debian/) { print $i; exit } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1)
    echo "${m:-http://deb.debian.org/debian}"
}
# apt-get/apt-cache with the private configuration (its own sources list, state and cache).
newest_apt() {
    local tool=$1; shift
    "$tool" -o Dir::Etc::sourcelist="$NEWEST_APT/sources.list" -o Dir::Etc::sourceparts="$NEWEST_APT/sources.list.d" \
        -o Dir::Etc::preferencesparts="$NEWEST_APT/preferences.d" -o Dir::Etc::preferences="$NEWEST_APT/preferences" \
        -o Dir::State="$NEWEST_APT/state" -o Dir::Cache="$NEWEST_APT/cache" -o APT::Sandbox::User=root "$@"
}
# The version fetched last (scripts/fetch-newest-kernel-src.sh records it), or nothing.
newest_pkg_version() { cat "$NEWEST_APT/version" 2>/dev/null || true; }
newest_src_dir() { echo "$CACHE/src/linux-$1"; }       # VERSION -> its unpacked source
newest_hdr_dir() { echo "$CACHE/hdr/linux-$1"; }       # VERSION -> its headers_install
# VERSION -> the test programs built from it (keyed by the recipe and the compiler).
newest_tests_dir() {
    echo "$CACHE/vsock-tests-newest/$1-$( { echo "$NEWEST_TESTS_RECIPE"; gcc --version | head -n 1; dpkg-query -W -f='${Version}' liburing-dev 2>/dev/null; } | sha256sum | cut -c1-8)"
}

# The kernel line's exact source version and its unpacked source (set last: on 7.3 the
# version is the one scripts/fetch-newest-kernel-src.sh fetched, read by newest_pkg_version).
KERNEL_PKG_VERSION=$(kernel_pkg_version)
SRC=$CACHE/src/linux-${KERNEL_PKG_VERSION:-none}
