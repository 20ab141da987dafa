# rvsock-observe / c-observe, L1 (the host; nested topology as in nested-l1.sh: vhost transport
# here, an L2 guest with vhost-vsock-pci, the control channel over TCP through QEMU user
# networking). Upstream vsock_diag_test (7.3) in both directions across the vhost transport:
# each side's sock_diag must list exactly its own sockets. Then, over loopback here,
# rvsock-tests observe: the sock_diag dump, iproute2 `ss --vsock`, rvsock's credit attribute
# (a skip on the in-tree stack, which has none), its debugfs counters. 6 + 6 + 1 + 1 + 7
# results (one of them from L2).
L2MODS=$(arg rvsock_l2mods)
DIAG=/opt/vsock-7.3/vsock_diag_test
load_stack vhost || return
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
load_stack loopback || return
if [ "$MODS" = c ]; then rvsock-tests observe --reference; else rvsock-tests observe; fi
echo "qemu output:"; cat /tmp/qemu.out
echo "RVSOCK-L2-LOG-BEGIN"; sed 's/^/L2| /' /tmp/l2.log; echo "RVSOCK-L2-LOG-END"
