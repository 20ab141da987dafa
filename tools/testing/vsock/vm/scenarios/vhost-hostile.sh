# vhost-hostile-guest: one VM, no L2. rvsock-tests plays VMM and guest at once: it drives
# /dev/vhost-vsock itself (its own vrings in its own memory) and sends spoofed, misaddressed,
# truncated, oversized and nonsense packets, credit abuse and connect/reset storms, checking
# that host sockets see only what a correct guest may send and that valid packets get the
# right replies; plus the VHOST_VSOCK_SET_GUEST_CID rules. Runs on either module set
# (MODS=c is the in-tree reference).
load_stack vhost || return
rvsock-tests vhost-hostile --cid 3
echo "rvsock-tests vhost-hostile exited $?"
