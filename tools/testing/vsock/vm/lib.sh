# Helpers for scenario scripts inside test VMs (busybox sh). Results go to the serial console as
#   RVSOCK-TEST <ok|fail|skip> <name>
# and the host harness counts them.

result() { echo "RVSOCK-TEST $1 $2"; }

# load_stack TRANSPORT... : load the vsock core plus the named transports from the module set
# this VM was given (MODS=c: the in-tree C modules; MODS=rvsock: ours). TRANSPORT is one of
# loopback, virtio, vhost.
load_stack() {
    for t in "$@"; do
        case "$MODS:$t" in
            c:loopback) m=vsock_loopback ;;
            c:virtio) m=vmw_vsock_virtio_transport ;;
            c:vhost) m=vhost_vsock ;;
            rvsock:loopback) m=rvsock_loopback ;;
            rvsock:virtio) m=rvsock_virtio ;;
            rvsock:vhost) m=rvsock_vhost ;;
            *) result fail "load-$MODS-$t-unknown"; return 1 ;;
        esac
        if modprobe "$m"; then :; else result fail "modprobe-$m"; return 1; fi
    done
    echo "modules loaded:"; cut -d' ' -f1-3 /proc/modules
}

# run_vsock_test PREFIX OUT ARGS... : run upstream vsock_test with ARGS, save its output in OUT,
# and report one result per test case (prefixed with PREFIX). Tests that never printed "ok"
# (the run died or hung) are failures; "skipped" ones are skips.
# VT_BIN: another program of the suite's kind (vsock_diag_test). VT_RETRY=SECS: a client whose
# control connection is refused tries again for that long (its server is not listening yet).
run_vsock_test() {
    prefix=$1; out=$2; shift 2
    bin=${VT_BIN:-vsock_test}
    "$bin" --list | awk -F'\t' '/^[0-9]+\t/ {print $1 "\t" $2}' > "$out.list"
    _t0=$(up); _n=0
    while :; do
        timeout -s KILL "${VSOCK_TEST_TIMEOUT:-900}" "$bin" "$@" > "$out" 2> "$out.err"
        rc=$?
        if [ $rc -ne 0 ] && [ $_n -lt $((${VT_RETRY:-0} * 5)) ] && grep -q "Control socket initialization failed" "$out.err" \
            && ! grep -q "Control socket connected" "$out"; then
            _n=$((_n + 1)); sleep 0.2; continue
        fi
        break
    done
    echo "$bin $* exited $rc after $(($(up) - _t0))s"
    tail -n 20 "$out.err"
    report_vsock_test "$prefix" "$out"
    return $rc
}

# nested_skips: the --skip options both sides of a whole-suite vsock_test run take in the
# nested topology. The 6.12 suite's test 17 (SOCK_STREAM SHUT_RD) is racy there: the server's
# shutdown(SHUT_RD) travels over vsock, its "SHUTRDDONE" over the TCP control channel, and the
# client's one send() fails only if the vsock packet won (in-tree and rvsock alike: a vhost
# host sends from its worker). Upstream fixed the test after 6.12 (it retries the send); the 7.3
# copy runs in the vt7 scenarios and on 7.3.
# The 7.3 suite's test 33 (transport change) leaves connections behind for the next test: its
# client's connect()s are interrupted by signals, and a REQUEST already on its way can reach the
# server's port after the TCP "DONE", when test 34's listener is up (upstream's comment on that
# test says no side can tell). Test 34's server then accepts that leftover, closes its listener
# and the real client's connect() is reset: 34-40 fail. Seen in the nested topology with an
# rvsock guest (2 of 4 release runs with the C host, and on the sanitizer kernel), never over
# loopback; the vt7 scenarios run 33 on its own, where nothing follows it.
# On the sanitizer kernel the 7.3 suite's test 40 (small packets backpressure: 2 MiB in
# 129-512 byte sends within the suite's 10 s) times out in the nested topology, with the
# in-tree stack as with rvsock ("recv timed out"); the release scenarios run it.
# Test 21 (double bind connect, in both suites) where an in-tree stack takes part: the in-tree
# stack loses that test's own race (its client binds the port again while its closed socket
# still waits for the server's RST; docs/testing.md) on the sanitizer kernel and on a
# busy machine, which failed the C reference runs, not rvsock. The rvsock pair runs it.
nested_skips() {
    case "$(vsock_test --list | grep -c '^[0-9]')" in
        26) echo "--skip 17" ;;
        41) echo "--skip 33"; case "$SCENARIO" in *-kasan) echo "--skip 40" ;; esac ;;
    esac
    case "$SCENARIO" in c-nested* | *c-host* | *c-guest*) echo "--skip 21" ;; esac
}

