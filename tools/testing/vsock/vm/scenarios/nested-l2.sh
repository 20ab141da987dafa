# Nested, L2 (the guest): virtio transport here. Serves direction 1, then runs the client of
# direction 2 against the server already waiting in L1.
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
load_stack virtio || return
vsock_test --mode=server --control-port=1234 --peer-cid=2 > /tmp/server.out 2>&1 &
server=$!
sleep 1
echo "RVSOCK-L2-READY"
reap "$server" 900
run_vsock_test "host-server/" /tmp/client.out --mode=client --control-host=10.0.2.2 --control-port=1235 --peer-cid=2
