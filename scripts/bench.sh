#!/usr/bin/env bash
# `make bench`: rvsock against the in-tree C modules, same kernel, same VM, interleaved rounds.
# Prints per metric: each stack's median, the median of the per-round ratios and the spreads (scripts/bench-table.sh).
# Not part of `make check`. Under TCG only the ratios mean anything.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3} MS=${MS:-2000} IDLE=${IDLE:-} ONLY=${ONLY:-}
# FLAVOUR=kasan runs the same on the sanitizer kernel (slower everywhere; for latencies that
# must hold there too, e.g. ONLY=zc_completion_us: both percentiles).
FLAVOUR=${FLAVOUR:-release}
case "$FLAVOUR" in release|kasan) ;; *) die "FLAVOUR=$FLAVOUR: release or kasan" ;; esac
"$TOP/scripts/setup-toolchain.sh" >/dev/null
"$TOP/scripts/build-kernel.sh" "$FLAVOUR"
"$TOP/scripts/build-vsock-tests.sh" "$FLAVOUR"
"$TOP/scripts/build-tools.sh"
"$TOP/scripts/build-modules.sh" "$FLAVOUR"
mkdir -p "$TOP/build/logs$BUILD_TAG"
# TRANSPORTS: loopback (one VM, both stacks swapped in it) and/or nested (an L1 host VM with
# vhost and an L2 guest with virtio: guest-to-host and host-to-guest).
TRANSPORTS=${TRANSPORTS:-loopback nested}
# L2=c (nested): the rvsock VMs' L2 guest runs the in-tree guest driver, so the "rvsock" column
# is rvsock's host driver against in-tree's with the same guest.
L2=${L2:-}
case "$L2" in ''|c|rvsock) ;; *) die "L2=$L2: c or rvsock" ;; esac
LOG=$TOP/build/logs$BUILD_TAG/bench.log
: > "$LOG"
kdir=$(kernel_dir "$FLAVOUR")
# A sanitizer L2 boots slowly (check.sh: first line after ~25 s, init after 1-4 min).
L2_SLOW=""; [ "$FLAVOUR" = kasan ] && L2_SLOW="L2_KVM_RETRIES=2 L2_STALL_SECS=150 L2_BEGIN_SECS=480"
# PIN=1: each vCPU thread of the VM on a host CPU of its own (taskset). PIN=0 (default)
# leaves them to the scheduler: 5 rounds of loopback stream and rr each way on 7.3 spread
# 11-27 % unpinned against 31-106 % pinned (likely QEMU's other threads then crowd a pinned
# vCPU's core). The spread columns tell whether a run is stable enough to decide on.
PIN=${PIN:-0}
# THREADS=pin (loopback): inside the VM, the single-flow metrics' client on CPU 0 and their
# sinks on CPU 1 (`rvsock-tests bench --pin`); THREADS=free leaves them to the VM's scheduler.
THREADS=${THREADS:-free}
# KVMTRACE=1 (nested): each L1 records why its L2 exited during the guest-to-host metrics
# (KVM trace events: exit reasons, MSRs, MMIO/PIO addresses and values, injected interrupts;
# the L1's scheduler: which task preempted which ("preempt A by B") and woke which ("wake
# A -> B"), by name without numbers, so "CPU_0" is the L2's vCPU thread and "vhost" the vhost
# worker; the L2's own vsock interrupts and rvsock_virtio counters; the L1's rvsock counters
# as "l1-count dir/name delta", e.g. rvsock_vhost/rx_held) as RVSOCK-BENCH-KVMTRACE lines
# in the VM logs. A diagnosis (tracing costs time): use with ONLY= one metric. KVMTRACE=h2g
# traces the host-to-guest metrics instead (the L2's counters then over its serving half).
KVMTRACE=${KVMTRACE:-}
# ICOUNT=N: the VMs keep time by the instructions they execute (QEMU `-icount shift=N,sleep=off`:
# one instruction is 2^N ns, an idle VM's clock jumps to its next timer), so a metric counts
# the instructions both stacks need for it, unmoved by the load on this machine: spreads of
# 0-3 % where the default's are 10-60 %. The vCPUs then take turns on one thread (no two run
# at once): what it measures is the work per byte, message or connection, not how well two
# CPUs overlap; decide with it, report both. The guest TSC runs at the virtual clock's rate.
# Nothing else may differ between two runs of one VM: no RDRAND/RDSEED (QEMU answers them from
# this machine's random source; the guest kernel then seeds its own from the TSC and interrupt
# timings, now reproducible) and a fixed real-time clock (the kernel mixes the boot time in).
ICOUNT=${ICOUNT:-}
ACCEL="-accel tcg -cpu max"
TSCK=$(l1_tsc_karg)
if [ -n "$ICOUNT" ]; then
    case "$ICOUNT" in [0-9]|10) ;; *) die "ICOUNT=$ICOUNT: a shift of 0-10" ;; esac
    ACCEL="-accel tcg,thread=single -icount shift=$ICOUNT,sleep=off -cpu max,-rdrand,-rdseed -rtc base=2026-01-01T00:00:00,clock=vm"
    TSCK="tsc_early_khz=$((1000000 >> ICOUNT))"
