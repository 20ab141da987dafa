# rvsock-observe / c-observe, L1 (the host; nested topology as in nested-l1.sh: vhost transport
# here, an L2 guest with vhost-vsock-pci, the control channel over TCP through QEMU user
# networking). Upstream vsock_diag_test (7.3) in both directions across the vhost transport:
# each side's sock_diag must list exactly its own sockets. Then, over loopback here,
# rvsock-tests observe: the sock_diag dump, iproute2 `ss --vsock`, rvsock's credit attribute
# (a skip on the in-tree stack, which has none), its debugfs counters; then packet capture
# (the kernel's vsockmon device, tcpdump: across vhost here, virtio in L2, and loopback) and
# trace events, over loopback too.
# 1 + 6 + 6 + 1 + 1 + 2 + 7 + 3 + 4 results (two of them from L2: its debugfs counters, and
# what the virtio transport captured there).
L2MODS=$(arg rvsock_l2mods)
DIAG=/opt/vsock-7.3/vsock_diag_test
load_stack vhost || return
# Packet capture: the kernel's vsockmon device (fed by rvsock's core through vsock_add_tap, as
# by the in-tree core), read by tcpdump: across the vhost transport during the diag tests,
# over loopback below.
if /usr/sbin/ip link add name vsockmon0 type vsockmon && /usr/sbin/ip link set vsockmon0 up; then
    result ok capture.vsockmon-device
else
    result fail capture.vsockmon-device
fi
tcpdump -Z root -l -n -i vsockmon0 > /tmp/cap-vhost.txt 2> /tmp/cap-vhost.err &
tdv=$!
wait_for /tmp/cap-vhost.err "listening on vsockmon0" 20 || cat /tmp/cap-vhost.err
if boot_l2 /tmp/l2.log 3 512M observe-l2 $(l2_net tcp:127.0.0.1:1236-10.0.2.15:1236); then
    qemu_a=$qemu
    S=$(l2_scale)
    # Direction 1: the server in L2, the client here. hostfwd accepts a connection whether or
    # not the L2 server listens: wait for its marker first.
    wait_for /tmp/l2.log RVSOCK-DIAG-LISTENING $((60 * S))
    VT_BIN=$DIAG VSOCK_TEST_TIMEOUT=$((120 * S)) run_vsock_test "guest-server.client/" /tmp/d-client.out \
        --mode=client --control-host=127.0.0.1 --control-port=1236 --peer-cid=3
    # Direction 2: the server here (its "No sockets" must not see direction 1's closed client,
    # gone once the guest's RST came: give it a second), the client in L2 (it retries).
    sleep 1
    VT_BIN=$DIAG VSOCK_TEST_TIMEOUT=$((120 * S)) run_vsock_test "host-server.server/" /tmp/d-server.out \
        --mode=server --control-port=1237 --peer-cid=3
else
    qemu_a=$qemu
    result fail "l2-never-ready"
    kill -9 "$qemu_a" 2>/dev/null
fi
reap "$qemu_a" "${L2_TIMEOUT:-$((300 * $(l2_scale)))}"
# The vhost transport's counters (debugfs) saw the diag tests' packets.
debugfs_counted rvsock_vhost rx_delivered tx_sent
sleep 1; kill "$tdv" 2>/dev/null; wait "$tdv" 2>/dev/null
echo "# tcpdump -i vsockmon0 across vhost (first lines of $(wc -l < /tmp/cap-vhost.txt)):"
head -n 6 /tmp/cap-vhost.txt | sed 's/^/#   /'
# vhost captured the diag tests' connections both ways: the guest's packets (CID 3) as it
# read them, the host's as they reached the guest.
if grep -q "VIRTIO 3\.[0-9]* > 2\.[0-9]* CONNECT" /tmp/cap-vhost.txt \
    && grep -q "VIRTIO 2\.[0-9]* > 3\.[0-9]* CONNECT" /tmp/cap-vhost.txt \
    && grep -q "VIRTIO 3\.[0-9]* > 2\.[0-9]* DISCONNECT" /tmp/cap-vhost.txt; then
    result ok capture.vhost
