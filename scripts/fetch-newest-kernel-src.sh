#!/usr/bin/env bash
# Fetch the newest $NEWEST_SRC_PKG (linux-source-7.3) of Debian's trixie-backports into the
# cache with a private apt configuration (own sources list, state and cache under
# $CACHE/apt/trixie-backports: the system's apt sources are never touched) and unpack it once
# into $CACHE/src/linux-VERSION. Prints the exact version on stdout.
# The package index is refreshed at most once a day (RVSOCK_NEWEST_REFRESH=1 forces it); when
# the archive cannot be reached, the version fetched last is used.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
mkdir -p "$NEWEST_APT"/{sources.list.d,preferences.d,state/lists/partial,cache/archives/partial,debs} "$CACHE/src"
exec 9> "$NEWEST_APT/.lock"
flock 9

mirror=$(debian_mirror)
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $NEWEST_SUITE main" > "$NEWEST_APT/sources.list.new"
cmp -s "$NEWEST_APT/sources.list.new" "$NEWEST_APT/sources.list" 2>/dev/null || rm -f "$NEWEST_APT/.updated"
mv -f "$NEWEST_APT/sources.list.new" "$NEWEST_APT/sources.list"

if [ -n "${RVSOCK_NEWEST_REFRESH:-}" ] || [ -z "$(find "$NEWEST_APT/.updated" -mmin -1440 2>/dev/null)" ]; then
    log "apt ($NEWEST_SUITE, private configuration): updating the package index from $mirror"
    if newest_apt apt-get update -qq --error-on=any >&2; then
        touch "$NEWEST_APT/.updated"
    else
        log "apt update of $NEWEST_SUITE failed"
    fi
fi
ver=$(newest_apt apt-cache show --no-all-versions "$NEWEST_SRC_PKG" 2>/dev/null | awk '/^Version:/ { print $2; exit }' || true)
if [ -z "$ver" ]; then
    ver=$(newest_pkg_version)
    [ -n "$ver" ] || die "$NEWEST_SRC_PKG not found in $NEWEST_SUITE ($mirror) and nothing fetched before"
    log "$NEWEST_SRC_PKG not in the package index: using the version fetched last, $ver"
fi
case "$ver" in 7.3*) ;; *) [ -n "${RVSOCK_NEWEST_SRC_PKG:-}" ] || die "unexpected $NEWEST_SRC_PKG version $ver" ;; esac

src=$(newest_src_dir "$ver")
if [ ! -f "$src/.rvsock-unpacked" ]; then
    deb=$(ls "$NEWEST_APT/debs/${NEWEST_SRC_PKG}_$ver"_*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        log "apt: downloading $NEWEST_SRC_PKG $ver"
        (cd "$NEWEST_APT/debs" && newest_apt apt-get download -qq "$NEWEST_SRC_PKG=$ver" >&2)
        deb=$(ls "$NEWEST_APT/debs/${NEWEST_SRC_PKG}_$ver"_*.deb 2>/dev/null | head -n 1 || true)
        [ -n "$deb" ] || die "download of $NEWEST_SRC_PKG $ver gave no .deb"
    fi
    log "unpacking $deb into $src"
    x=$(mktemp -d "$CACHE/src/.deb-XXXXXX")
    dpkg-deb -x "$deb" "$x"
    tarball=$(ls "$x"/usr/src/linux-source-*.tar.* | head -n 1)
    rm -rf "$src" && mkdir -p "$src"
    tar -xf "$tarball" -C "$src" --strip-components=1
    rm -rf "$x"
    touch "$src/.rvsock-unpacked"
    # The .deb is no longer needed once unpacked (a re-unpack downloads it again).
    rm -f "$deb"
fi
echo "$ver" > "$NEWEST_APT/version.new" && mv -f "$NEWEST_APT/version.new" "$NEWEST_APT/version"
log "$NEWEST_SRC_PKG $ver (newest in $NEWEST_SUITE): $src"
echo "$ver"