report_vsock_test() {
    prefix=$1; out=$2
    tr -d '\r' < "$out" | awk -v prefix="$prefix" -v listf="$out.list" '
        BEGIN { FS="\t"; while ((getline l < listf) > 0) { split(l, a, "\t"); name[a[1]] = a[2]; n++ } FS=" " }
        match($0, /^[0-9]+ - /) {
            id = substr($0, 1, index($0, " ") - 1)
            if ($0 ~ /\.\.\.ok$/) st[id] = "ok"; else if ($0 ~ /\.\.\.skipped$/) st[id] = "skip"
        }
        END {
            for (i = 0; i < n; i++) {
                s = (i in st) ? st[i] : "fail"
                t = name[i]; gsub(/ /, "_", t)
                printf "RVSOCK-TEST %s %s%d-%s\n", s, prefix, i, t
            }
        }'
}

# --- The newest upstream vsock_test (Linux 7.3), test by test -------------------------------
# scripts/build-newest-vsock-tests.sh puts the 7.3 programs in /opt/vsock-7.3/ (the 6.12 ones
# stay in /usr/bin). Each test runs on its own: a fresh server and client with --pick=ID, a
# per-test timeout (VT7_TIMEOUT seconds, default 120), and one result per test:
#   RVSOCK-TEST ok|fail|skip PREFIXvt7/ID-NAME
# VT7_ONLY="ID ..." limits a run to some tests (debugging aid).
VT7=${VT7:-/opt/vsock-7.3/vsock_test}
VT7_TIMEOUT=${VT7_TIMEOUT:-120}
# Tests that the in-tree 6.12 C stack fails for a feature it does not have (newer than 6.12:
# not a bug of the stack's 6.12 code or of this harness). The C reference scenarios (c-*, every
# stack in them C) report them as skip, with the reason in the log, when they fail; a pass is
# reported as ok. rvsock scenarios never skip. One line per test: ID REASON.
VT7_C_GAPS='
32 SO_LINGER on close with unread data: 6.12 lingers until the peer closes (virtio_transport_wait_close waits for SOCK_DONE); 7.3 lingers only while unsent bytes remain (vsock_linger, upstream "vsock/virtio: Linger on unsent data", after 6.12), which this test expects
21 double bind connect: the in-tree stack answers EADDRINUSE while its closed socket still waits for the RST from the server of the test, a race of the test that the slow sanitizer VMs lose (docs/testing.md); rvsock reclaims such a port
'

# vt7_c_gap ID: the reason test ID is a known gap of the 6.12 C stack, in C scenarios only.
vt7_c_gap() {
    case "$SCENARIO" in c-*) ;; *) return 1 ;; esac
    case "$(uname -r)" in 6.12*) ;; *) return 1 ;; esac
    [ "$MODS" = c ] || return 1
    echo "$VT7_C_GAPS" | awk -v id="$1" 'NF && $1 "" == id "" { $1 = ""; sub(/^ /, ""); print; found = 1 } END { exit !found }'
}

# vt7_list FILE: "ID<TAB>NAME" per test (spaces of names turned into _), limited to VT7_ONLY.
vt7_list() {
    "$VT7" --list 2>/dev/null | awk -F'\t' -v only=" ${VT7_ONLY:-} " '/^[0-9]+\t/ {
        if (only != "  " && index(only, " " $1 " ") == 0) next
        gsub(/ /, "_", $2); print $1 "\t" $2 }' > "$1"
    [ -s "$1" ]
}

# vt7_server ID CID PORT OUT: start a server for test ID alone in the background ($vt7_spid;
# stdout in OUT, stderr in OUT.err) and wait until its control socket listens (it prints that
# right after listen()).
vt7_server() {
    timeout -s KILL "$VT7_TIMEOUT" "$VT7" --mode=server --control-port="$3" --peer-cid="$2" --pick="$1" > "$4" 2> "$4.err" < /dev/null &
    vt7_spid=$!
    vt7_poll 30 grep -q "Control socket listening" "$4"
}

# vt7_poll SECONDS CMD...: run CMD every 50 ms until it succeeds (0) or SECONDS pass (1). The
# suite runs 41 short tests, each waiting for a server twice: a fine poll keeps that cheap.
vt7_poll() {
    vt7_n=$(($1 * 20)); shift
    until "$@" 2>/dev/null; do
        vt7_n=$((vt7_n - 1)); [ $vt7_n -gt 0 ] || return 1; sleep 0.05
    done
}

# vt7_reap PID SECONDS: wait for a server (finely polled), killing it if it outlives SECONDS;
# returns its exit status.
vt7_reap() {
    vt7_poll "$2" eval '! kill -0 '"$1" || { echo "vt7: killing server $1"; kill -9 "$1"; }
    wait "$1" 2>/dev/null
}

# vt7_client ID CID HOST PORT OUT [WAIT]: run the client of test ID (stdout in OUT, stderr in
# OUT.err: a test's messages on stderr would otherwise split its "ID - NAME...ok" line); returns
# its exit status.
# A control connection refused because the server does not listen yet is retried (not a test
# failure) for up to WAIT seconds (default 30), as long as the client printed no test line.
vt7_client() {
    n=0
    while :; do
        timeout -s KILL "$VT7_TIMEOUT" "$VT7" --mode=client --control-host="$3" --control-port="$4" --peer-cid="$2" --pick="$1" > "$5" 2> "$5.err" < /dev/null
        rc=$?
        if [ $rc -ne 0 ] && grep -q "Control socket initialization failed" "$5.err" && ! grep -q "Control socket connected" "$5"; then
            n=$((n + 1))
            if [ $n -lt $((${6:-30} * 5)) ]; then sleep 0.2; continue; fi
            echo "vt7: test $1: the control connection to $3:$4 was refused for ${6:-30}s"
        fi
        return $rc
    done
}

