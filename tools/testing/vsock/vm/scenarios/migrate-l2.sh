# rvsock-migrate / c-migrate, L2 (the guest) of migrate-l1.sh, migrated while it runs (its
# console moves to each destination's log): a listener open throughout (one stream after the
# migrations, checked by hash), a stream from the host and one to the host in flight (a reset
# allowed), then its own CID as /dev/vsock reports it.
load_stack virtio || return
echo "RVSOCK-L2-READY"
rvsock-tests stream-recv --port 5000 --count 1 --timeout 900 --name migrate.h2g.after.guest &
after=$!
rvsock-tests stream-recv --port 5001 --count 1 --timeout 600 --reset-ok --name migrate.h2g.in-flight.guest &
h2g=$!
sleep 1
echo "RVSOCK-MIGRATE-LISTENING"
rvsock-tests stream-send --cid 2 --port 6000 --bytes 256m --seed 61 --timeout 600 --reset-ok --name migrate.g2h.in-flight.guest &
g2h=$!
wait "$h2g"; wait "$g2h"; wait "$after"
rvsock-tests local-cid
