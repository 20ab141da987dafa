# Guest VM whose vsock device is vhost-device-vsock (rust-vmm) on the build machine, whose
# host side is Unix sockets driven by scripts/vhost-user-host.sh. Guest-to-host and
# host-to-guest streams checked by hash, and concurrent connections; the vhost CID rules of a
# host that is itself a guest; device unbind/rebind, system sleep (the driver's freeze and
# restore) and driver unload.
load_stack virtio || return
echo "local cid: $(cat /sys/bus/virtio/devices/*/features 2>/dev/null | head -1)"
rvsock-tests stream-send --cid 2 --port 1234 --bytes 64m --seed 1 --name g2h.64MiB.guest
rvsock-tests concurrent --cid 2 --port 1235 --conns 100 --bytes 64k --seed 100 --name g2h.100conns.guest
rvsock-tests stream-recv --port 2000 --count 1 --name h2g.64MiB.guest > /tmp/h2g.out 2>&1 &
h2g=$!
sleep 1
echo "RVSOCK-H2G-READY"
reap "$h2g" 600
cat /tmp/h2g.out
# On a failure, the transport's counters that are not 0 (mem_overrun, credit ones: which
# limit the connection ran into).
if grep -q "RVSOCK-TEST fail" /tmp/h2g.out; then
    grep . /sys/kernel/debug/rvsock/*/* 2>/dev/null | grep -v ':0$' | sed 's/^/# /'
fi

# Nested host rules: with the vhost transport loaded too, this VM is a host whose own guest
# CID (3, from the virtio device) cannot be given to a guest of its own (EADDRINUSE), and a
# connect to a CID without a device fails at once with ENODEV.
if load_stack vhost; then
    rvsock-tests vhost-cid --cid 5 --own 3
fi

# Device unbind while a transfer is in flight, rebind, transfer again, unload the driver. The
# unbind must end the transfer with an error (its connection is reset), never hang or crash;
# the driver must take the device again and work; with every socket closed the module must
# unload (the kasan flavour then scans for leaks).
vdev=
for d in /sys/bus/virtio/devices/*; do [ "$(cat "$d/device")" = 0x0013 ] && vdev=$d; done
drv=$(readlink -f "$vdev/driver")
mod=$(basename "$(readlink -f "$drv/module")")
echo "vsock device $(basename "$vdev"), driver $drv, module $mod"
rvsock-tests stream-send --cid 2 --port 1236 --bytes 4g --seed 3 --timeout 30 --name unbind.inflight > /tmp/unbind.out 2>&1 &
ub=$!
sleep 3
basename "$vdev" > "$drv/unbind"
i=0
while kill -0 "$ub" 2>/dev/null && [ $i -lt 75 ]; do i=$((i + 1)); sleep 0.2; done
sed 's/^RVSOCK-TEST/# transfer:/' /tmp/unbind.out
if kill -0 "$ub" 2>/dev/null; then
    kill -9 "$ub"; echo "# transfer still running 15 s after the unbind"
    result fail unbind.inflight.guest
elif grep -q "no progress" /tmp/unbind.out; then
    result fail unbind.inflight.guest   # the connection was not reset: it only timed out
elif grep -q "RVSOCK-TEST fail" /tmp/unbind.out; then
    result ok unbind.inflight.guest
else
    result fail unbind.inflight.guest   # finished before the unbind: nothing was tested
fi
wait "$ub" 2>/dev/null
basename "$vdev" > "$drv/bind"
echo "rebound to $(readlink "$vdev/driver")"
rvsock-tests stream-send --cid 2 --port 1237 --bytes 8m --seed 4 --name rebind.g2h.guest

# System sleep: suspend to idle with /sys/power/pm_test at "devices" (every device is
# suspended and resumed, the machine does not sleep). The driver's freeze must reset the
# connections the device forgets (a transfer in flight ends with an error, never hangs) and its
# restore must bring the device back (in-tree's freeze/restore do both). The transfer's
# process is frozen across the sleep and finds its connection reset when it is thawed.
if [ -w /sys/power/pm_test ] && grep -qw freeze /sys/power/state; then
    echo devices > /sys/power/pm_test
    echo 1 > /sys/module/suspend/parameters/pm_test_delay 2>/dev/null || true
    rvsock-tests stream-send --cid 2 --port 1238 --bytes 4g --seed 5 --timeout 30 --name sleep.inflight > /tmp/sleep.out 2>&1 &
    sl=$!
    sleep 3
    slept=
    if echo freeze > /sys/power/state; then slept=1; echo "suspend to idle (pm_test devices) done"; else echo "# suspend to idle failed"; fi
    echo none > /sys/power/pm_test
    i=0
    while kill -0 "$sl" 2>/dev/null && [ $i -lt 75 ]; do i=$((i + 1)); sleep 0.2; done
    sed 's/^RVSOCK-TEST/# transfer:/' /tmp/sleep.out
    if kill -0 "$sl" 2>/dev/null; then
        kill -9 "$sl"; echo "# transfer still running 15 s after the resume"
        result fail sleep.inflight.guest
    elif [ -z "$slept" ]; then
        result fail sleep.inflight.guest   # the system did not go through the sleep
    elif grep -q "no progress" /tmp/sleep.out; then
        result fail sleep.inflight.guest   # the connection was not reset: it only timed out
    elif grep -q "RVSOCK-TEST fail" /tmp/sleep.out; then
        result ok sleep.inflight.guest
    else
        result fail sleep.inflight.guest   # finished before the sleep: nothing was tested
    fi
    wait "$sl" 2>/dev/null
    rvsock-tests stream-send --cid 2 --port 1239 --bytes 8m --seed 6 --name resume.g2h.guest
else
    echo "# no /sys/power/pm_test or no suspend to idle in this kernel"
    result fail sleep.inflight.guest
    result fail resume.g2h.guest
fi
i=0
until rmmod "$mod" 2>/tmp/rmmod.err; do i=$((i + 1)); [ $i -gt 480 ] && break; [ $((i % 40)) = 0 ] && grep "^$mod " /proc/modules; sleep 0.25; done
if grep -q "^$mod " /proc/modules; then
    cat /tmp/rmmod.err; grep vsock /proc/modules
    result fail unload.guest
else
    echo "unloaded $mod after $i retries"
    result ok unload.guest
fi
