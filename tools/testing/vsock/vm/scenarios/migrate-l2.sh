# rvsock-migrate / c-migrate, L2 (the guest) of migrate-l1.sh, migrated while it runs (its
# console moves to each destination's log): listeners open throughout (one stream after the
# migrations, one after the snapshot's restore, checked by hash), a stream from the host and
# one to the host in flight during the migrations and again during the snapshot (a reset
# allowed), and its own CID as /dev/vsock reports it after each.
load_stack virtio || return
RESET=--reset-ok
[ "$MODS" = rvsock ] && RESET="--reset-as ECONNRESET"
echo "RVSOCK-L2-READY"
rvsock-tests stream-recv --port 5000 --count 1 --timeout 900 --name migrate.h2g.after.guest &
after=$!
rvsock-tests stream-recv --port 5001 --count 1 --timeout 600 $RESET --name migrate.h2g.in-flight.guest &
h2g=$!
rvsock-tests stream-recv --port 5002 --count 1 --timeout 1200 $RESET --name snapshot.h2g.in-flight.guest &
snap_h2g=$!
rvsock-tests stream-recv --port 5003 --count 1 --timeout 1200 --name snapshot.go.guest &
go=$!
rvsock-tests stream-recv --port 5004 --count 1 --timeout 1500 --name snapshot.h2g.after.guest &
snap_after=$!
sleep 1
echo "RVSOCK-MIGRATE-LISTENING"
rvsock-tests stream-send --cid 2 --port 6000 --bytes 256m --seed 61 --timeout 600 $RESET --name migrate.g2h.in-flight.guest &
g2h=$!
wait "$h2g"; wait "$g2h"; wait "$after"
rvsock-tests local-cid
# The snapshot: the host sends a byte to port 5003 first.
wait "$go"
rvsock-tests stream-send --cid 2 --port 6001 --bytes 256m --seed 62 --timeout 600 $RESET --name snapshot.g2h.in-flight.guest &
g2h=$!
wait "$snap_h2g"; wait "$g2h"; wait "$snap_after"
rvsock-tests local-cid