# vt7_report PREFIX ID NAME CLIENT_RC CLIENT_OUT [SERVER_RC SERVER_OUT]: print the result of
# one test (ok: its "ID - NAME...ok" line and exit status 0 on both sides) and, for a failure,
# the last lines of both outputs (stdout, then stderr); a passing test's stderr lines (upstream
# prints notes there, e.g. "Test skipped, SIOCINQ not supported.") are shown as notes.
vt7_report() {
    prefix=$1 id=$2 name=$3 crc=$4 cout=$5 src=${6:-?} sout=${7:-}
    st=fail
    if [ "$crc" = 0 ] && { [ "$src" = 0 ] || [ "$src" = "?" ]; } && tr -d '\r' < "$cout" | grep -q "^$id - .*\.\.\.ok$"; then
        st=ok
    elif tr -d '\r' < "$cout" | grep -q "^$id - .*\.\.\.skipped$"; then
        st=skip
    fi
    if [ $st != ok ]; then
        echo "vt7 test $prefix$id ($name) $st: client exit $crc, server exit $src$([ "$src" = "?" ] && echo " (on the peer machine)"); client output (last lines):"
        vt7_tail "$cout" client
        if [ -n "$sout" ]; then
            echo "  server output (last lines):"
            vt7_tail "$sout" server
        fi
        if [ $st = fail ] && reason=$(vt7_c_gap "$id"); then
            echo "vt7 test $prefix$id: known gap of the in-tree 6.12 stack, reported as skip: $reason"
            st=skip
        fi
    else
        for f in "$cout" "$sout"; do
            [ -s "$f.err" ] && tr -d '\r' < "$f.err" | tail -n 3 | sed "s|^|vt7 test $prefix$id note ($(basename "$f" | sed 's/.*\.//')): |"
        done
        if vt7_c_gap "$id" > /dev/null; then
            echo "vt7 test $prefix$id passed although listed as a known gap of the 6.12 C stack (VT7_C_GAPS)"
        fi
    fi
    result $st "${prefix}vt7/$id-$name"
}

# vt7_tail OUT LABEL: the last lines of a test program's stdout (OUT) and stderr (OUT.err).
vt7_tail() {
    tr -d '\r' < "$1" | grep -v '\.\.\.skipped$' | tail -n 8 | sed "s/^/  $2| /"
    [ -s "$1.err" ] && tr -d '\r' < "$1.err" | tail -n 8 | sed "s/^/  $2 stderr| /"
    return 0
}

vt7_banner() { echo "vt7: $(cat "$(dirname "$VT7")/VERSION" 2>/dev/null) vsock_test, $1, timeout ${VT7_TIMEOUT}s per test"; }

# run_vsock_test_each PREFIX CID [PORT]: both sides in this VM (loopback): every test of the
# newest vsock_test on its own, a fresh server for each.
run_vsock_test_each() {
    prefix=$1 cid=$2 port=${3:-1240}
    mkdir -p /tmp/vt7
    if [ ! -x "$VT7" ] || ! vt7_list /tmp/vt7/list; then result fail "${prefix}vt7/missing-$VT7"; return 1; fi
    vt7_banner "test by test, peer CID $cid"
    while IFS="$(printf '\t')" read -r id name; do
        t0=$(date +%s)
        if vt7_server "$id" "$cid" "$port" "/tmp/vt7/$id.server"; then
            vt7_client "$id" "$cid" 127.0.0.1 "$port" "/tmp/vt7/$id.client"
            crc=$?
        else
            echo "vt7: test $id: the server never listened"
            crc=255; : > "/tmp/vt7/$id.client"; : > "/tmp/vt7/$id.client.err"
        fi
        vt7_reap "$vt7_spid" 30
        src=$?
        echo "vt7: test $id took $(( $(date +%s) - t0 ))s"
        vt7_report "$prefix" "$id" "$name" "$crc" "/tmp/vt7/$id.client" "$src" "/tmp/vt7/$id.server"
    done < /tmp/vt7/list
}

