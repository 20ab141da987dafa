# Extract kernel reports (KASAN, UBSAN, lockdep, WARN/BUG/Oops, refcount, hung task, RCU
# stall, soft/hard lockup, list corruption, kmemleak objects) from an rvsock VM serial log.
# Usage: awk -f scripts/kreports.awk LOG
# Output, per report: a header line
#   @@REPORT<TAB><intree><TAB><signature><TAB><title>
# followed by the report's lines, each prefixed with "| ". <intree> is 1 when every stack
# frame of the report resolves to a symbol and none of the report's lines names rvsock code
# (rvsock symbols, [rvsock*] modules, rvsock lock classes); 0 otherwise. <signature>
# identifies the same report in another run of the same kernel: the title without numbers
# plus the first 8 function names of its stacks. A report printed both on the console and in
# the final dmesg dump is reported once (the longer copy).
# POSIX awk (mawk): no gawk extensions.

function strip(s) {
    sub(/^L2\| /, "", s)
    sub(/\r$/, "", s)
    sub(/^\[ *[0-9]+\.[0-9]+\] /, "", s)
    return s
}

function normalize(s) {
    gsub(/\+0x[0-9a-f]+\/0x[0-9a-f]+/, "", s)
    gsub(/0x[0-9a-f]+/, "HEX", s)
    gsub(/[0-9]+/, "N", s)
    gsub(/[ \t]+/, " ", s)
    return s
}

function is_trigger(s) {
    return s ~ /(^|[^A-Za-z_])BUG[: ]/ || s ~ /kernel BUG at/ || s ~ /^Oops/ || s ~ /general protection fault/ ||
        s ~ /Kernel panic/ || s ~ /KASAN:/ || s ~ /UBSAN:/ || s ~ /WARNING:/ || s ~ /refcount_t:/ ||
        s ~ /INFO: task .* blocked/ || s ~ /soft lockup/ || s ~ /hard LOCKUP/ || s ~ /rcu: INFO/ ||
        s ~ /INFO: rcu_/ || s ~ /list_add corruption/ || s ~ /list_del corruption/ ||
        s ~ /^unreferenced object 0x/ || s ~ /Unable to handle kernel/ || s ~ /cut here/
}

function close_block(   key, hdr) {
    if (!open) return
    open = 0
    key = first_raw
    hdr = sprintf("@@REPORT\t%d\t%s|%s\t%s\n", (rv == 0 && unres == 0 && nframes > 0), normalize(title), sig, title)
    if (!(key in len)) {
        order[++nrep] = key
    } else if (len[key] >= nlines) {
        return
    }
    len[key] = nlines
    text[key] = hdr body
}

function start_block(raw, s) {
    close_block()
    open = 1; nlines = 0; body = ""; sig = ""; nframes = 0; rv = 0; unres = 0
    title = s; first_raw = raw
    kasan = (s ~ /KASAN/)
    kmemleak_obj = (s ~ /^unreferenced object/)
    ends_with_trace = 0
}

function add(raw, s,   fn, t) {
    nlines++
    if (nlines <= 200) body = body "| " raw "\n"
    if (s ~ /cut here|WARNING: CPU|^Oops|BUG: unable|general protection fault|kernel BUG at|Unable to handle/)
        ends_with_trace = 1
    if (s !~ /Modules linked in:/ && tolower(s) ~ /rvsock/) rv = 1
    if (match(s, /[A-Za-z_][A-Za-z0-9_.$]*\+0x[0-9a-f]+\/0x[0-9a-f]+/)) {
        fn = substr(s, RSTART, RLENGTH)
        sub(/\+.*/, "", fn)
        nframes++
        if (nframes <= 8) sig = sig " " fn
    } else if (s ~ /\[<[0-9a-f]+>\] 0x[0-9a-f]+ *$/ || s ~ /^ *(\? )?0x[0-9a-f]+ *$/) {
        unres = 1
    }
}

{
    raw = $0
    s = strip(raw)
    if (s ~ /^RVSOCK-KMEMLEAK-BEGIN/) { close_block(); in_kml = 1; next }
    if (s ~ /^RVSOCK-KMEMLEAK-END/) { close_block(); in_kml = 0; next }
    if (in_kml) {
        if (s ~ /^unreferenced object 0x/) start_block(raw, s)
        if (open) add(raw, s)
        next
    }
    if (s ~ /^RVSOCK-/) { close_block(); next }
    if (is_trigger(s)) {
        # A trigger right after the start of a report belongs to it (cut here -> WARNING,
        # refcount_t -> WARNING, ====== -> BUG: KASAN).
        if (!open || nlines >= 4) start_block(raw, s)
        else if (title ~ /cut here/) title = s
        add(raw, s)
        next
    }
    if (!open) next
    add(raw, s)
    if (s ~ /---\[ end trace/ || s ~ /---\[ end Kernel panic/) { close_block(); next }
    if (s ~ /^====================*$/ && nlines > 2) { close_block(); next }
    if (s ~ /<\/TASK>/ && !kasan && !ends_with_trace) { close_block(); next }
    if (nlines >= 200) close_block()
}

END {
    close_block()
    for (i = 1; i <= nrep; i++) printf "%s", text[order[i]]
}
