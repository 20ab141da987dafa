#!/usr/bin/env bash
# DKMS as a user runs it, but into a staging area (never this machine's /usr/src, /var/lib/dkms
# or /lib/modules): dkms add, build and install (--no-depmod) of this tree for the cached kernel
# of FLAVOUR; the installed .ko files are copied to OUT (rvsock-install boots with them).
#   scripts/dkms-stage.sh FLAVOUR OUT
set -euo pipefail
. "$(dirname "$0")/lib.sh"
FLAVOUR=$1 OUT=$2
command -v dkms > /dev/null || die "dkms not installed (scripts/setup-toolchain.sh installs it)"
KD=$(kernel_dir "$FLAVOUR")
KVER=$(cat "$KD/include/config/kernel.release")
V=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
S=$TOP/build/$FLAVOUR/dkms-stage$BUILD_TAG
rm -rf "$S"; mkdir -p "$S/src/rvsock-$V" "$S/dkms" "$S/install/$KVER"
# The source as a release tarball would carry it (no build output, no git).
rsync -a --exclude target --exclude build --exclude '.*' "$TOP/" "$S/src/rvsock-$V/"
T=(--sourcetree "$S/src" --dkmstree "$S/dkms" --installtree "$S/install")
kernel_env "$FLAVOUR"   # the libclang of this kernel's line and flavour
log "dkms: add, build, install rvsock $V for $KVER (staging $S)"
dkms add -m rvsock -v "$V" "${T[@]}"
dkms build -m rvsock -v "$V" -k "$KVER" --kernelsourcedir "$KD" "${T[@]}" \
    || { cat "$S/dkms/rvsock/$V/build/make.log" 2>/dev/null | tail -n 30; die "dkms build failed"; }
dkms install -m rvsock -v "$V" -k "$KVER" --kernelsourcedir "$KD" --no-depmod "${T[@]}"
rm -rf "$OUT"; mkdir -p "$OUT"
find "$S/install/$KVER" -name 'rvsock*.ko' -exec cp {} "$OUT/" \;
log "dkms: installed $(cd "$OUT" && echo *.ko) into $S/install/$KVER; copies in $OUT"
