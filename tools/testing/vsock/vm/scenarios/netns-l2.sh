# rvsock-netns / c-netns, L2 (a guest of netns-l1.sh, whose QEMU runs in one of L1's network
# namespaces or in L1's initial one): serves a shell on TCP 5000 (L1 reaches it through the
# hostfwd of its QEMU, in that namespace; what vmtest.sh does over ssh) and a vsock sink on
# port 12345 (every connection's bytes appended to /tmp/recv), then waits for L1's
# "touch /tmp/stop". L1 drives every test.
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
load_stack virtio loopback || return
socat -u VSOCK-LISTEN:12345,fork,reuseaddr OPEN:/tmp/recv,creat,append &
socat -t 900 TCP-LISTEN:5000,fork,reuseaddr EXEC:/bin/sh,stderr &
# Ready once both listen (a slow guest, e.g. on the sanitizer kernel, took longer to start
# socat than to print this line, and L1's first command found nobody behind the NAT).
wait_tcp_listen 5000 120
i=0; while ! ss --listening --vsock --numeric | grep -q ':12345 ' && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
echo "RVSOCK-L2-READY"
while [ ! -e /tmp/stop ]; do sleep 0.5; done