fi
NCPU=$(nproc)
pin_vcpus() { # PID of `timeout` running QEMU
    local q="" tid comm i
    for i in $(seq 1 100); do
        q=$(pgrep -P "$1" qemu-system 2>/dev/null | head -n 1) || true
        [ -n "$q" ] && ls "/proc/$q/task" > /dev/null 2>&1 && grep -qs '^CPU 1/TCG' /proc/"$q"/task/*/comm && break
        sleep 0.1
    done
    [ -n "$q" ] || return 0
    for tid in $(ls "/proc/$q/task"); do
        comm=$(cat "/proc/$q/task/$tid/comm" 2>/dev/null) || continue
        case "$comm" in "CPU "*/TCG) i=${comm#CPU }; i=${i%/TCG}; taskset -p -c $((i % NCPU)) "$tid" > /dev/null ;; esac
    done
}
bench_vm() { # LOG MEM IMAGE SCRIPT KERNEL-ARGS...
    local tlog=$1 mem=$2 img=$3 script=$4 try pid smp=2,sockets=2; shift 4
    # Two vCPUs (check.sh says why -smp 2 alone gave one); a nested L1 one, as in check.sh.
    [ "$script" = bench-nested ] && smp=1
    # tsc=reliable: with two vCPUs in two sockets of a non-Intel CPU the kernel takes the TSCs
    # for unsynchronized ("Marking TSC unstable due to TSCs unsynchronized"; TCG's TSC is one
    # host clock for every vCPU) and keeps time with jiffies: 4 ms steps, every latency 0 or
    # 4,000 us. A one-vCPU nested L1 too: under load its clocksource watchdog finds the TSC
    # "skewed" against refined-jiffies (the emulated timer ticks are late, not the TSC) and
    # switches to jiffies minutes into the run (seen on 6.12 in every L1 of a full run).
    local tsc=tsc=reliable
    # A nested L2 boot sometimes stalls before its init runs (boot_l2 retries it 3 times in
    # the same L1); then try a fresh L1 VM, up to 3 times.
    for try in 1 2 3; do
        timeout -s KILL 7200 qemu-system-x86_64 $ACCEL -m "$mem" -smp "$smp" -nodefaults -no-user-config \
            -name bench,debug-threads=on -display none -nic none -no-reboot -serial "file:$tlog" \
            -kernel "$kdir/arch/x86/boot/bzImage" -initrd "$img" \
            -append "console=ttyS0 quiet panic=-1 rvsock_scenario=bench rvsock_role=l1 rvsock_script=$script $tsc rvsock_ms=$MS ${IDLE:+rvsock_idle=$IDLE} ${ONLY:+rvsock_only=$ONLY} $*" \
            < /dev/null > /dev/null 2>&1 &
        pid=$!
        [ "$PIN" = 0 ] || pin_vcpus "$pid"
        wait "$pid" || true
        grep -aq 'RVSOCK-TEST ok bench-complete' "$tlog" && break
        grep -aq 'L2 never got ready' "$tlog" && [ $try -lt 3 ] && { echo "L2 boot stalled ($tlog), new VM"; continue; }
        echo "benchmark VM did not complete, see $tlog"; exit 1
    done
    cat "$tlog" >> "$LOG"
    grep -a '^# bench' "$tlog" | sed 's/^/failed metric: /' || true
    # Without the TSC (its calibration can fail on a busy machine: l1_tsc_karg) the VM keeps
    # time in jiffies, 4 ms steps: latencies read 0 or 4000 us and rates get coarse.
    local cs
    cs=$(tr -d '\r' < "$tlog" | sed -n 's/.*clocksource: Switched to clocksource //p' | tail -n 1)
    [ "$cs" = tsc ] || echo "warning: $tlog kept time with clocksource '${cs:-?}', not tsc: its timings are coarse"
}
for t in $TRANSPORTS; do
    case $t in
        loopback)
            # One VM; the stacks are swapped in it round by round.
            log "benchmark ($t, $FLAVOUR kernel): $ROUNDS rounds of C and rvsock (odd rounds C first), ${MS} ms per metric"
            bench_vm "$TOP/build/logs$BUILD_TAG/bench-$t.log" 2G "$("$TOP/scripts/mkinitramfs.sh" "$FLAVOUR" both)" bench \
                rvsock_mods=both rvsock_rounds=$ROUNDS rvsock_threads=$THREADS $TSCK ;;
        nested)
            # An L1 host VM and its L2 guest per stack and round, C and rvsock alternating.
            imgc=$("$TOP/scripts/mkinitramfs.sh" "$FLAVOUR" c c)
            imgr=$("$TOP/scripts/mkinitramfs.sh" "$FLAVOUR" rvsock "${L2:-rvsock}")
            for r in $(seq 1 "$ROUNDS"); do
                order="c rvsock"; [ $((r % 2)) = 0 ] && order="rvsock c"   # as the loopback VM
                for st in $order; do
                    log "benchmark (g2h, h2g): round $r, $st, ${MS} ms per metric"
                    img=$imgc l2=; [ $st = rvsock ] && img=$imgr l2=${L2:+rvsock_l2mods=$L2}
                    bench_vm "$TOP/build/logs$BUILD_TAG/bench-$t-$st-$r.log" 3G "$img" bench-nested \
                        rvsock_mods=$st rvsock_round=$r $TSCK ${ICOUNT:+rvsock_icount=$ICOUNT rvsock_l2_accel=tcg} $L2_SLOW $l2 ${KVMTRACE:+rvsock_kvmtrace=$KVMTRACE}
                done
            done ;;
        *) echo "unknown transport $t"; exit 2 ;;
    esac
