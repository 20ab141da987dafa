# `make demo`: show rvsock carrying real traffic inside a VM.
echo "================ rvsock demo ================"
load_stack loopback || return
echo "--- the vsock stack in this VM is rvsock (Rust):"
grep -E '^rvsock' /proc/modules | cut -d' ' -f1
echo "--- 64 MiB over AF_VSOCK STREAM to CID 1 (loopback), checked by hash:"
rvsock-tests stream-recv --port 5000 --count 1 --name demo.recv > /tmp/recv.out 2>&1 &
sleep 0.5
rvsock-tests stream-send --cid 1 --port 5000 --bytes 64m --name demo.send
wait; cat /tmp/recv.out
echo "--- 200 concurrent connections, 256 KiB each:"
rvsock-tests stream-recv --port 5001 --count 200 --name demo.recv200 > /tmp/recv2.out 2>&1 &
sleep 0.5
rvsock-tests concurrent --cid 1 --port 5001 --conns 200 --bytes 256k --name demo.concurrent
wait; cat /tmp/recv2.out
echo "--- upstream vsock_perf (same linux-source) over rvsock loopback:"
vsock_perf --port 5002 --bytes 32M > /tmp/perf.out 2>&1 &
sleep 0.5
vsock_perf --sender 1 --port 5002 --bytes 32M
wait; cat /tmp/perf.out
echo "================ demo done ================"
