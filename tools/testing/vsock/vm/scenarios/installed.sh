# rvsock-install: this VM's root holds both stacks as a user's system would after
# `make install`: the in-tree modules under kernel/, rvsock's under updates/rvsock/ with
# /etc/modprobe.d/rvsock.conf, depmod run; kmod's modprobe (the kernel's module loader calls
# /sbin/modprobe). Nothing is loaded by hand: socket(AF_VSOCK) autoloads the core, a coldplug
# (what udev/mdev do at boot) binds the virtio device, in-tree names load rvsock. Then the
# effect of `make uninstall` (its files gone, depmod) and a fresh load bring the in-tree stack
# back in the same boot; the next boot is installed-next-boot.sh (a second VM, check.sh). The
# host side is vhost-device-vsock's Unix sockets (scripts/vhost-user-host.sh).
. /rvsock/scenarios/installed-common.sh

echo "# installed: $(ls /lib/modules/$KVER/updates/rvsock | tr '\n' ' ')+ /etc/modprobe.d/rvsock.conf; loaded: $(loaded)"
# socket(AF_VSOCK): the kernel asks modprobe for net-pf-40 (the send's own result is not ours).
rvsock-tests stream-send --cid 1 --port 9 --bytes 1 --timeout 2 --name autoload > /dev/null 2>&1
check installed.socket-autoloads-rvsock has rvsock
coldplug
echo "# virtio-vsock device driver: $(vsock_driver)"
check installed.coldplug-binds-rvsock-virtio [ "$(vsock_driver)" = rvsock_virtio ]
modprobe vsock_loopback
check installed.in-tree-name-loads-rvsock has rvsock_loopback
# /dev/vhost-vsock's alias (what opening the device node asks the kernel to load).
modprobe -q char-major-10-241
check installed.vhost-devnode-alias-loads-rvsock has rvsock_vhost
check installed.no-in-tree-module no_intree
# The kernel's own vsock_test over loopback, on the stack that loaded itself.
vsock_test --mode=server --control-port=1234 --peer-cid=1 > /tmp/vt-server.out 2>&1 &
vts=$!
VT_RETRY=30 run_vsock_test "installed/" /tmp/vt.out --mode=client --control-host=127.0.0.1 --control-port=1234 --peer-cid=1
reap_server "$vts" 60 /tmp/vt-server.out
rvsock-tests stream-send --cid 2 --port 1234 --bytes 1m --seed 3 --name installed.g2h.guest
check installed.still-no-in-tree-module no_intree

# make uninstall: its files gone, depmod; rvsock unloaded (a reboot would do that).
rm -rf "/lib/modules/$KVER/updates/rvsock" /etc/modprobe.d/rvsock.conf
depmod "$KVER"
# (Closed sockets keep their transport's module until the peer's RST or their 8 s close
# timeout; on a busy machine that took more than the 10 s this loop once allowed: 30 s.)
t0=$(up)
for i in $(seq 1 150); do
    rmmod rvsock_loopback rvsock_virtio rvsock_vhost 2>/dev/null; rmmod rvsock 2>/dev/null
    has rvsock || break; sleep 0.2
done
echo "# rvsock unloaded after $(($(up) - t0))s (refcounts now: $(grep '^rvsock' /proc/modules | cut -d' ' -f1,3 | tr '\n' ' '))"
check uninstalled.rvsock-unloaded no_rvsock
rvsock-tests stream-send --cid 1 --port 9 --bytes 1 --timeout 2 --name autoload > /dev/null 2>&1
coldplug
echo "# virtio-vsock device driver: $(vsock_driver)"
intree_back() { has vsock && [ "$(vsock_driver)" = vmw_vsock_virtio_transport ] && no_rvsock; }
check uninstalled.in-tree-stack-back intree_back
rvsock-tests stream-send --cid 2 --port 1234 --bytes 1m --seed 4 --name uninstalled.g2h.guest
