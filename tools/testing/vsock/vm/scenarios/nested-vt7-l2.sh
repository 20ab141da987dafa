# Nested, L2 (the guest) of nested-vt7-l1.sh: serves direction 1 test by test (markers on
# this console, which is L1's /tmp/l2.log), then runs the clients of direction 2 against L1.
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
load_stack virtio || return
echo "RVSOCK-L2-READY"
vt7_serve_each "guest-server/" 2 1234
vt7_client_each "host-server/" 2 10.0.2.2 1235