done
"$TOP/scripts/bench-table.sh" "$LOG"
# The L2 guest's vsock interrupts while the host ran its h2g metrics (per stack and vector,
# summed over rounds): with ONLY=connect_rate, interrupts per connection.
{ grep -a '^RVSOCK-BENCH-IRQ ' "$LOG" || true; } | tr -d '\r' | awk '{ n[$2 " " $5] += $6 } END { for (k in n) print "L2 interrupts during h2g (" k "): " n[k] }' | sort
# The scheduler's view of connect_rate per connection (mean over the rounds): the client
# thread, and the vhost workers where the client is the nested host (h2g): CPU time, time
# runnable but waiting for a CPU, and how often the thread was preempted.
{ grep -a '^RVSOCK-BENCH-SCHED ' "$LOG" || true; } | tr -d '\r' | awk '
    { k = $4 " " $5 " " $6 " " $2; r[k] += $7; w[k] += $8; p[k] += $9; n[k]++ }
    END { for (k in n) printf "sched per connection (%s): run %.1f us, waiting %.1f us, preempted %.3f times\n", k, r[k] / n[k], w[k] / n[k], p[k] / n[k] }' | sort
# Where each machine's CPU time went per MiB moved (streams, sendfile) or per 1000 messages
# (SEQPACKET) (mean over the rounds, C / rvsock; client and sink side: nested, one of them is
# the L1 host, whose `qemu` class is the L2 guest's whole vCPU time): bench (the client or sink
# process), vhost workers, qemu, kworkers, ksoftirqd, other threads, unattributed (busy time
# no thread was charged), bench-runs (how many times the bench process's threads got a CPU:
# wakeups, mostly; a count per unit), pinned and pinned-copied (rvsock's chunks of plain sends
# that went as pinned pages, and those the sender copied itself after all), virtio-tx-packets
# and virtio-tx-queued (rvsock's guest driver: packets sent, and those posted by its tx work;
# counts per unit, from debugfs); on the L1 host also KVM's counts of the L2's exits, the
# interrupts injected into it and its halts (l2-*, counts per unit). Every metric's
# lines are in the log (RVSOCK-BENCH-CPU).
{ grep -a '^RVSOCK-BENCH-CPU ' "$LOG" || true; } | tr -d '\r' | awk '
    NF == 8 && ($5 ~ /^stream_tput_/ || $5 == "sendfile_tput" || $5 ~ /^seqpacket_rate_/) {
        k = $4 " " $5 ", " $6; v[k, $7, $2] += $8; n[k, $7, $2]++
        if (!(k in seen)) { seen[k] = 1; keys[++nk] = k }
        if (!($7 in cs)) { cs[$7] = 1; cls[++nc] = $7 }
    }
    function m(k, c, s) { return n[k, c, s] ? sprintf("%.0f", v[k, c, s] / n[k, c, s]) : "-" }
    END {
        for (i = 1; i <= nk; i++) {
            line = "CPU us per " (keys[i] ~ /seqpacket/ ? "1000 messages" : "MiB") " (" keys[i] "), C / rvsock:"
            for (j = 1; j <= nc; j++) line = line (j > 1 ? "," : "") " " cls[j] " " m(keys[i], cls[j], "c") " / " m(keys[i], cls[j], "rvsock")
            print line
        }
    }' | sort