# Two machines (nested: L1 and its L2, control channel over TCP). The serving machine runs
# vt7_serve_each, the other vt7_client_each, with the same PREFIX and test list; tests go
# in lockstep, a fresh server per test.
# vt7_serve_each PREFIX PEER_CID PORT: for every test, a server on control port PORT; once it
# listens, "RVSOCK-VT7-LISTENING PREFIXID:" goes to the console (the client's machine may
# watch this console's log), then the server is waited for. Results come from the client side.
vt7_serve_each() {
    prefix=$1 cid=$2 port=$3
    mkdir -p /tmp/vt7s
    vt7_list /tmp/vt7s/list || { echo "RVSOCK-VT7-NO-SUITE $prefix"; return 1; }
    vt7_banner "serving $prefix, peer CID $cid, control port $port"
    while IFS="$(printf '\t')" read -r id name; do
        if vt7_server "$id" "$cid" "$port" "/tmp/vt7s/$id.server"; then
            echo "RVSOCK-VT7-LISTENING $prefix$id:"
        else
            echo "RVSOCK-VT7-NOT-LISTENING $prefix$id:"
        fi
        vt7_reap "$vt7_spid" $((VT7_TIMEOUT + 10))
        src=$?
        if [ $src -ne 0 ]; then
            echo "vt7 server $prefix$id ($name) exited $src; its last lines:"
            vt7_tail "/tmp/vt7s/$id.server" server
        fi
    done < /tmp/vt7s/list
}

# vt7_client_each PREFIX PEER_CID HOST PORT [SERVER_LOG]: the client side. With SERVER_LOG
# (the serving machine's console log, e.g. an L2's serial file), each client waits for that
# test's LISTENING marker first: needed where a connect succeeds whether or not the server
# listens (QEMU hostfwd accepts, then closes). Without it, refused connects are retried while
# the peer's previous server may still be finishing.
vt7_client_each() {
    prefix=$1 cid=$2 host=$3 port=$4 slog=${5:-}
    mkdir -p /tmp/vt7c
    if [ ! -x "$VT7" ] || ! vt7_list /tmp/vt7c/list; then result fail "${prefix}vt7/missing-$VT7"; return 1; fi
    vt7_banner "client of $prefix at $host:$port, peer CID $cid"
    while IFS="$(printf '\t')" read -r id name; do
        t0=$(date +%s)
        out=/tmp/vt7c/$id.client
        : > "$out"; : > "$out.err"
        if [ -n "$slog" ] && ! wait_for "$slog" "RVSOCK-VT7-[A-Z-]*LISTENING $prefix$id:" $((VT7_TIMEOUT + 60)); then
            echo "vt7: test $prefix$id: its server never started"
            crc=255
        elif [ -n "$slog" ] && grep -q "RVSOCK-VT7-NOT-LISTENING $prefix$id:" "$slog"; then
            echo "vt7: test $prefix$id: its server never listened"
            crc=255
        else
            vt7_client "$id" "$cid" "$host" "$port" "$out" $((VT7_TIMEOUT + 60))
            crc=$?
        fi
        echo "vt7: test $prefix$id took $(( $(date +%s) - t0 ))s"
        vt7_report "$prefix" "$id" "$name" "$crc" "$out"
    done < /tmp/vt7c/list
}

# debugfs_counted DIR COUNTER...: a transport module's debugfs counters
# (/sys/kernel/debug/DIR/COUNTER) are all above 0; result counters.DIR (a skip on the in-tree
# stack, which has no such counters).
debugfs_counted() {
    _d=$1; shift
    if [ "$MODS" = c ]; then result skip "counters.$_d"; return; fi
    _bad=
    for _c in "$@"; do
        _v=$(cat "/sys/kernel/debug/$_d/$_c" 2>/dev/null)
        echo "# /sys/kernel/debug/$_d/$_c: ${_v:-missing}"
        [ "${_v:-0}" -gt 0 ] 2>/dev/null || _bad=1
    done
    if [ -z "$_bad" ]; then result ok "counters.$_d"; else result fail "counters.$_d"; fi
}

# Active objects of the AF_VSOCK cache (0 if it does not exist). /proc/slabinfo counts the
# free objects of per-CPU slabs as active, so flush those first (shrink).
slab_objs() {
    [ -w /sys/kernel/slab/AF_VSOCK/shrink ] && echo 1 > /sys/kernel/slab/AF_VSOCK/shrink
    awk '$1 == "AF_VSOCK" { n = $2 } END { print n + 0 }' /proc/slabinfo
}

# slab_back NAME START SECONDS: wait until the cache is back at START objects (closed sockets
# linger until the peer's RST or the 8 s close timeout), report NAME.
slab_back() {
    i=0
    while :; do
        n=$(slab_objs)
        [ "$n" = "$2" ] && break
        i=$((i + 1)); [ $i -gt $(($3 * 2)) ] && break
        sleep 0.5
    done
    grep '^AF_VSOCK ' /proc/slabinfo
    if [ "$n" = "$2" ]; then
        echo "AF_VSOCK: $n active objects, as at the start"; result ok "$1"
    else
        echo "AF_VSOCK: $n active objects after ${3}s, $2 at the start"; result fail "$1"
    fi
}

# trace_port PORT: record every vsock packet from or to PORT that this kernel receives or
# sends (the in-tree packet events, which rvsock emits too) and rvsock's state changes of
# sockets on it, in the trace buffer; trace_dump PREFIX prints them. For rare failures: the
# filter keeps the cost to the packets of that port.
trace_port() {
    _t=/sys/kernel/tracing
    mount -t tracefs nodev "$_t" 2>/dev/null
    for _e in vsock/virtio_transport_alloc_pkt vsock/virtio_transport_recv_pkt rvsock/rvsock_sk_state; do
        [ -e "$_t/events/$_e/filter" ] || continue
        echo "src_port == $1 || dst_port == $1" > "$_t/events/$_e/filter"
        echo 1 > "$_t/events/$_e/enable"
    done
    echo > "$_t/trace"
}
trace_dump() {
    grep -v '^#' /sys/kernel/tracing/trace 2>/dev/null | tail -n 60 | sed "s/^/# $1: /"
}

