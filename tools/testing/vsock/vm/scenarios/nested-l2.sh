# Nested, L2 (the guest): virtio transport here. Serves direction 1, then runs the client of
# direction 2 against the server already waiting in L1.
echo "L2 step: network"
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
echo "L2 step: vsock stack"
load_stack virtio || return
S=$(l2_scale)   # 4 when this guest runs under TCG (rvsock_l2_accel=tcg), else 1
VSOCK_TEST_TIMEOUT=$((900 * S))
vsock_test --mode=server --control-port=1234 --peer-cid=2 $(nested_skips) > /tmp/server.out 2>&1 &
server=$!
wait_tcp_listen 1234 $((30 * S)) || sleep 1   # the L1 client connects to it once
echo "RVSOCK-L2-READY"
reap_server "$server" $((900 * S)) /tmp/server.out
run_vsock_test "host-server/" /tmp/client.out --mode=client --control-host=10.0.2.2 --control-port=1235 --peer-cid=2 $(nested_skips)

# Two guests at once (nested-l1.sh): the host sends to this guest (CID 3) and to a second one
# (CID 4) at the same time; each guest sends one stream back. NESTED_TWO_GUESTS=no (from L1's
# L2_APPEND): no such phase.
if [ "${NESTED_TWO_GUESTS:-yes}" = yes ]; then
    rvsock-tests stream-recv --port 3000 --count 1 --timeout $((900 * S)) --name two-guests.h2g.cid3.guest
    rvsock-tests stream-send --cid 2 --port 3001 --bytes 16m --seed 32 --timeout $((300 * S)) --name two-guests.g2h.cid3.guest
fi

# System sleep during a stream to the host (lib.sh), once L1's receivers listen (it says so
# with a stream to 3002, sent when it sees our marker): the driver's freeze and restore, the
# host's vhost device stopped and started again by QEMU meanwhile.
rvsock-tests stream-recv --port 3002 --count 1 --timeout $((600 * S)) --name sleep.go.guest > /tmp/go.out 2>&1 &
go=$!
wait_polling "$go" $((30 * S)) || sleep 1   # listening: the host connects once
echo "RVSOCK-L2-SLEEP-READY"
reap "$go" $((700 * S))
cat /tmp/go.out
if grep -q "RVSOCK-TEST ok sleep.go.guest" /tmp/go.out; then
    system_sleep_test 2 3003 3004 "$S"
else
    sleep_not_run
fi
