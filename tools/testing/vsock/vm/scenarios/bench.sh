# `make bench`, loopback: alternate the in-tree C stack and rvsock in one VM, ROUNDS times,
# so machine noise hits both; every metric line is tagged with its stack and round.
ROUNDS=$(arg rvsock_rounds); ROUNDS=${ROUNDS:-3}
MS=$(arg rvsock_ms); MS=${MS:-2000}
ONLY=$(arg rvsock_only)
# THREADS=pin: the single-flow metrics' client on CPU 0, their sinks on CPU 1 (`--pin`).
PINT=; [ "$(arg rvsock_threads)" = pin ] && PINT=--pin
swap_out() { # module... : unload, retrying while closed sockets linger (close timeout)
    for m in "$@"; do
        i=0
        while grep -q "^$m " /proc/modules && ! rmmod "$m" 2>/dev/null; do
            i=$((i + 1)); [ $i -gt 60 ] && { echo "cannot unload $m"; return 1; }; sleep 0.5
        done
    done
}
run_stack() { # stack round
    rvsock-tests bench --peer-cid 1 --ms "$MS" --idle-conns 10000 $PINT ${ONLY:+--only "$ONLY"} |
        sed -e "s/^RVSOCK-BENCH\(-SLAB\|-SCHED\|-CPU\)\{0,1\} /RVSOCK-BENCH\1 $1 $2 loopback /" -e "s/^# zc_completion: /# zc_completion $1 loopback: /" -e "s/^# connect_rate: /# connect_rate $1 loopback: /"
    want_perf || return 0
    vsock_perf --port 7100 --bytes 256M > /tmp/perf.rx 2>&1 &
    sleep 0.3
    vsock_perf --sender 1 --port 7100 --bytes 256M > /tmp/perf.tx 2>&1
    wait
    awk -v s="$1" -v r="$2" '/rx performance/ {print "RVSOCK-BENCH " s " " r " loopback vsock_perf_rx " $3 " Gbit/s higher"}' /tmp/perf.rx
}
run_c() {
    modprobe vsock_loopback && run_stack c "$1"
    swap_out vsock_loopback vmw_vsock_virtio_transport_common vsock
}
run_rvsock() {
    modprobe rvsock_loopback && run_stack rvsock "$1"
    swap_out rvsock_loopback rvsock
}
# C first in odd rounds, rvsock first in even ones: a machine that slows down (or speeds up)
# over the run favours neither stack.
r=1
while [ $r -le "$ROUNDS" ]; do
    if [ $((r % 2)) = 1 ]; then run_c $r; run_rvsock $r; else run_rvsock $r; run_c $r; fi
    r=$((r + 1))
done
result ok bench-complete
