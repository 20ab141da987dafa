# vhost-hostile-guest: one VM, no L2. rvsock-tests plays VMM and guest at once: it drives
# /dev/vhost-vsock itself (its own vrings in its own memory) and sends spoofed, misaddressed,
# truncated, oversized and nonsense packets, credit abuse and connect/reset storms, checking
# that host sockets see only what a correct guest may send and that valid packets get the
# right replies; what a capture device (vsockmon) sees of it; plus the VHOST_VSOCK_SET_GUEST_CID
# rules. Runs on either module set
# (MODS=c is the in-tree reference).
load_stack vhost || return
# A capture device, open for the whole run (every packet is also copied for it): the checks
# capture_guest and capture_at_delivery read it; vsockmon binds to the loaded stack.
/usr/sbin/ip link add name vsockmon0 type vsockmon && /usr/sbin/ip link set vsockmon0 up \
    || echo "# no vsockmon0: the capture checks skip"
rvsock-tests vhost-hostile --cid 3
echo "rvsock-tests vhost-hostile exited $?"
