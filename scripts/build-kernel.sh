#!/usr/bin/env bash
# Build a kernel flavour (default: release) of the kernel line $KERNEL (scripts/lib.sh) into the cache.
# Usage: scripts/build-kernel.sh [release|kasan]. Idempotent: an up-to-date build returns at once.
#        scripts/build-kernel.sh release|kasan --config-only DIR: only configure that flavour into
#        DIR (seconds; the kernel's .config then names the compiler that would build it).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
FLAVOUR=${1:-release}
[ -f "$TOP/kernel/$FLAVOUR.config" ] || die "no kernel/$FLAVOUR.config"
OUT=$(kernel_dir "$FLAVOUR")
CONFIG_ONLY=""
if [ "${2:-}" = --config-only ]; then
    [ -n "${3:-}" ] || die "--config-only needs a folder"
    CONFIG_ONLY=1 OUT=$3
fi
FLAGS=$(kernel_make_flags "$FLAVOUR")
kernel_env "$FLAVOUR"
[ -n "$KERNEL_PKG_VERSION" ] || die "$KERNEL_SRC_PKG is not installed: run scripts/setup-toolchain.sh"
JOBS=${JOBS:-$(( $(nproc) + 1 ))}

if [ -z "$CONFIG_ONLY" ] && [ -f "$OUT/.rvsock-built" ]; then
    log "kernel $FLAVOUR ($KERNEL_SRC_PKG $KERNEL_PKG_VERSION) up to date: $OUT"; exit 0
fi
# One build per kernel line at a time (the flavours share the unpacked source): check.sh builds
# the other line's kernels in the background while scenarios run, and its later prepare of that
# line waits here for them, then finds them built.
if [ -z "$CONFIG_ONLY" ]; then
    mkdir -p "$CACHE/kernel"
    exec 9> "$CACHE/kernel/.build-$KERNEL_SRC_PKG.lock"
    flock 9 || die "cannot lock $CACHE/kernel/.build-$KERNEL_SRC_PKG.lock"
    if [ -f "$OUT/.rvsock-built" ]; then
        log "kernel $FLAVOUR ($KERNEL_SRC_PKG $KERNEL_PKG_VERSION) up to date: $OUT"; exit 0
    fi
fi

if [ ! -f "$SRC/.rvsock-unpacked" ]; then
    tarball=/usr/src/$KERNEL_SRC_PKG.tar.xz
    [ -f "$tarball" ] || die "$tarball missing: run scripts/setup-toolchain.sh"
    log "unpacking $tarball ($KERNEL_SRC_PKG $KERNEL_PKG_VERSION)"
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xf "$tarball" -C "$SRC" --strip-components=1
    touch "$SRC/.rvsock-unpacked"
fi

mkdir -p "$OUT"
log "configuring $FLAVOUR kernel in $OUT"
make -s -C "$SRC" O="$OUT" $FLAGS tinyconfig
"$SRC/scripts/kconfig/merge_config.sh" -m -O "$OUT" "$OUT/.config" $(kernel_fragments "$FLAVOUR") >/dev/null
make -s -C "$SRC" O="$OUT" $FLAGS RUSTC="$RUSTC" RUSTDOC="$RUSTDOC" olddefconfig
# Every line of the fragment must have survived olddefconfig (a dropped option is a silent bug).
# A line fragment names the options its kernel line no longer has ("# absent CONFIG_X").
absent=$(cat $(kernel_fragments "$FLAVOUR") | sed -n 's/^# absent \(CONFIG_[A-Z0-9_]*\).*/\1/p')
bad=0
while IFS= read -r line; do
    grep -qxF "${line%%=*}" <<< "$absent" && continue
    case "$line" in CONFIG_*=n) opt=${line%%=*}; grep -q "^$opt=y\|^$opt=m" "$OUT/.config" && { echo "  $opt not off"; bad=1; } ;;
                    CONFIG_*) grep -qx "$line" "$OUT/.config" || { echo "  $line dropped"; bad=1; } ;; esac
done < <(cat $(kernel_fragments "$FLAVOUR"))
[ $bad = 0 ] || die "config fragment not applied (see above)"
if [ -n "$CONFIG_ONLY" ]; then log "kernel $FLAVOUR configured (not built): $OUT/.config"; exit 0; fi
log "building $FLAVOUR kernel from $KERNEL_SRC_PKG $KERNEL_PKG_VERSION (-j$JOBS, LIBCLANG_PATH=$LIBCLANG_PATH $FLAGS; log $OUT/make.log)"
# Progress every 30 s: objects built so far (a whole build of these configurations has ~1200).
ticker() {
    local t0=$SECONDS n
    while sleep 30; do
        n=$(find "$OUT" -name '*.o' 2>/dev/null | wc -l)
        log "kernel $FLAVOUR: $n of ~1200 objects ($(( n >= 1200 ? 99 : n * 100 / 1200 ))%), $((SECONDS - t0)) s"
    done
}
ticker & tick=$!
trap 'kill $tick 2>/dev/null || true' EXIT
kmake() { # a failed step shows its last lines and the log
    make -s -C "$SRC" O="$OUT" "$@" >> "$OUT/make.log" 2>&1 \
        || { tail -n 30 "$OUT/make.log" >&2; die "kernel $FLAVOUR: 'make $*' failed; whole log: $OUT/make.log"; }
}
: > "$OUT/make.log"
kmake $FLAGS -j"$JOBS" RUSTC="$RUSTC" RUSTDOC="$RUSTDOC" bzImage modules
kmake $FLAGS INSTALL_MOD_PATH="$OUT/modinst" INSTALL_MOD_STRIP=1 modules_install
kmake headers_install INSTALL_HDR_PATH="$OUT/hdr"
touch "$OUT/.rvsock-built"
log "kernel $FLAVOUR built: $OUT"
