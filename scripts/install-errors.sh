#!/usr/bin/env bash
# install-errors (issue 18): what a user sees when their kernel or toolchain cannot build rvsock.
# `make modules KDIR=...` (and DKMS's build step, scripts/dkms-build.sh, which runs it) must stop
# before the compiler with one message naming what is missing, and `dkms build` must skip a
# kernel without CONFIG_RUST (dkms.conf's BUILD_EXCLUSIVE_CONFIG) with its own message, not a
# wall of compiler errors. Each case is a copy of the cached release kernel's build tree with one
# thing taken away (only the small files the checks read, the rest linked), so nothing is built.
# Prints "RVSOCK-TEST ok|fail NAME" per case.
#   scripts/install-errors.sh [FLAVOUR]   (a built kernel of $KERNEL: build-kernel.sh FLAVOUR)
set -uo pipefail
. "$(dirname "$0")/lib.sh"
FLAVOUR=${1:-release}
KD=$(kernel_dir "$FLAVOUR")
[ -f "$KD/.rvsock-built" ] || die "kernel $FLAVOUR not built (scripts/build-kernel.sh $FLAVOUR)"
T=$(mktemp -d /tmp/rvsock-install-errors.XXXXXX)
trap 'rm -rf "$T"' EXIT

# tree NAME: a tree that passes every check (links to the real kernel's files; .config copied).
tree() {
    local d=$T/$1
    mkdir -p "$d/include/config"
    cp "$KD/.config" "$d/.config"
    ln -s "$KD/Module.symvers" "$d/Module.symvers"
    cp "$KD/include/config/kernel.release" "$d/include/config/kernel.release"
    ln -s "$KD/rust" "$d/rust"
    ln -s "$KD/Makefile" "$d/Makefile"
    echo "$d"
}
# expect NAME WANT CMD...: CMD fails, says WANT, and says little else (<= 3 lines, no compiler
# error: the checks come before the compiler).
expect() {
    local name=$1 want=$2 out rc lines; shift 2
    out=$("$@" 2>&1); rc=$?
    lines=$(printf '%s\n' "$out" | grep -cvE '^\[rvsock [0-9]')
    echo "# $name: exit $rc, $lines line(s): $(printf '%s\n' "$out" | grep -vE '^\[rvsock [0-9]' | head -n 3 | tr '\n' ' ')"
    if [ $rc -ne 0 ] && [[ $out == *"$want"* ]] && [ "$lines" -le 3 ] && ! grep -qE '^error(\[E[0-9]+\])?:' <<< "$out"; then
        echo "RVSOCK-TEST ok install-errors.$name"
    else
        echo "# $name: wanted a failure saying: $want"
        echo "RVSOCK-TEST fail install-errors.$name"
    fi
}
modules() { KDIR=$1 "$TOP/scripts/build-modules.sh"; }

# A folder that is no kernel build at all.
mkdir -p "$T/empty"
expect not-built "is not a built kernel tree" modules "$T/empty"
# A kernel without Rust (most distribution kernels): the first thing to say.
d=$(tree norust); sed -i '/^CONFIG_RUST=/d' "$d/.config"; echo "# CONFIG_RUST is not set" >> "$d/.config"
expect no-config-rust "the kernel has no Rust support (CONFIG_RUST=y)" modules "$d"
# ... and through DKMS's build step, which runs the same checks.
expect dkms-build-step-no-rust "the kernel has no Rust support" "$TOP/scripts/dkms-build.sh" "$d"
# Rust enabled, but the build tree carries no Rust metadata (headers packaged without it).
d=$(tree normeta); rm "$d/rust"; mkdir "$d/rust"
expect no-rust-metadata "rust/libkernel.rmeta missing" modules "$d"
# Another rustc than the kernel's (its crates are only usable by the compiler that built them).
d=$(tree rustc)
printf '#!/bin/sh\necho "rustc 1.78.0 (9b00956e5 2024-04-29)"\n' > "$T/fake-rustc"; chmod +x "$T/fake-rustc"
expect rustc-mismatch "Rust modules must be built by the kernel's own rustc" env RUSTC="$T/fake-rustc" KDIR="$d" "$TOP/scripts/build-modules.sh"
expect rustc-missing "rustc not found" env RUSTC="$T/no-such-rustc" KDIR="$d" "$TOP/scripts/build-modules.sh"
# No bindgen: a PATH with everything the script needs but bindgen (lib.sh puts the tool cache,
# where ours is, first: point it at an empty cache).
mkdir -p "$T/bin"
for c in bash sed grep cat sha256sum cut ls dirname mkdir rsync make env uname date tr head tail nproc; do
    p=$(command -v "$c") && ln -sf "$p" "$T/bin/$c"
done
expect bindgen-missing "bindgen not found" env PATH="$T/bin" RVSOCK_CACHE="$T/cache" KDIR="$d" "$T/bin/bash" "$TOP/scripts/build-modules.sh"
# DKMS itself skips a kernel without CONFIG_RUST (BUILD_EXCLUSIVE_CONFIG), before our build step.
if command -v dkms > /dev/null; then
    d=$T/norust
    V=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
    KVER=$(cat "$d/include/config/kernel.release")
    mkdir -p "$T/dkms-src/rvsock-$V" "$T/dkms-tree" "$T/dkms-install"
    cp "$TOP/dkms.conf" "$T/dkms-src/rvsock-$V/"
    ln -s "$TOP/scripts" "$T/dkms-src/rvsock-$V/scripts"
    D=(--sourcetree "$T/dkms-src" --dkmstree "$T/dkms-tree" --installtree "$T/dkms-install")
    dkms add -m rvsock -v "$V" "${D[@]}" > /dev/null 2>&1
    out=$(dkms build -m rvsock -v "$V" -k "$KVER" --kernelsourcedir "$d" "${D[@]}" 2>&1); rc=$?
    echo "# dkms build, kernel without CONFIG_RUST: exit $rc: $(echo "$out" | grep -i 'exclusive' | head -n 1)"
    if [ $rc -ne 0 ] && grep -q 'BUILD_EXCLUSIVE' <<< "$out" && ! grep -q 'dkms-build.sh' <<< "$out"; then
        echo "RVSOCK-TEST ok install-errors.dkms-skips-no-rust"
    else
        echo "$out" | tail -n 5
        echo "RVSOCK-TEST fail install-errors.dkms-skips-no-rust"
    fi
else
    echo "RVSOCK-TEST fail install-errors.dkms-skips-no-rust"; echo "# dkms not installed"
fi