# wait_for FILE PATTERN SECONDS
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt $(($3 * 5)) ] && return 1; sleep 0.2
    done
}

scan_kmemleak() {
    [ -w /sys/kernel/debug/kmemleak ] || return 0
    echo scan > /sys/kernel/debug/kmemleak; sleep 5; echo scan > /sys/kernel/debug/kmemleak
    if [ -s /sys/kernel/debug/kmemleak ]; then
        echo "RVSOCK-KMEMLEAK-BEGIN"; cat /sys/kernel/debug/kmemleak; echo "RVSOCK-KMEMLEAK-END"
    fi
}

# reap PID SECONDS: wait for a background job, killing it if it outlives SECONDS.
reap() {
    i=0
    while kill -0 "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt $(($2 * 5)) ] && { echo "killing $1"; kill -9 "$1"; break; }; sleep 0.2
    done
    wait "$1" 2>/dev/null
}

# reap_server PID SECONDS OUT: reap a whole-suite vsock_test server (its output, stdout and
# stderr, in OUT); when it failed, say so with its last lines (the failing test's own message,
# e.g. a timeout, is in the server's output when the client only sees a reset).
reap_server() {
    _t0=$(up)
    reap "$1" "$2"
    _rc=$?
    if [ "$_rc" != 0 ]; then
        echo "vsock_test server exited $_rc after $(($(up) - _t0))s (waited for), its last lines:"
        tr -d '\r' < "$3" | tail -n 8
    fi
    return "$_rc"
}

# want_perf: whether the bench runs upstream vsock_perf ($ONLY empty, or naming vsock_perf).
want_perf() { [ -z "${ONLY:-}" ] || case ",$ONLY," in *,vsock_perf,*) ;; *) return 1 ;; esac; }

# up: whole seconds since this VM booted (/proc/uptime: wall-clock time even under TCG).
up() { read -r _up _ < /proc/uptime; echo "${_up%.*}"; }

# wait_log FILE PATTERN SECONDS: like wait_for, but against the clock, so a loaded machine
# that slows the polling loop down does not stretch the wait.
wait_log() {
    _end=$(($(up) + $3))
    while ! grep -aq "$2" "$1" 2>/dev/null; do
        [ "$(up)" -ge "$_end" ] && return 1
        sleep 0.2
    done
}

# wait_polling PID SECONDS: wait (at most SECONDS) until server process PID sleeps in poll,
# i.e. has its listener up (rvsock-tests stream-recv). An L2 under TCG may take seconds to
# start a program: a READY marker printed before the listener exists gets the peer's connect
# reset (ECONNRESET).
wait_polling() {
    _end=$(($(up) + $2))
    while kill -0 "$1" 2>/dev/null; do
        case "$(cat "/proc/$1/wchan" 2>/dev/null)" in *poll*) return 0 ;; esac
        [ "$(up)" -ge "$_end" ] && return 1
        sleep 0.1
    done
    return 1
}

# wait_tcp_listen PORT SECONDS: wait until a TCP socket listens on PORT (vsock_test's control
# port: its client connects once, without retrying).
wait_tcp_listen() {
    _hex=$(printf ':%04X 00000000:0000 0A' "$1")
    wait_log /proc/net/tcp "$_hex" "$2"
}

# l2_accel: choose the accelerator of this L1's L2 guests once per scenario ($L2_ACCEL, kvm or
# tcg; $L2_ACCEL_WHY says why it is not kvm). kvm (L1's kvm_amd on QEMU's emulated SVM) unless
# the L1 kernel command line has rvsock_l2_accel=tcg, L1 has no /dev/kvm, or L1's TSC
# frequency is unknown (below); boot_l2 switches to tcg for good when a KVM L2 stalls.
l2_accel() {
    [ -n "${L2_ACCEL:-}" ] && return 0
    L2_ACCEL=$(arg rvsock_l2_accel) L2_ACCEL_WHY=
    case "$L2_ACCEL" in
        tcg) L2_ACCEL_WHY="forced: rvsock_l2_accel=tcg" ;;
        kvm | "") L2_ACCEL=kvm ;;
        *) echo "rvsock_l2_accel=$L2_ACCEL unknown (kvm or tcg), using kvm"; L2_ACCEL=kvm ;;
    esac
    if [ "$L2_ACCEL" = kvm ] && ! [ -c /dev/kvm ]; then L2_ACCEL=tcg L2_ACCEL_WHY="no /dev/kvm in L1"; fi
    # The cause of the KVM stall (issue 19): when this (TCG) L1 failed to calibrate its TSC at
    # boot (tsc_khz 0: "Marking TSC unstable due to could not calculate TSC khz"), KVM can
    # never set up a guest's kvmclock (kvm_guest_time_update() finds no TSC frequency and asks
    # for the update again, forever): the vCPU thread spins in KVM_RUN and the guest never
    # runs one instruction. scripts/check.sh passes tsc_early_khz to nested L1s to prevent it.
    # (Not with L2_FALLBACK=no: the benchmark rather stalls and gets a fresh L1.)
    if [ "$L2_ACCEL" = kvm ] && [ "${L2_FALLBACK:-tcg}" = tcg ] && dmesg | grep -q "could not calculate TSC khz"; then
        L2_ACCEL=tcg L2_ACCEL_WHY="L1 TSC uncalibrated, KVM cannot run guests"
    fi
    export L2_ACCEL L2_ACCEL_WHY
}

