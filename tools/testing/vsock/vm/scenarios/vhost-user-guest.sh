# Guest VM whose vsock device is vhost-device-vsock (rust-vmm) on the build machine, whose
# host side is Unix sockets driven by scripts/vhost-user-host.sh. Guest-to-host and
# host-to-guest streams checked by hash, and concurrent connections.
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
