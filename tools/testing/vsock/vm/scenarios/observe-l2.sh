# rvsock-observe / c-observe, L2 (the guest) of observe-l1.sh: the vsock_diag_test server of
# direction 1, then the client of direction 2 against L1.
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
load_stack virtio || return
S=$(l2_scale)
# Capture here too: the virtio transport's packets, as the ring takes them and as the device
# hands them over.
/usr/sbin/ip link add name vsockmon0 type vsockmon && /usr/sbin/ip link set vsockmon0 up
tcpdump -Z root -l -n -i vsockmon0 > /tmp/cap.txt 2> /tmp/cap.err &
td=$!
wait_for /tmp/cap.err "listening on vsockmon0" 20 || cat /tmp/cap.err
DIAG=/opt/vsock-7.3/vsock_diag_test
echo "RVSOCK-L2-READY"
VT_BIN=$DIAG VSOCK_TEST_TIMEOUT=$((180 * S)) run_vsock_test "guest-server.server/" /tmp/d-server.out \
    --mode=server --control-port=1236 --peer-cid=2 &
srv=$!
wait_tcp_listen 1236 $((30 * S)) && echo "RVSOCK-DIAG-LISTENING"
wait "$srv"
VT_BIN=$DIAG VT_RETRY=$((60 * S)) VSOCK_TEST_TIMEOUT=$((120 * S)) run_vsock_test "host-server.client/" /tmp/d-client.out \
    --mode=client --control-host=10.0.2.2 --control-port=1237 --peer-cid=2
debugfs_counted rvsock_virtio rx_packets tx_packets
sleep 1; kill "$td" 2>/dev/null; wait "$td" 2>/dev/null
frames=$(grep -c ' VIRTIO ' /tmp/cap.txt)
echo "# tcpdump -i vsockmon0 in L2 (first lines of $frames):"
head -n 6 /tmp/cap.txt | sed 's/^/#   /'
# rvsock: each packet the ring took or the device handed over, once (the driver's counters
# count the same packets; nothing else used vsock here since the capture started).
once=1
if [ "$MODS" != c ]; then
    _d=/sys/kernel/debug/rvsock_virtio
    _n=$(($(cat $_d/tx_packets) + $(cat $_d/rx_packets)))
    echo "# $frames frames captured, $_n packets sent and received"
    [ "$frames" -eq "$_n" ] || once=
fi
if [ -n "$once" ] && grep -q "VIRTIO 3\.[0-9]* > 2\.[0-9]* CONNECT" /tmp/cap.txt \
    && grep -q "VIRTIO 2\.[0-9]* > 3\.[0-9]* CONNECT" /tmp/cap.txt \
    && grep -q "VIRTIO 2\.[0-9]* > 3\.[0-9]* DISCONNECT" /tmp/cap.txt; then
    result ok capture.virtio
else
    cat /tmp/cap.err; result fail capture.virtio
fi
