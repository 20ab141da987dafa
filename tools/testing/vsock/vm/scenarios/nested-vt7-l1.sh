# Nested, L1 (the host): the newest (7.3) vsock_test, test by test, in both directions
# (topology as in nested-l1.sh: vhost transport here, an L2 guest with vhost-vsock-pci, the
# control channel over TCP through QEMU user networking).
# Direction 1 (guest-server/): fresh servers in L2, clients here. hostfwd accepts a connection
# to 127.0.0.1:1234 whether or not the L2 server listens, so each client first waits for the
# L2's "RVSOCK-VT7-LISTENING" marker in its serial log.
# Direction 2 (host-server/): fresh servers here, clients in L2 (10.0.2.2:1235; a refused
# connect is retried). 41 + 41 results.
L2MODS=$(arg rvsock_l2mods)
load_stack vhost || return
if boot_l2 /tmp/l2.log 3 512M nested-vt7-l2 \
    $(l2_net tcp:127.0.0.1:1234-10.0.2.15:1234); then
    qemu_a=$qemu
    vt7_client_each "guest-server/" 3 127.0.0.1 1234 /tmp/l2.log
    vt7_serve_each "host-server/" 3 1235
else
    qemu_a=$qemu
    result fail "l2-never-ready"
    kill -9 "$qemu_a" 2>/dev/null
fi
reap "$qemu_a" "${L2_TIMEOUT:-900}"
echo "qemu output:"; cat /tmp/qemu.out
echo "RVSOCK-L2-LOG-BEGIN"; sed 's/^/L2| /' /tmp/l2.log; echo "RVSOCK-L2-LOG-END"
