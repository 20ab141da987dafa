# rvsock-kernel-consumers (issue 20), one VM over loopback: kernel users of AF_VSOCK and the
# zero-copy paths.
# - vsock_ktest.ko (tools/testing/vsock/ktest, test only) in mode=loopback: its in-kernel server
#   consumes records with read_sock from the data-ready callback and echoes them; its in-kernel
#   client sends 10,000 records (1 B to 1 MiB, RFC 5531 record marking, 1-4 fragments each)
#   and checks each echo's hash. The load succeeds only if every hash matched. hold=1 keeps
#   two client connections open (one with half a record sent), then the module is unloaded
#   with all of them open: the unload must succeed and every socket be freed (the AF_VSOCK
#   slab back at its start; kmemleak at the end of the VM).
# - sendfile(2) of a 256 MiB file into a vsock socket, splice(2) out of the peer into a pipe,
#   hash-checked (rvsock-tests splice-send/splice-recv).
# - upstream 7.3 vsock_uring_test (io_uring send, and SEND_ZC: SOCK_SUPPORT_ZC, msg_ubuf).
# 3 + 2 + 2 = 7 results. rvsock_records=N on the kernel command line: fewer records.
load_stack loopback || return
RECORDS=$(arg rvsock_records)
SPLICE=256m
case "$SCENARIO" in *-kasan) RECORDS=${RECORDS:-2000}; SPLICE=64m ;; esac
RECORDS=${RECORDS:-10000}
START=$(slab_objs)
t0=$(up)
if modprobe vsock_ktest mode=loopback port=7000 records="$RECORDS" seed=7 hold=1; then
    result ok kconsumer.loopback.records
else
    result fail kconsumer.loopback.records
fi
dmesg | grep -a 'vsock_ktest' | tail -n 5 | sed 's/^/# /'
echo "# vsock_ktest loopback: $RECORDS records in $(($(up) - t0)) s"
if grep -q '^vsock_ktest ' /proc/modules; then
    if rmmod vsock_ktest; then result ok kconsumer.unload-with-connections-open; else result fail kconsumer.unload-with-connections-open; fi
    dmesg | grep -a 'vsock_ktest' | tail -n 2 | sed 's/^/# /'
else
    result fail kconsumer.unload-with-connections-open
fi
slab_back kconsumer.sockets-freed "$START" 30

# sendfile into, splice out of, a vsock stream.
rvsock-tests splice-recv --port 7100 --bytes "$SPLICE" --seed 3 --timeout 300 --name splice.recv > /tmp/splice-recv.out &
rcv=$!
wait_for /tmp/splice-recv.out RVSOCK-SPLICE-LISTENING 30
F=/sys/kernel/debug/rvsock/loopback/tx_spliced   # rvsock: the file's pages go by reference
rvsock-tests splice-send --cid 1 --port 7100 --bytes "$SPLICE" --seed 3 --timeout 300 --name splice.send $([ -e $F ] && echo --by-ref $F)
reap "$rcv" 300
grep -v RVSOCK-SPLICE-LISTENING /tmp/splice-recv.out

# Upstream's io_uring test (it has no --list: its two tests are named here).
U=/opt/vsock-7.3/vsock_uring_test
if [ -x "$U" ]; then
    "$U" --mode=server --control-port=1240 --peer-cid=1 > /tmp/uring-server.out 2>&1 &
    srv=$!
    wait_tcp_listen 1240 30
    timeout -s KILL 300 "$U" --mode=client --control-host=127.0.0.1 --control-port=1240 --peer-cid=1 > /tmp/uring.out 2> /tmp/uring.out.err
    echo "vsock_uring_test client exited $?"; tail -n 5 /tmp/uring.out.err
    reap "$srv" 60
    printf '0\tSOCK_STREAM io_uring test\n1\tSOCK_STREAM io_uring MSG_ZEROCOPY test\n' > /tmp/uring.out.list
    report_vsock_test uring/ /tmp/uring.out
else
    result fail uring/vsock_uring_test-missing
    result fail uring/vsock_uring_test-missing-zc
fi
scan_kmemleak
