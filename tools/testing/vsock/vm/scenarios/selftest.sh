# One VM with both stacks available: run rvsock-tests' selftest battery over loopback on the
# in-tree C modules, then on rvsock, and compare the errno tables of the two runs. Results
# of the rvsock run count; the C run is the reference (its results are reported as c/...).
load_c() { modprobe vsock_loopback; }
# Closed connections linger until the peer's RST or the close timeout (8 s): retry.
unload_c() {
    i=0
    while ! rmmod vsock_loopback 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 120 ] && return 1; sleep 0.5
    done
    rmmod vmw_vsock_virtio_transport_common vsock
}
load_r() { modprobe rvsock_loopback; }

if load_c; then
    rvsock-tests selftest --peer-cid 1 > /tmp/c.out 2>&1
    sed -n 's/^RVSOCK-TEST \([a-z]*\) /RVSOCK-REF \1 c\//p' /tmp/c.out
    # Why a reference test failed or skipped (its "# NAME: reason" line).
    grep '^# ' /tmp/c.out | sed 's/^# /# c\//'
    grep '^RVSOCK-ERRNO' /tmp/c.out | sort > /tmp/c.errno
    unload_c || result fail unload-c-stack
else
    result fail load-c-stack
fi
if load_r; then
    rvsock-tests selftest --peer-cid 1 > /tmp/r.out 2>&1
    grep -v '^RVSOCK-ERRNO' /tmp/r.out | grep -v '^RVSOCK-TEST' | tail -n 40
    grep '^RVSOCK-TEST' /tmp/r.out
    grep '^RVSOCK-ERRNO' /tmp/r.out | sort > /tmp/r.errno
    if [ -s /tmp/c.errno ] && diff /tmp/c.errno /tmp/r.errno; then
        result ok errno-table-matches-in-tree
    else
        result fail errno-table-matches-in-tree
    fi
    rvsock-tests rmmod-while-open --modules rvsock_loopback,rvsock --cid 1
else
    result fail load-rvsock-stack
fi
