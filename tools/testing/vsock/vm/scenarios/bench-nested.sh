# `make bench`, guest-to-host and host-to-guest: this L1 host runs an L2 guest over
# vhost-vsock-pci, once with the in-tree C modules on both sides (vhost_vsock here,
# vmw_vsock_virtio_transport in L2) and once with rvsock's (rvsock_vhost, rvsock_virtio),
# alternating ROUNDS times. The host is the client of the h2g metrics (the guest serves), the
# guest of the g2h ones (the host serves); CPU time per GiB is the host's (it includes the
# guest's vCPUs). Each metric line is tagged with stack, round and transport.
ROUNDS=$(arg rvsock_rounds); ROUNDS=${ROUNDS:-3}
MS=$(arg rvsock_ms); MS=${MS:-2000}
IDLE=$(arg rvsock_idle); IDLE=${IDLE:-10000}
tag() { sed "s/^RVSOCK-BENCH /RVSOCK-BENCH $1 $2 $3 /"; }
r=1
while [ $r -le "$ROUNDS" ]; do
    for stack in c rvsock; do
        case $stack in c) vh=vhost_vsock ;; rvsock) vh=rvsock_vhost ;; esac
        modprobe $vh || { echo "cannot load $vh"; continue; }
        rvsock-tests bench-serve --port 7300 --secs 3600 > /tmp/serve.out 2>&1 &
        serve=$!
        vsock_perf --port 7401 --bytes 256M > /tmp/perf-g2h.rx 2>&1 &
        perf=$!
        L2MODS=$stack L2_APPEND="rvsock_round=$r rvsock_ms=$MS rvsock_idle=$IDLE" \
            boot_l2 /tmp/l2.log 3 1G bench-l2 || echo "L2 ($stack, round $r) never got ready"
        l2=$qemu
        rvsock-tests bench --remote --peer-cid 3 --port 7200 --ms "$MS" --idle-conns "$IDLE" --cpu-here | tag $stack $r h2g
        vsock_perf --sender 3 --port 7400 --bytes 256M > /tmp/perf-h2g.tx 2>&1
        # Tell the guest to run its half (the g2h clients): a 1-byte stream to its port 7399.
        rvsock-tests stream-send --cid 3 --port 7399 --bytes 1 --name bench-go > /dev/null
        reap "$l2" 1800
        reap "$perf" 10
        awk -v s=$stack -v r=$r '/rx performance/ {print "RVSOCK-BENCH " s " " r " g2h vsock_perf_rx " $3 " Gbit/s higher"}' /tmp/perf-g2h.rx
        # The guest's lines (its metrics are tagged already).
        tr -d '\r' < /tmp/l2.log | grep -a '^RVSOCK-BENCH \|^# bench'
        grep -aq RVSOCK-BENCH-DONE /tmp/l2.log || { echo "L2 log ($stack, round $r):"; tail -n 30 /tmp/l2.log; }
        kill "$serve" 2>/dev/null; wait "$serve" 2>/dev/null
        i=0
        while grep -q "^$vh " /proc/modules && ! rmmod $vh 2>/dev/null; do
            i=$((i + 1)); [ $i -gt 60 ] && { echo "cannot unload $vh"; break; }; sleep 0.5
        done
        case $stack in c) rmmod vmw_vsock_virtio_transport_common vsock 2>/dev/null ;; rvsock) rmmod rvsock 2>/dev/null ;; esac
    done
    r=$((r + 1))
done
result ok bench-complete
