# Nested, the second L2 guest (CID 4) of the two-guests phase of nested-l1.sh: takes a stream
# from the host while the first guest takes one too, then sends one back.
load_stack virtio || return
S=$(l2_scale)   # 4 when this guest runs under TCG (rvsock_l2_accel=tcg), else 1
rvsock-tests stream-recv --port 3000 --count 1 --timeout $((600 * S)) --name two-guests.h2g.cid4.guest > /tmp/recv.out 2>&1 &
recv=$!
wait_polling "$recv" $((30 * S)) || sleep 1   # listening: the host connects once
echo "RVSOCK-L2-READY"
reap "$recv" $((700 * S))
cat /tmp/recv.out
rvsock-tests stream-send --cid 2 --port 3001 --bytes 16m --seed 42 --timeout $((300 * S)) --name two-guests.g2h.cid4.guest
