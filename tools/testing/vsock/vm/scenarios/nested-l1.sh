# Nested, L1 (the host): vhost transport here, an L2 guest under QEMU with vhost-vsock-pci.
# Direction 1: vsock_test server in L2, client here. Direction 2: server here, client in L2.
# The control channel is TCP over QEMU user networking (hostfwd for L1->L2, 10.0.2.2 for L2->L1).
L2MODS=$(arg rvsock_l2mods)
load_stack vhost || return
vsock_test --mode=server --control-port=1235 --peer-cid=3 > /tmp/h-server.out 2>&1 &
hserver=$!
export QEMU_MODULE_DIR=/usr/lib/x86_64-linux-gnu/qemu
accel="-accel kvm -cpu ${L2_CPU:-qemu64}"
[ -c /dev/kvm ] || accel="-accel tcg -cpu max"
# The L2 boot under KVM on QEMU's emulated SVM occasionally stalls before its init runs (an
# empty L2 serial log): give it a bounded time and boot it again, at most 3 times.
start_l2() {
    : > /tmp/l2.log
    qemu-system-x86_64 $accel -m 512M -smp 1 -nodefaults -no-user-config -display none \
        -L /usr/share/qemu -L /usr/share/seabios -no-reboot \
        -serial file:/tmp/l2.log -kernel /l2/bzImage -initrd /l2/initramfs.cpio.gz \
        -append "console=ttyS0 quiet panic=-1 rvsock_scenario=$SCENARIO rvsock_role=l2 rvsock_mods=$L2MODS rvsock_script=nested-l2" \
        -netdev user,id=n0,hostfwd=tcp:127.0.0.1:1234-10.0.2.15:1234 \
        -device virtio-net-pci,netdev=n0,romfile= \
        -device vhost-vsock-pci,guest-cid=3 >> /tmp/qemu.out 2>&1 &
    qemu=$!
}
ready=no
for attempt in 1 2 3; do
    start_l2
    # RVSOCK-BEGIN shows the L2 init started; after that, readiness gets the full budget.
    if wait_for /tmp/l2.log RVSOCK-BEGIN 120 && wait_for /tmp/l2.log RVSOCK-L2-READY 300; then
        ready=yes; break
    fi
    grep -q RVSOCK-BEGIN /tmp/l2.log && break   # it booted and failed: no retry
    echo "L2 boot attempt $attempt stalled, retrying"
    kill -9 "$qemu" 2>/dev/null; wait "$qemu" 2>/dev/null
done
if [ $ready = yes ]; then
    run_vsock_test "guest-server/" /tmp/h-client.out --mode=client --control-host=127.0.0.1 --control-port=1234 --peer-cid=3
else
    result fail "l2-never-ready"
    kill -9 "$qemu" 2>/dev/null   # nothing more will come from it: keep the log, stop waiting
fi
reap "$qemu" "${L2_TIMEOUT:-900}"
reap "$hserver" 10
echo "qemu output:"; cat /tmp/qemu.out
echo "RVSOCK-L2-LOG-BEGIN"; sed 's/^/L2| /' /tmp/l2.log; echo "RVSOCK-L2-LOG-END"
