# Soak (issue 7), one VM over loopback: `rvsock-tests soak` (10,000 short connections, STREAM
# and SEQPACKET, random sizes and close orders, 50 at a time), then 20 rounds of unloading and
# reloading the transport and the core (odd rounds with sockets open: rmmod must be refused
# and the sockets keep working; even rounds after a burst of traffic: rmmod must succeed once
# the closed sockets stopped lingering). The AF_VSOCK slab cache must be back at its starting
# object count after the soak and after the rounds. kmemleak is scanned after the soak (while
# the modules are loaded, so backtraces have symbols) and again at the end of the VM (init);
# the harness fails the scenario on any report.
# Always prints 21 (soak) + 1 + 20 + 1 = 43 results. Kernel command line knobs (debugging):
# rvsock_cycles=N rvsock_conc=C rvsock_seed=S rvsock_only=MODE[,MODE] (passed to --only).
case "$MODS" in
    c) TRANSPORT=vsock_loopback; MODLIST=vsock_loopback,vmw_vsock_virtio_transport_common,vsock ;;
    *) TRANSPORT=rvsock_loopback; MODLIST=rvsock_loopback,rvsock ;;
esac
CYCLES=$(arg rvsock_cycles); CYCLES=${CYCLES:-10000}
CONC=$(arg rvsock_conc); CONC=${CONC:-50}
SEED=$(arg rvsock_seed); SEED=${SEED:-1}
ONLY=$(arg rvsock_only)
ROUNDS=20

# slab_objs, slab_back: lib.sh.

# unload_all SECONDS: rmmod every module of the stack in order, each retried for up to
# SECONDS (closed sockets pin the transport while they linger).
unload_all() {
    for m in $(echo "$MODLIST" | tr , ' '); do
        i=0
        while ! rmmod "$m" 2>/tmp/rmmod.err; do
            i=$((i + 1))
            if [ $i -gt $(($1 * 4)) ]; then echo "rmmod $m still fails after ${1}s: $(cat /tmp/rmmod.err)"; return 1; fi
            sleep 0.25
        done
        [ $i -gt 0 ] && echo "rmmod $m succeeded after $i retries"
    done
    return 0
}

# stack_gone: no module of the stack is loaded and the AF_VSOCK cache was destroyed.
stack_gone() {
    for m in $(echo "$MODLIST" | tr , ' '); do
        if grep -q "^$m " /proc/modules; then echo "$m still loaded"; return 1; fi
    done
    if grep -q '^AF_VSOCK ' /proc/slabinfo; then echo "the AF_VSOCK cache outlived the core"; return 1; fi
    return 0
}

kmemleak_checkpoint() {
    [ -w /sys/kernel/debug/kmemleak ] || return 0
    scan_kmemleak
    echo "kmemleak: scanned after the soak ($(grep -c '^unreferenced object' /sys/kernel/debug/kmemleak) reports)"
    echo clear > /sys/kernel/debug/kmemleak
}

load_stack loopback || return
if [ -L /sys/kernel/slab/AF_VSOCK ]; then
    echo "AF_VSOCK is merged into $(readlink /sys/kernel/slab/AF_VSOCK): its counts include other objects (boot with slab_nomerge)"
fi
START=$(slab_objs)
echo "AF_VSOCK: $START active objects at the start"

t0=$(date +%s)
timeout -s KILL 3000 rvsock-tests soak --cycles "$CYCLES" --concurrency "$CONC" --seed "$SEED" --timeout 60 ${ONLY:+--only "$ONLY"}
echo "soak exited $? after $(($(date +%s) - t0))s"
if [ -r /proc/lockdep_stats ]; then
    # Proof that lockdep watched our locks (it switches itself off after its first report).
    echo "lockdep: $(grep -o 'debug_locks: *[0-9]*' /proc/lockdep_stats), $(grep -c 'rvsock\|AF_VSOCK' /proc/lockdep) vsock lock classes"
fi
slab_back slab-after-soak "$START" 30
kmemleak_checkpoint

t0=$(date +%s)
r=1
while [ $r -le $ROUNDS ]; do
    name=rmmod-round-$(printf %02d $r)
    ok=1
    if [ $((r % 2)) -eq 1 ]; then
        # With sockets open: each rmmod refused, sockets still work, then clean unloads.
        nmods=$(echo "$MODLIST" | tr , '\n' | wc -l)
        timeout -s KILL 300 rvsock-tests rmmod-while-open --modules "$MODLIST" --cid 1 --timeout 20 > /tmp/round.out 2>&1
        rc=$?
        nok=$(grep -c '^RVSOCK-TEST ok ' /tmp/round.out)
        if [ $rc -ne 0 ] || [ "$nok" -ne $((2 * nmods + 1)) ]; then
            ok=0; echo "$name: rmmod-while-open exited $rc with $nok of $((2 * nmods + 1)) checks passed:"
            sed 's/^RVSOCK-TEST /  sub: /' /tmp/round.out
        fi
    else
        # After a burst of traffic, with everything closed: the unloads must succeed once
        # the closed sockets stop lingering.
        timeout -s KILL 300 rvsock-tests soak --cycles 100 --concurrency 10 --seed "$r" --timeout 30 > /tmp/round.out 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then
            ok=0; echo "$name: traffic burst failed (exit $rc):"
            grep -v '^RVSOCK-TEST ok' /tmp/round.out | sed 's/^RVSOCK-TEST /  sub: /'
        fi
        unload_all 15 || ok=0
    fi
    stack_gone || ok=0
    if ! modprobe "$TRANSPORT"; then ok=0; echo "$name: modprobe $TRANSPORT failed"; fi
    if [ $ok = 1 ]; then result ok "$name"; else result fail "$name"; fi
    r=$((r + 1))
done
echo "$ROUNDS unload/reload rounds took $(($(date +%s) - t0))s"
slab_back slab-after-rmmod-rounds "$START" 30
