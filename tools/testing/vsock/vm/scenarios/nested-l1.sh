# Nested, L1 (the host): vhost transport here, an L2 guest under QEMU with vhost-vsock-pci.
# Direction 1: vsock_test server in L2, client here. Direction 2: server here, client in L2.
# The control channel is TCP over QEMU user networking (hostfwd for L1->L2, 10.0.2.2 for L2->L1).
# Every wait below is multiplied by S (l2_scale: 1 with KVM L2 guests, 4 when they run under
# TCG, forced with rvsock_l2_accel=tcg or after a KVM stall, see boot_l2).
# Then two guests at once: a second L2 (CID 4) joins, a third QEMU asking for CID 3 (taken)
# must be refused, and streams run to and from both guests at the same time (not when
# NESTED_TWO_GUESTS=no: the sanitizer scenarios, whose second KVM L2 takes minutes to boot;
# the release scenarios cover it).
L2MODS=$(arg rvsock_l2mods)
TWO=${NESTED_TWO_GUESTS:-yes}
# no_console_suspend: the L2 goes through a system sleep (below); a hang or a report in its
# driver's freeze or restore then reaches its log at once.
export L2_APPEND="${L2_APPEND:-} NESTED_TWO_GUESTS=$TWO no_console_suspend"
load_stack vhost || return
vsock_test --mode=server --control-port=1235 --peer-cid=3 $(nested_skips) > /tmp/h-server.out 2>&1 &
hserver=$!
if boot_l2 /tmp/l2.log 3 512M nested-l2 \
    $(l2_net tcp:127.0.0.1:1234-10.0.2.15:1234); then
    qemu_a=$qemu
    S=$(l2_scale)
    VSOCK_TEST_TIMEOUT=$((900 * S))
    run_vsock_test "guest-server/" /tmp/h-client.out --mode=client --control-host=127.0.0.1 --control-port=1234 --peer-cid=3 $(nested_skips)
    reap_server "$hserver" $((900 * S)) /tmp/h-server.out   # direction 2 (the L2 client) is done

    if [ "$TWO" = yes ]; then
        # Two guests at once. The first L2 now waits for a stream on port 3000.
        rvsock-tests stream-recv --port 3001 --count 2 --timeout $((600 * S)) --name two-guests.g2h.host &
        g2h=$!
        # A QEMU that got the CID would sit paused (-S): reap kills it, and the check fails.
        l2_qemu /tmp/l2-dup.log 3 128M nested-l2-second -S > /tmp/qemu-dup.out 2>&1 &
        reap $! $((60 * S))
        if grep -q "Address already in use" /tmp/qemu-dup.out; then
            result ok two-guests.duplicate-cid-refused
        else
            result fail two-guests.duplicate-cid-refused
        fi
        cat /tmp/qemu-dup.out
        qemu_b=
        if boot_l2 /tmp/l2b.log 4 384M nested-l2-second; then
            qemu_b=$qemu
            S=$(l2_scale)   # this boot may have fallen back to TCG
            result ok two-guests.second-guest-ready
            rvsock-tests stream-send --cid 4 --port 3000 --bytes 16m --seed 41 --timeout $((300 * S)) --name two-guests.h2g.cid4.host &
            s4=$!
        else
            result fail two-guests.second-guest-ready
            kill -9 "$qemu" 2>/dev/null
            kill "$g2h" 2>/dev/null   # one of its two streams will never come
        fi
        # The first guest gets its stream in any case (it waits for it).
        rvsock-tests stream-send --cid 3 --port 3000 --bytes 16m --seed 31 --timeout $((300 * S)) --name two-guests.h2g.cid3.host
        [ -n "$qemu_b" ] && reap "$s4" $((400 * S))
        reap "$g2h" $((700 * S))
        [ -n "$qemu_b" ] && reap "$qemu_b" $((300 * S))
    fi
    # System sleep in the guest (nested-l2.sh; lib.sh system_sleep_test): its driver's freeze
    # cuts its stream to 3003 (the verdict is the guest's: discarded here) while QEMU stops
    # this host's vhost device and starts it again; a stream to 3004 follows the resume. Once
    # both receivers listen and the guest listens on 3002 (its marker), a stream there says go.
    rvsock-tests stream-recv --port 3003 --count 1 --timeout $((600 * S)) --name sleep.inflight.host > /dev/null 2>&1 &
    cut=$!
    rvsock-tests stream-recv --port 3004 --count 1 --timeout $((600 * S)) --name sleep.resume.g2h.host > /tmp/resumed.out 2>&1 &
    resumed=$!
    wait_polling "$cut" $((30 * S)) || sleep 1
    wait_polling "$resumed" $((30 * S)) || sleep 1
    if wait_log /tmp/l2.log RVSOCK-L2-SLEEP-READY $((600 * S)); then
        rvsock-tests stream-send --cid 3 --port 3002 --bytes 4k --seed 50 --timeout $((300 * S)) --name sleep.go.host | tee /tmp/go.out
    else
        echo "# the guest never got to its system sleep"; result fail sleep.go.host
    fi
    if grep -q "RVSOCK-TEST ok sleep.go.host" /tmp/go.out 2>/dev/null; then
        reap "$resumed" $((700 * S))
        cat /tmp/resumed.out
    else
        kill "$resumed" 2>/dev/null; wait "$resumed" 2>/dev/null
        result fail sleep.resume.g2h.host
    fi
    kill "$cut" 2>/dev/null; wait "$cut" 2>/dev/null
else
    qemu_a=$qemu
    result fail "l2-never-ready"
    kill -9 "$qemu_a" 2>/dev/null   # nothing more will come from it: keep the log, stop waiting
fi
reap "$qemu_a" "${L2_TIMEOUT:-$((900 * $(l2_scale)))}"
reap "$hserver" 10
echo "qemu output:"; cat /tmp/qemu.out
echo "RVSOCK-L2-LOG-BEGIN"; sed 's/^/L2| /' /tmp/l2.log; echo "RVSOCK-L2-LOG-END"
if [ -f /tmp/l2b.log ]; then
    echo "RVSOCK-L2-LOG-BEGIN (second guest)"; sed 's/^/L2| /' /tmp/l2b.log; echo "RVSOCK-L2-LOG-END"
fi