# MSG_ZEROCOPY sends the stack copied after all (summed over the rounds): a copied send's
# completion can come before sendmsg returns, so zc_completion_us reads low for it.
{ grep -a '^# zc_completion ' "$LOG" || true; } | tr -d '\r' | awk '
    { k = $4 " " $3; sub(":", "", k); c[k] += $5; n[k] += $7 }
    END { for (k in n) printf "zc completions copied (%s): %d of %d\n", k, c[k], n[k] }' | sort
# connect_rate's refused connects (the listener's backlog was full; summed over the rounds).
{ grep -a '^# connect_rate ' "$LOG" || true; } | tr -d '\r' | awk '
    { k = $4 " " $3; sub(":", "", k); r[k] += $5; n[k] += $10 }
    END { for (k in n) printf "connect_rate resets (%s): %d for %d connections\n", k, r[k], n[k] }' | sort
# Where idle_mem_per_conn goes: the slab caches that grew by >= 4 bytes per connection
# (mean over the rounds that reported the cache), C against rvsock.
{ grep -a '^RVSOCK-BENCH-SLAB ' "$LOG" || true; } | tr -d '\r' | awk '
    { k = $4 " " $5; s[k " " $2] += $6; n[k " " $2]++; keys[k] = 1 }
    END { for (k in keys) { c = n[k " c"] ? s[k " c"] / n[k " c"] : 0; r = n[k " rvsock"] ? s[k " rvsock"] / n[k " rvsock"] : 0
          printf "idle connection slab (%s): C %.1f, rvsock %.1f bytes\n", k, c, r } }' | sort
