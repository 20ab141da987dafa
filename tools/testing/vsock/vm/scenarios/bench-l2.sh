# `make bench`, the L2 guest of bench-nested.sh: serves the host-to-guest metrics, then (when
# the host says go) runs the guest-to-host clients against the host's servers.
. /rvsock/scenarios/bench-common.sh
ROUND=$(arg rvsock_round); MS=$(arg rvsock_ms); IDLE=$(arg rvsock_idle); ONLY=$(arg rvsock_only)
load_stack virtio || return
# The metrics are tagged with the L1 host's stack (bench.sh L2=c runs an in-tree guest here).
STACK=$(arg rvsock_stack); MODS=${STACK:-$MODS}
rvsock-tests bench-serve --port 7200 --secs 3600 > /tmp/serve.out 2>&1 &
serve=$!
perf=
want_perf && { vsock_perf --port 7400 --bytes 256M > /tmp/perf-h2g.rx 2>&1 & perf=$!; }
rvsock-tests stream-recv --port 7399 --count 1 --timeout $((1800 * $(l2_scale))) --name bench-go > /tmp/go.out 2>&1 &
go=$!
sleep 1
# Interrupts of the vsock device while the host runs its h2g metrics (per vector: rx, tx,
# event, config), printed as "RVSOCK-BENCH-IRQ stack round h2g vector count".
irq_snap() { grep -i 'virtio' /proc/interrupts | awk '{ s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print $NF, s }'; }
irq_snap > /tmp/irq0
KVMTRACE=$(arg rvsock_kvmtrace)
# KVMTRACE: the guest's rvsock counters over the traced half (`1` g2h, `h2g` the host's half).
cnt_snap() { for f in /sys/kernel/debug/rvsock_virtio/*; do [ -f "$f" ] && read -r v < "$f" && echo "${f##*/} $v"; done 2>/dev/null; }
cnt_diff() {
    cnt_snap | awk -v s=$MODS -v r=$ROUND 'NR == FNR { a[$1] = $2; next } $2 ~ /^[0-9]+$/ { print "RVSOCK-BENCH-KVMTRACE " s " " r " l2-count " $1 " " $2 - a[$1] }' /tmp/cnt1 -
}
[ "$KVMTRACE" = h2g ] && cnt_snap > /tmp/cnt1
echo "RVSOCK-L2-READY"
reap "$go" $((1800 * $(l2_scale)))
irq_snap | awk -v s=$MODS -v r=$ROUND 'NR == FNR { a[$1] = $2; next } { print "RVSOCK-BENCH-IRQ " s " " r " h2g " $1 " " $2 - a[$1] }' /tmp/irq0 -
[ "$KVMTRACE" = h2g ] && cnt_diff
[ -z "$perf" ] || reap "$perf" 10
touch /tmp/perf-h2g.rx
awk -v s=$MODS -v r=$ROUND '/rx performance/ {print "RVSOCK-BENCH " s " " r " h2g vsock_perf_rx " $3 " Gbit/s higher"}' /tmp/perf-h2g.rx
# KVMTRACE=1: the guest's vsock interrupts and rvsock counters over the g2h metrics too.
if [ "$KVMTRACE" = 1 ]; then
    irq_snap > /tmp/irq1
    cnt_snap > /tmp/cnt1
fi
rvsock-tests bench --remote --peer-cid 2 --port 7300 --ms "$MS" --idle-conns "$IDLE" ${ONLY:+--only "$ONLY"} | sed -e "s/^RVSOCK-BENCH\(-SLAB\|-SCHED\|-CPU\)\{0,1\} /RVSOCK-BENCH\1 $MODS $ROUND g2h /" -e "s/^# flood /# flood g2h /" -e "s/^# zc_completion: /# zc_completion $MODS g2h: /" -e "s/^# connect_rate: /# connect_rate $MODS g2h: /"
want_perf && vsock_perf --sender 2 --port 7401 --bytes 256M > /tmp/perf-g2h.tx 2>&1
kill "$serve" 2>/dev/null
# The server's own lines (the h2g flood's slab caches and the stream sinks' CPU on this side).
grep -a '^# flood' /tmp/serve.out | sed 's/^# flood /# flood h2g /'
grep -a '^RVSOCK-BENCH-CPU ' /tmp/serve.out | sed "s/^RVSOCK-BENCH-CPU /RVSOCK-BENCH-CPU $MODS $ROUND h2g /"
if [ "$KVMTRACE" = 1 ]; then
    irq_snap | awk -v s=$MODS -v r=$ROUND 'NR == FNR { a[$1] = $2; next } { print "RVSOCK-BENCH-KVMTRACE " s " " r " l2-irq " $1 " " $2 - a[$1] }' /tmp/irq1 -
    cnt_diff
fi
echo "RVSOCK-BENCH-DONE"
# Many guests (rvsock_two=1): with the second guest (bench-l2-second.sh), stream to the host.
[ "$(arg rvsock_two)" = 1 ] && two_guests_stream RVSOCK-L2-READY2 3
