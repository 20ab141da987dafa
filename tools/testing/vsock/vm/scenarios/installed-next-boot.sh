# rvsock-install, second boot: the root that `make uninstall` (scripts/install.sh uninstall,
# DESTDIR=this root) made of the installed one, booted afresh as a user's machine boots after
# the uninstall. Nothing is loaded by hand: rvsock's files and its entries in the module
# index must be gone, and the in-tree stack must load itself (socket(AF_VSOCK), the coldplug
# of the virtio device, the in-tree names, /dev/vhost-vsock's alias) and carry a stream to the
# host (vhost-device-vsock, scripts/vhost-user-host.sh).
. /rvsock/scenarios/installed-common.sh

M=/lib/modules/$KVER
no_rvsock_files() {
    [ ! -e "$M/updates/rvsock" ] && [ ! -e /etc/modprobe.d/rvsock.conf ] \
        && ! grep -q rvsock "$M/modules.dep" "$M/modules.alias" "$M/modules.softdep" 2>/dev/null \
        && [ -z "$(find "$M" -name 'rvsock*.ko*')" ]
}
echo "# modprobe.d: $(ls /etc/modprobe.d 2>/dev/null | tr '\n' ' '); updates/: $(ls "$M/updates" 2>/dev/null | tr '\n' ' '); loaded: $(loaded)"
check next-boot.no-rvsock-files no_rvsock_files
# socket(AF_VSOCK): the kernel asks modprobe for net-pf-40.
rvsock-tests stream-send --cid 1 --port 9 --bytes 1 --timeout 2 --name autoload > /dev/null 2>&1
check next-boot.socket-autoloads-in-tree has vsock
coldplug
echo "# virtio-vsock device driver: $(vsock_driver)"
check next-boot.coldplug-binds-in-tree-virtio [ "$(vsock_driver)" = vmw_vsock_virtio_transport ]
modprobe vsock_loopback
check next-boot.in-tree-name-loads-in-tree has vsock_loopback
modprobe -q char-major-10-241
check next-boot.vhost-devnode-alias-loads-in-tree has vhost_vsock
check next-boot.no-rvsock-module no_rvsock
rvsock-tests stream-send --cid 2 --port 1234 --bytes 1m --seed 5 --name next-boot.g2h.guest