# l2_scale: factor for the timeouts of the nested scenarios: 1 when the L2 guests run under
# KVM, L2_TCG_SCALE (default 4) when they run under TCG (emulated inside the emulated L1).
# In L1 it follows $L2_ACCEL (boot_l2 may change it); in an L2, its rvsock_l2_accel argument.
l2_scale() {
    case "${L2_ACCEL:-$(arg rvsock_l2_accel)}" in
        tcg) echo "${L2_TCG_SCALE:-4}" ;;
        *) echo 1 ;;
    esac
}

# l2_qemu LOG CID MEM SCRIPT EXTRA... : run an L2 guest (the /l2 image of an L1 host) with a
# vhost-vsock-pci device of CID, module set $L2MODS, extra kernel arguments $L2_APPEND, under
# $L2_ACCEL (l2_accel). The L2 kernel logs notices (loglevel=6, not quiet), so its first
# serial line is "Linux version ...", printed when the serial console registers (console_init,
# early in start_kernel, before timer calibration and devices): boot_l2's sign that the kernel
# runs. (earlyprintk=serial would print it even earlier but needs CONFIG_EARLY_PRINTK, which
# our kernels lack.) The L2 is told its accelerator (rvsock_l2_accel) to scale its timeouts.
l2_qemu() {
    log=$1 cid=$2 mem=$3 script=$4; shift 4
    l2_accel
    # A 7.x L2 failed its APIC timer calibration ("APIC timer disabled due to verification
    # failure") on the slow emulated L1 and then hung: give it a TSC-deadline timer, which
    # needs no calibration (KVM emulates it). 6.12 L2s keep the plain model they passed with.
    cpu=qemu64; case "$(uname -r)" in 6.*) ;; *) cpu=qemu64,+tsc-deadline ;; esac
    accel="-accel kvm -cpu ${L2_CPU:-$cpu}"
    [ "$L2_ACCEL" = tcg ] && accel="-accel tcg -cpu max"
    # No emulated MMIO on the L2's hot paths: its vsock device notifies through an I/O port
    # (modern-pio-notify; Linux takes the first notify capability, QEMU lists that one first)
    # and the nested scenarios give it a legacy (port I/O only) network card (l2_net). Why: QEMU's
    # emulated SVM (our TCG L1's "hardware") leaves the type bits of the last event it
    # delivered inside the L2 (e.g. a page fault) in EXITINTINFO with the valid bit clear, and
    # KVM since 6.14 (svm_check_emulate_instruction) looks only at those type bits: an MMIO
    # #NPF right after such an event is taken for one met while vectoring, and the L1's KVM
    # stops the L2 ("KVM internal error. Suberror: 3", reason 0x400: a 7.3 L2 hung in
    # `ip link set eth0 up`, at virtio-net's MMIO notify). Port I/O exits need no emulation.
    # What MMIO remains (probe, the interrupt handler's ISR read) follows exits or interrupt
    # injections (type 0), which that check lets through.
    # exec: run in the background (`l2_qemu ... &`), the subshell becomes QEMU, so `$!` is
    # QEMU's pid and killing it frees the guest CID for a retry.
    # L2_WRAP: a command that runs QEMU, e.g. `ip netns exec NS` (it execs QEMU, so `$!`
    # stays QEMU's pid).
    QEMU_MODULE_DIR=/usr/lib/x86_64-linux-gnu/qemu \
    exec ${L2_WRAP:-} qemu-system-x86_64 $accel -name l2,debug-threads=on -m "$mem" -smp 1 -nodefaults -no-user-config -display none \
        -L /usr/share/qemu -L /usr/share/seabios -no-reboot \
        -serial "file:$log" -kernel /l2/bzImage -initrd /l2/initramfs.cpio.gz \
        -append "console=ttyS0 loglevel=6 panic=-1 rvsock_scenario=$SCENARIO rvsock_role=l2 rvsock_mods=$L2MODS rvsock_script=$script rvsock_l2_accel=$L2_ACCEL ${L2_APPEND:-}" \
        "$@" -device "vhost-vsock-pci,guest-cid=$cid,modern-pio-notify=on"
}

