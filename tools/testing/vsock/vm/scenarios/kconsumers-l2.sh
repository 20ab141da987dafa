# rvsock-kernel-consumers, L2 (the guest) of kconsumers-l1.sh: vsock_ktest's in-kernel client
# against the host's in-kernel server, sendfile(2) to the host, vsock_uring_test's client.
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
load_stack virtio || return
S=$(l2_scale)
RECORDS=$(arg rvsock_records)
SPLICE=$(arg rvsock_splice)
# The host's sendfile(2) to us (kconsumers-l1.sh sends once we are ready), spliced out here.
rvsock-tests splice-recv --port 7101 --bytes "${SPLICE:-256m}" --seed 5 --timeout $((900 * S)) --name splice.h2g.recv > /tmp/splice-h2g.out &
h2g=$!
wait_for /tmp/splice-h2g.out RVSOCK-SPLICE-LISTENING 30
echo "RVSOCK-L2-READY"
t0=$(up)
if modprobe vsock_ktest mode=client cid=2 port=7000 records="${RECORDS:-10000}" seed=11; then
    result ok kconsumer.guest-client.records
else
    result fail kconsumer.guest-client.records
fi
dmesg | grep -a 'vsock_ktest' | tail -n 2 | sed 's/^/# /'
echo "# vsock_ktest guest client: ${RECORDS:-10000} records in $(($(up) - t0)) s"
rmmod vsock_ktest 2>/dev/null
F=/sys/kernel/debug/rvsock/virtio/tx_spliced   # rvsock: the file's pages go by reference
rvsock-tests splice-send --cid 2 --port 7100 --bytes "${SPLICE:-256m}" --seed 4 --timeout $((600 * S)) --name splice.g2h.send $([ -e $F ] && echo --by-ref $F)
U=/opt/vsock-7.3/vsock_uring_test
trace_port 1234
_n=0
while :; do
    timeout -s KILL $((300 * S)) "$U" --mode=client --control-host=10.0.2.2 --control-port=1241 --peer-cid=2 > /tmp/uring.out 2> /tmp/uring.out.err
    rc=$?
    if [ $rc -ne 0 ] && [ $_n -lt 50 ] && grep -q "Control socket initialization failed" /tmp/uring.out.err; then
        _n=$((_n + 1)); sleep 0.2; continue
    fi
    break
done
echo "vsock_uring_test client exited $rc"; tail -n 5 /tmp/uring.out.err
if [ $rc -ne 0 ]; then
    sed 's/^/# uring-g2h client: /' /tmp/uring.out | tail -n 8
    grep . /sys/kernel/debug/rvsock/*/* 2>/dev/null | grep -v ':0$' | sed 's/^/# /'
    trace_dump "L2 trace"
fi
printf '0\tSOCK_STREAM io_uring test\n1\tSOCK_STREAM io_uring MSG_ZEROCOPY test\n' > /tmp/uring.out.list
report_vsock_test uring-g2h/ /tmp/uring.out
reap "$h2g" $((900 * S))
grep -v RVSOCK-SPLICE-LISTENING /tmp/splice-h2g.out