else
    cat /tmp/cap-vhost.err; result fail capture.vhost
fi
load_stack loopback || return
if [ "$MODS" = c ]; then rvsock-tests observe --reference; else rvsock-tests observe; fi

# Packet capture over loopback (the device made above) while a stream runs.
tcpdump -Z root -l -n -i vsockmon0 > /tmp/cap.txt 2> /tmp/cap.err &
td=$!
wait_for /tmp/cap.err "listening on vsockmon0" 20 || cat /tmp/cap.err
rvsock-tests stream-recv --port 5600 --count 1 --timeout 60 --name capture.stream.recv &
rcv=$!
sleep 0.5
rvsock-tests stream-send --cid 1 --port 5600 --bytes 10000 --seed 5 --timeout 60 --name capture.stream.send
reap "$rcv" 60
sleep 1; kill "$td" 2>/dev/null; wait "$td" 2>/dev/null
echo "# tcpdump -i vsockmon0 (first lines of $(wc -l < /tmp/cap.txt)):"; head -n 12 /tmp/cap.txt | sed 's/^/#   /'
# The connect, the payload and the close of that stream, decoded by tcpdump.
if grep -q "CONNECT" /tmp/cap.txt && grep -q "PAYLOAD" /tmp/cap.txt && grep -q "DISCONNECT" /tmp/cap.txt \
    && grep -q "\.5600" /tmp/cap.txt; then
    result ok capture.tcpdump-decodes
else
    cat /tmp/cap.err; result fail capture.tcpdump-decodes
fi

# Trace events (tracefs): the in-tree packet events, and rvsock's state changes.
T=/sys/kernel/tracing
mount -t tracefs nodev "$T" 2>/dev/null
for e in vsock/virtio_transport_alloc_pkt vsock/virtio_transport_recv_pkt rvsock/rvsock_sk_state; do
    [ -e "$T/events/$e/enable" ] && echo 1 > "$T/events/$e/enable"
done
echo > "$T/trace"
rvsock-tests stream-recv --port 5601 --count 1 --timeout 60 --name trace.stream.recv &
rcv=$!
sleep 0.5
rvsock-tests stream-send --cid 1 --port 5601 --bytes 1000 --seed 6 --timeout 60 --name trace.stream.send
reap "$rcv" 60
echo 0 > "$T/tracing_on"
grep -m 6 "5601" "$T/trace" | sed 's/^/#   /'
if grep -q "virtio_transport_alloc_pkt: 1:[0-9]* -> 1:5601 len=0 type=STREAM op=REQUEST" "$T/trace" \
    && grep -q "virtio_transport_recv_pkt: 1:5601 -> 1:[0-9]* len=0 type=STREAM op=RESPONSE" "$T/trace" \
    && grep -q "virtio_transport_alloc_pkt: 1:[0-9]* -> 1:5601 len=[0-9]* type=STREAM op=RW" "$T/trace"; then
    result ok trace.packet-events
else
    result fail trace.packet-events
fi
if [ "$MODS" = c ]; then
    result skip trace.rvsock-state   # rvsock's own event
elif grep -q "rvsock_sk_state: .*5601.* state 2 -> 1" "$T/trace" && grep -q "rvsock_sk_state: .*:5601 .* state 7 -> 10" "$T/trace"; then
    result ok trace.rvsock-state
else
    grep rvsock_sk_state "$T/trace" | head; result fail trace.rvsock-state
fi
echo "qemu output:"; cat /tmp/qemu.out
echo "RVSOCK-L2-LOG-BEGIN"; sed 's/^/L2| /' /tmp/l2.log; echo "RVSOCK-L2-LOG-END"