# l2_net HOSTFWD: the arguments of an L2's network card (QEMU user networking, HOSTFWD its
# hostfwd= list): a legacy virtio-net (port I/O only, see l2_qemu on MMIO in an L2).
l2_net() {
    echo "-netdev user,id=n0${1:+,hostfwd=$1} -device virtio-net-pci,disable-modern=on,netdev=n0,romfile="
}

# l2_stall_diag PID LOG: what a stalled L2 QEMU (boot_l2) is doing, before it is killed: its
# threads (state, user and system ticks, wait channel), L1's KVM counters that moved in 1 s
# (the kind of exits, if any), and the L2 vCPU's registers from QEMU's monitor (the pipe
# LOG.mon that boot_l2 gives it; no answer in 3 s means the vCPU never left KVM_RUN).
l2_stall_diag() {
    for t in /proc/"$1"/task/*; do
        echo "  thread $(cat "$t/comm" 2>/dev/null): $(sed 's/.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f1,12,13) $(cat "$t/wchan" 2>/dev/null)"
    done
    if [ -d /sys/kernel/debug/kvm ]; then
        (cd /sys/kernel/debug/kvm && for f in *; do [ -f "$f" ] && echo "$f $(cat "$f")"; done) > /tmp/kvm.stats.0 2>/dev/null
        sleep 1
        (cd /sys/kernel/debug/kvm && for f in *; do [ -f "$f" ] && echo "$f $(cat "$f")"; done) > /tmp/kvm.stats.1 2>/dev/null
        echo "  L1 KVM counters in 1 s: $(awk 'NR == FNR { a[$1] = $2; next } $2 != a[$1] { printf "%s +%d ", $1, $2 - a[$1] }' /tmp/kvm.stats.0 /tmp/kvm.stats.1)"
    fi
    if [ -p "$2.mon.in" ]; then
        (timeout 3 cat "$2.mon.out" > /tmp/l2-mon.txt; true) 2>/dev/null &   # no "Terminated"
        echo "info registers" > "$2.mon.in"
        wait $!
        echo "  L2 vCPU (QEMU monitor): $(tr -d '\r' < /tmp/l2-mon.txt | grep -aE '^(RIP|CR0|EFL)' | tr -s ' \n' ' ' | cut -c1-240)"
    fi
}

# boot_l2 LOG CID MEM SCRIPT EXTRA... : start an L2 guest in the background ($qemu: its pid)
# and wait until its script prints RVSOCK-L2-READY. An L2 under KVM on QEMU's emulated SVM
# sometimes stalls before its kernel prints anything (issue 19; the vCPU thread spins in
# KVM_RUN; the cause found: an uncalibrated L1 TSC, see l2_accel). A KVM L2 prints its first
# kernel line after 3-4 s (TCG: 14-28 s): none within L2_STALL_SECS (30) is a stall, and so
# is no RVSOCK-BEGIN (init started) within 120 s (x l2_scale). The stalled QEMU is killed
# and, after L2_KVM_RETRIES (0: a stall has always repeated in the same L1) more KVM stalls,
# the guest boots again with -accel tcg -cpu max; L2_ACCEL=tcg stays exported, so every later
# L2 of the scenario runs under TCG too. A TCG L2 gets L2_TCG_STALL_SECS (120) for its first
# line. L2_FALLBACK=no keeps KVM (the benchmark: the C/rvsock ratios need both stacks' guests
# under one accelerator). 3 attempts at most. Each boot prints
# "RVSOCK-INFO l2-accel=kvm|tcg [(why)] log=LOG ..." (scripts/check.sh sums them up).
boot_l2() {
    l2_accel
    local attempt=0 kvm_stalls=0 s first t0 t1 t2 what
    while [ $attempt -lt 3 ]; do
        attempt=$((attempt + 1))
        : > "$1"
        t0=$(up)
        rm -f "$1.mon.in" "$1.mon.out"; mkfifo "$1.mon.in" "$1.mon.out"
        l2_qemu "$@" -monitor "pipe:$1.mon" >> /tmp/qemu.out 2>&1 &
        qemu=$!
        s=$(l2_scale)
        first=${L2_STALL_SECS:-30}; [ "$L2_ACCEL" = tcg ] && first=${L2_TCG_STALL_SECS:-120}
        if wait_log "$1" "Linux version" "$first"; then
            t1=$(($(up) - t0))
            # The kernel runs: init (RVSOCK-BEGIN), then readiness, get their full budget.
            if wait_log "$1" RVSOCK-BEGIN $((${L2_BEGIN_SECS:-120} * s)); then
                t2=$(($(up) - t0))
                if wait_log "$1" RVSOCK-L2-READY $((300 * s)); then
                    echo "RVSOCK-INFO l2-accel=$L2_ACCEL${L2_ACCEL_WHY:+ ($L2_ACCEL_WHY)} log=$1 attempt=$attempt first-line=${t1}s init=${t2}s ready=$(($(up) - t0))s"
                    # L2_LIVE=1 (RVSOCK_KARGS): copy the L2's console to ours as it comes, so
                    # an L1 that hangs or resets still shows what its L2 printed last (the
                    # whole log is otherwise printed at the scenario's end).
                    if [ "${L2_LIVE:-}" = 1 ]; then
                        tail -n +1 -f "$1" | while IFS= read -r l; do echo "L2live $2| $l"; done &
                    fi
                    return 0
                fi
                # It booted and failed: no retry.
                echo "RVSOCK-INFO l2-accel=$L2_ACCEL${L2_ACCEL_WHY:+ ($L2_ACCEL_WHY)} log=$1 attempt=$attempt first-line=${t1}s init=${t2}s never-ready"
                return 1
            fi
            what="kernel started after ${t1}s, no RVSOCK-BEGIN within $((${L2_BEGIN_SECS:-120} * s))s"
        else
            what="no kernel output within ${first}s"
        fi
        echo "L2 boot attempt $attempt ($1, $L2_ACCEL) stalled: $what; its last lines and QEMU's:"
        tail -n 3 "$1" | cut -c1-160; tail -n 3 /tmp/qemu.out | cut -c1-160
        l2_stall_diag "$qemu" "$1"
        kill -9 "$qemu" 2>/dev/null; wait "$qemu" 2>/dev/null
        if [ "$L2_ACCEL" = kvm ] && [ "${L2_FALLBACK:-tcg}" = tcg ]; then
            kvm_stalls=$((kvm_stalls + 1))
            if [ $kvm_stalls -gt "${L2_KVM_RETRIES:-0}" ]; then
                L2_ACCEL=tcg L2_ACCEL_WHY="fallback after stall"
                export L2_ACCEL L2_ACCEL_WHY
                echo "L2 under KVM stalled: falling back to TCG (-accel tcg -cpu max) for this and every later L2 of $SCENARIO"
            fi
        fi
    done
    echo "RVSOCK-INFO l2-accel=$L2_ACCEL${L2_ACCEL_WHY:+ ($L2_ACCEL_WHY)} log=$1 attempt=$attempt never-booted"
    return 1
}

# cut_verdict NAME PID OUT HAPPENED WAITS: the verdict on a transfer (process PID, output in
# OUT) that an event must have cut with an error (HAPPENED not empty: the event took place
# while the transfer ran), waited for up to WAITS times 0.2 s.
cut_verdict() {
    local name=$1 pid=$2 out=$3 happened=$4 waits=$5 i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt "$waits" ]; do i=$((i + 1)); sleep 0.2; done
    sed 's/^RVSOCK-TEST/# transfer:/' "$out"
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"; echo "# transfer still running $((waits / 5)) s after the event"
        result fail "$name"
    elif [ -z "$happened" ]; then
        result fail "$name"   # the event did not take place
    elif grep -q "no progress" "$out"; then
        result fail "$name"   # the connection was not reset: it only timed out
    elif grep -q "RVSOCK-TEST fail" "$out"; then
        result ok "$name"
    else
        result fail "$name"   # finished before the event: nothing was tested
    fi
    wait "$pid" 2>/dev/null
}

# sleep_not_run: system_sleep_test's two results, failed, where it could not run.
sleep_not_run() {
    result fail sleep.inflight.guest
    result fail sleep.resume.g2h.guest
}

# system_sleep_test CID PORT_CUT PORT_AFTER SCALE: suspend to idle with /sys/power/pm_test at
# "devices" (every device is suspended and resumed, the machine does not sleep) while a stream
# to CID:PORT_CUT runs, then send one to CID:PORT_AFTER (the peer's receiver counts it). The
# guest driver's freeze must reset the connection its device forgets (the transfer ends with
# an error: never hangs, never just times out), its restore must bring the device back (in-tree's
# freeze/restore do both). The transfer's process is frozen across the sleep and finds its
# connection reset when it is thawed. Results sleep.inflight.guest, sleep.resume.g2h.guest.
system_sleep_test() {
    local cid=$1 cut=$2 after=$3 s=$4 sl slept=""
    if ! [ -w /sys/power/pm_test ] || ! grep -qw freeze /sys/power/state; then
        echo "# no /sys/power/pm_test or no suspend to idle in this kernel"
        sleep_not_run
        return
    fi
    echo devices > /sys/power/pm_test
    echo 1 > /sys/module/suspend/parameters/pm_test_delay 2>/dev/null || true
    rvsock-tests stream-send --cid "$cid" --port "$cut" --bytes 4g --seed 5 --timeout $((30 * s)) --name sleep.inflight > /tmp/sleep.out 2>&1 &
    sl=$!
    sleep $((3 * s))
    if ! kill -0 "$sl" 2>/dev/null; then
        echo "# the transfer ended before the sleep"   # e.g. its connect was refused
    elif echo freeze > /sys/power/state; then
        slept=1; echo "suspend to idle (pm_test devices) done"
    else
        echo "# suspend to idle failed"
    fi
    echo none > /sys/power/pm_test
    cut_verdict sleep.inflight.guest "$sl" /tmp/sleep.out "$slept" $((75 * s))
    rvsock-tests stream-send --cid "$cid" --port "$after" --bytes 8m --seed 6 --timeout $((300 * s)) --name sleep.resume.g2h.guest
}
