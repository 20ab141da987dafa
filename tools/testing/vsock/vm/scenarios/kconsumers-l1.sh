# rvsock-kernel-consumers, L1 (the host; nested topology: vhost transport here, an L2 guest with
# vhost-vsock-pci and the virtio transport, the control channel of vsock_uring_test over TCP
# through QEMU user networking). Across the transports:
# - vsock_ktest's in-kernel server here (read_sock from the data-ready callback), its in-kernel
#   client in L2: 10,000 records echoed and hash-checked (the result comes from L2; 30 s on
#   2026-12-03, 3,000 took 20 s before the client hashed a word at a time and the guest took
#   fewer interrupts), then the server unloaded. (rvsock_records=N sets both counts.)
# - sendfile(2) of a 256 MiB file in L2 into a vsock socket, splice(2) out of it here; and
#   from here into L2 (vhost: the file's pages by reference, copied into the guest's buffers);
# - upstream vsock_uring_test, the server here, the client in L2 (io_uring SEND_ZC over the
#   virtio transport: pinned pages on the guest's tx ring).
# Then everything of kconsumers.sh over loopback, here. 3 here + 5 from L2 + 7 = 15 results.
L2MODS=$(arg rvsock_l2mods)
load_stack vhost || return
RECORDS=$(arg rvsock_records)
SPLICE=256m
case "$SCENARIO" in *-kasan) RECORDS=${RECORDS:-1000}; SPLICE=64m ;; esac
RECORDS=${RECORDS:-10000}
U=/opt/vsock-7.3/vsock_uring_test
modprobe vsock_ktest mode=server port=7000 || result fail kconsumer.host-server-load
rvsock-tests splice-recv --port 7100 --bytes "$SPLICE" --seed 4 --timeout 900 --name splice.g2h.recv > /tmp/splice-g2h.out &
rcv=$!
wait_for /tmp/splice-g2h.out RVSOCK-SPLICE-LISTENING 30
trace_port 1234
"$U" --mode=server --control-port=1241 --peer-cid=3 > /tmp/uring-g2h-server.out 2>&1 &
usrv=$!
wait_tcp_listen 1241 30
L2_APPEND="rvsock_records=$RECORDS rvsock_splice=$SPLICE"
if boot_l2 /tmp/l2.log 3 1G kconsumers-l2 $(l2_net); then
    qemu_a=$qemu
    # sendfile(2) from here into the guest (vhost), while its tests run.
    F=/sys/kernel/debug/rvsock/vhost/tx_spliced   # rvsock: the file's pages go by reference
    rvsock-tests splice-send --cid 3 --port 7101 --bytes "$SPLICE" --seed 5 --timeout 900 --name splice.h2g.send $([ -e $F ] && echo --by-ref $F)
else
    qemu_a=$qemu
    result fail "l2-never-ready"
    kill -9 "$qemu_a" 2>/dev/null
fi
reap "$qemu_a" "${L2_TIMEOUT:-$((1200 * $(l2_scale)))}"
echo "RVSOCK-L2-LOG-BEGIN"; sed 's/^/L2| /' /tmp/l2.log; echo "RVSOCK-L2-LOG-END"
reap "$rcv" 60
grep -v RVSOCK-SPLICE-LISTENING /tmp/splice-g2h.out
reap "$usrv" 30
# The g2h io_uring client fails now and then with "connect: Connection reset by peer": its
# connect() is interrupted by io_uring's task work and retried from the same port (README,
# "Kernel users", traced with this). On a failure: the packets of port 1234 both kernels saw
# and sent, and the state changes of its sockets (trace_port; the L2 prints its side).
if ! grep -q 'All tests have been executed' /tmp/uring-g2h-server.out; then
    sed 's/^/# uring-g2h server: /' /tmp/uring-g2h-server.out
    grep . /sys/kernel/debug/rvsock/*/* 2>/dev/null | grep -v ':0$' | sed 's/^/# /'
    trace_dump "L1 trace"
fi
dmesg | grep -a 'vsock_ktest' | tail -n 3 | sed 's/^/# /'
if grep -q '^vsock_ktest ' /proc/modules && rmmod vsock_ktest; then
    result ok kconsumer.host-server-unload
else
    result fail kconsumer.host-server-unload
fi
. /rvsock/scenarios/kconsumers.sh
