# `make bench`, guest-to-host and host-to-guest, one stack per VM: this L1 host runs an L2
# guest over vhost-vsock-pci with the same stack on both sides (MODS=c: the in-tree
# vhost_vsock here and vmw_vsock_virtio_transport in L2; MODS=rvsock: rvsock_vhost and
# rvsock_virtio). scripts/bench.sh alternates C and rvsock VMs for each round. The host is the
# client of the h2g metrics (the guest serves), the guest of the g2h ones (the host serves);
# CPU time per GiB is the host's (it includes the guest's vCPUs). Each metric line is tagged
# with stack, round and transport.
ROUND=$(arg rvsock_round); ROUND=${ROUND:-1}
MS=$(arg rvsock_ms); MS=${MS:-2000}
IDLE=$(arg rvsock_idle); IDLE=${IDLE:-10000}
ONLY=$(arg rvsock_only)
KVMTRACE=$(arg rvsock_kvmtrace)
load_stack vhost || return
rvsock-tests bench-serve --port 7300 --secs 3600 > /tmp/serve.out 2>&1 &
serve=$!
perf=
want_perf && { vsock_perf --port 7401 --bytes 256M > /tmp/perf-g2h.rx 2>&1 & perf=$!; }
# Many guests: after its own metrics the guest streams to the host together with a second L2
# guest (CID 4), two_guests_tput_64k their sum (unless ONLY leaves it out).
TWO=0; case "${ONLY:-two_guests}" in *two_guests*) TWO=1 ;; esac
L2MODS=$(arg rvsock_l2mods); L2MODS=${L2MODS:-$MODS} L2_APPEND="rvsock_stack=$MODS rvsock_round=$ROUND rvsock_ms=$MS rvsock_idle=$IDLE${ONLY:+ rvsock_only=$ONLY} rvsock_two=$TWO${KVMTRACE:+ rvsock_kvmtrace=$KVMTRACE}"
# ICOUNT (scripts/bench.sh, rvsock_icount): the L2 runs under TCG here (a KVM L2 hung at its
# first vsock round trip when the L1 counted instructions), and its TSC is ours, at the rate
# scripts/bench.sh gave this L1: it needs no calibration either (it fails in a TCG L2, which
# then keeps time in 4 ms jiffies).
[ -n "$(arg rvsock_icount)" ] && L2_APPEND="$L2_APPEND tsc=reliable tsc_early_khz=$(arg tsc_early_khz)"
# No TCG fallback when a KVM L2 stalls (boot_l2): the C and rvsock VMs of a round must run
# their guests under the same accelerator for the ratios to mean anything; scripts/bench.sh
# starts a fresh VM instead. rvsock_l2_accel=tcg still forces TCG for every VM.
L2_FALLBACK=no
two_guests() { # the host's half of the two-guests phase (bench-common.sh has the guests')
    local n
    wait_log /tmp/l2.log RVSOCK-L2-READY2 $((1800 * $(l2_scale))) || { echo "# bench two_guests_tput_64k failed: the first guest never got to it"; return; }
    if ! boot_l2 /tmp/l2b.log 4 512M bench-l2-second; then
        echo "# bench two_guests_tput_64k failed: the second guest never got ready"; tail -n 20 /tmp/l2b.log
        rvsock-tests stream-send --cid 3 --port 7398 --bytes 1 --name bench-go2 > /dev/null
        return
    fi
    l2b=$qemu
    rvsock-tests stream-send --cid 3 --port 7398 --bytes 1 --name bench-go2 > /dev/null &
    n=$!
    rvsock-tests stream-send --cid 4 --port 7398 --bytes 1 --name bench-go2 > /dev/null
    wait "$n"
    wait_log /tmp/l2.log RVSOCK-BENCH-DONE2 $((600 * $(l2_scale)))
    wait_log /tmp/l2b.log RVSOCK-BENCH-DONE2 $((600 * $(l2_scale)))
    reap "$l2b" $((300 * $(l2_scale)))
    tr -d '\r' < /tmp/l2b.log | grep -a '^# bench'
    # Both guests' 64 KiB stream rates, summed (both ran for MS ms from the same go).
    cat /tmp/l2.log /tmp/l2b.log | tr -d '\r' | awk -v s=$MODS -v r=$ROUND '
        $1 == "RVSOCK-BENCH-GUEST" && $5 == "guests_tput_64k" { sum += $6; n++ }
        END { if (n == 2) print "RVSOCK-BENCH " s " " r " g2h two_guests_tput_64k " sum " MiB/s higher"
              else print "# bench two_guests_tput_64k failed: " n " of 2 guests reported" }'
}
# KVMTRACE (scripts/bench.sh): why the L2 exits, from KVM's trace events here: exits by
# reason, MSRs written or read, MMIO/PIO addresses, injected interrupts, as
# "RVSOCK-BENCH-KVMTRACE stack round what count" (a diagnosis, not a metric). `1` traces the
# g2h metrics, `h2g` the h2g ones.
kt=/sys/kernel/tracing; [ -d $kt/events ] || kt=/sys/kernel/debug/tracing
# This side's rvsock counters (vhost driver and core, debugfs; none for the in-tree stack),
# reported as deltas over the traced metrics: "l1-count dir/name delta".
l1_cnt() { for f in /sys/kernel/debug/rvsock_vhost/* /sys/kernel/debug/rvsock/*/*; do [ -f "$f" ] && read -r v < "$f" && echo "${f#/sys/kernel/debug/} $v"; done 2>/dev/null; }
kt_start() {
    l1_cnt > /tmp/l1cnt0
    [ -d $kt/events/kvm ] || return 0
    echo 65536 > $kt/buffer_size_kb; echo > $kt/trace
    for e in kvm_exit kvm_msr kvm_mmio kvm_fast_mmio kvm_pio kvm_inj_virq; do
        [ -e $kt/events/kvm/$e/enable ] && echo 1 > $kt/events/kvm/$e/enable
    done
    for e in sched_switch sched_wakeup; do
        [ -e $kt/events/sched/$e/enable ] && echo 1 > $kt/events/sched/$e/enable
    done
    echo 1 > $kt/tracing_on
}
kt_dump() {
    l1_cnt | awk -v s=$MODS -v r=$ROUND 'NR == FNR { a[$1] = $2; next } $2 ~ /^[0-9]+$/ && $2 != a[$1] { print "RVSOCK-BENCH-KVMTRACE " s " " r " l1-count " $1 " " $2 - a[$1] }' /tmp/l1cnt0 -
    [ -d $kt/events/kvm ] || return 0
    echo 0 > $kt/tracing_on
    awk -v s=$MODS -v r=$ROUND '
        / kvm_exit: / { for (i = 1; i < NF; i++) if ($i == "reason") { n["exit " $(i + 1)]++; break } }
        / kvm_msr: / { for (i = 1; i <= NF; i++) if ($i ~ /^msr_(read|write)$/) { n[$i " " $(i + 1)]++; break } }
        / kvm_(fast_)?mmio: / { for (i = 1; i <= NF; i++) if ($i == "gpa") { n["mmio " $(i + 1)]++; break } }
        / kvm_pio: / { for (i = 1; i <= NF; i++) if ($i == "at") { n["pio " $(i + 1) " " $NF]++; break } }
        / kvm_inj_virq: / { n["inj_virq"]++ }
        # Who preempts whom (a switch away from a still-runnable task) and who wakes whom,
        # task names without their numbers ("vhost-123" -> "vhost", "kworker/0:1H" -> "kworker").
        function task(s) { sub(/[-\/].*$/, "", s); gsub(/ /, "_", s); return s }
        / sched_switch: / && match($0, /prev_comm=.* prev_pid=/) {
            p = substr($0, RSTART + 10, RLENGTH - 20)
            if (match($0, /prev_state=R\+? ==> next_comm=.* next_pid=/)) {
                x = substr($0, RSTART, RLENGTH - 10); sub(/^.*next_comm=/, "", x)
                n["preempt " task(p) " by " task(x)]++
            }
        }
        / sched_wakeup: / && match($0, /comm=.* pid=/) {
            w = substr($0, RSTART + 5, RLENGTH - 10)
            y = $0; sub(/ +\[[0-9]+\].*$/, "", y); sub(/^ +/, "", y); sub(/-[0-9]+$/, "", y)
            n["wake " task(y) " -> " task(w)]++
        }
        END { for (k in n) print "RVSOCK-BENCH-KVMTRACE " s " " r " " k " " n[k] }' $kt/trace | sort -k5
}
if boot_l2 /tmp/l2.log 3 1G bench-l2; then
    l2=$qemu
    [ "$KVMTRACE" = h2g ] && kt_start
    rvsock-tests bench --remote --peer-cid 3 --port 7200 --ms "$MS" --idle-conns "$IDLE" --cpu-here ${ONLY:+--only "$ONLY"} |
        sed -e "s/^RVSOCK-BENCH\(-SLAB\|-SCHED\|-CPU\)\{0,1\} /RVSOCK-BENCH\1 $MODS $ROUND h2g /" -e "s/^# flood /# flood h2g /" \
            -e "s/^# zc_completion: /# zc_completion $MODS h2g: /" -e "s/^# connect_rate: /# connect_rate $MODS h2g: /"
    [ "$KVMTRACE" = h2g ] && kt_dump
    want_perf && vsock_perf --sender 3 --port 7400 --bytes 256M > /tmp/perf-h2g.tx 2>&1
    if [ "$KVMTRACE" = 1 ]; then
        kt_start
    fi
    # Tell the guest to run its half (the g2h clients): a 1-byte stream to its port 7399.
    rvsock-tests stream-send --cid 3 --port 7399 --bytes 1 --name bench-go > /dev/null
    if [ "$KVMTRACE" = 1 ]; then
        wait_log /tmp/l2.log RVSOCK-BENCH-DONE $((600 * $(l2_scale)))
        kt_dump
    fi
    [ $TWO = 1 ] && two_guests
    reap "$l2" $((1800 * $(l2_scale)))
    [ -z "$perf" ] || reap "$perf" 10
    touch /tmp/perf-g2h.rx
    awk -v s=$MODS -v r=$ROUND '/rx performance/ {print "RVSOCK-BENCH " s " " r " g2h vsock_perf_rx " $3 " Gbit/s higher"}' /tmp/perf-g2h.rx
    # The guest's lines (its metrics are tagged already).
    tr -d '\r' < /tmp/l2.log | grep -a '^RVSOCK-BENCH \|^RVSOCK-BENCH-SLAB \|^RVSOCK-BENCH-SCHED \|^RVSOCK-BENCH-CPU \|^RVSOCK-BENCH-IRQ \|^RVSOCK-BENCH-KVMTRACE \|^# bench\|^# flood\|^# zc_completion\|^# connect_rate'
    if grep -aq RVSOCK-BENCH-DONE /tmp/l2.log; then
        result ok bench-complete
    else
        echo "L2 log:"; grep -av '^\[' /tmp/l2.log | tail -n 40
        result fail bench-complete
    fi
else
    echo "L2 never got ready:"; tail -n 40 /tmp/l2.log
    result fail bench-complete
fi
kill "$serve" "$perf" 2>/dev/null
# The server's own lines (the g2h flood's slab caches and the stream sinks' CPU on this side).
grep -a '^# flood' /tmp/serve.out | sed 's/^# flood /# flood g2h /'
grep -a '^RVSOCK-BENCH-CPU ' /tmp/serve.out | sed "s/^RVSOCK-BENCH-CPU /RVSOCK-BENCH-CPU $MODS $ROUND g2h /"
