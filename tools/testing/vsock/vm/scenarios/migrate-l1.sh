# rvsock-migrate / c-migrate, L1 (the host; nested topology as nested-l1.sh). An L2 guest
# (CID 3) is live-migrated 10 times between QEMUs in this L1 (each destination started with
# -incoming on a Unix socket, its vsock device alternating CID 4 and 3; QEMU tells the guest
# with a TRANSPORT_RESET event, the guest re-reads its CID), while a host-to-guest and a
# guest-to-host stream are in flight: each completes with the right bytes or ends in a
# connection reset, never wrong bytes or a hang. Afterwards the guest's listener, open all
# along, takes a new stream at the last CID; the other CID answers nothing; the guest reports
# the last CID as its own. Results: migrate.completed (all 10), the four streams, old CID,
# the guest's CID (6 here, 3 from the guest's console).
L2MODS=$(arg rvsock_l2mods)
load_stack vhost || return
N=10
# The guest's stream to the host starts as soon as it is up: listen first.
rvsock-tests stream-recv --port 6000 --count 1 --timeout 900 --reset-ok --name migrate.g2h.in-flight.host &
g2h=$!
if boot_l2 /tmp/l2.log 3 256M migrate-l2; then
    cur=$qemu curmon=/tmp/l2.log.mon cid=3
    S=$(l2_scale)
    wait_for /tmp/l2.log "RVSOCK-MIGRATE-LISTENING" $((60 * S)) || echo "# the guest's listeners never came up"
    # In flight during the migrations (a reset is allowed, wrong bytes are not).
    rvsock-tests stream-send --cid 3 --port 5001 --bytes 256m --seed 51 --timeout $((300 * S)) --reset-ok --name migrate.h2g.in-flight.host &
    h2g=$!
    sleep 1
    ok=0
    for i in $(seq 1 $N); do
        new=$((7 - cid))   # 3 <-> 4
        log=/tmp/l2-m$i.log
        rm -f /tmp/mig.sock "$log.mon.in" "$log.mon.out"; mkfifo "$log.mon.in" "$log.mon.out"
        l2_qemu "$log" "$new" 256M migrate-l2 -incoming unix:/tmp/mig.sock -monitor "pipe:$log.mon" >> /tmp/qemu.out 2>&1 &
        nxt=$!
        cat "$log.mon.out" > "$log.mon.txt" &
        for _ in $(seq 1 100); do [ -S /tmp/mig.sock ] && break; sleep 0.1; done
        cat "$curmon.out" > "$curmon.txt" &
        monr=$!
        echo "migrate -d unix:/tmp/mig.sock" > "$curmon.in"
        st=
        for _ in $(seq 1 $((240 * S))); do
            echo "info migrate" > "$curmon.in"
            sleep 0.5
            st=$(grep -o "Migration status: [a-z]*" "$curmon.txt" | tail -n 1)
            case "$st" in *completed|*failed|*cancelled) break ;; esac
        done
        echo "# migration $i: CID $cid -> $new: $st ($(grep -o 'total time: [0-9]* ms' "$curmon.txt" | tail -n 1))"
        echo quit > "$curmon.in"; reap "$cur" 20; kill "$monr" 2>/dev/null
        case "$st" in *completed) ok=$((ok + 1)) ;; *) break ;; esac
        cur=$nxt curmon=$log.mon cid=$new last=$log
    done
    if [ "$ok" = "$N" ]; then result ok migrate.completed; else result fail migrate.completed; fi
    reap "$h2g" $((300 * S)); reap "$g2h" $((300 * S))
    # The listener survived every TRANSPORT_RESET and answers at the last CID.
    rvsock-tests stream-send --cid "$cid" --port 5000 --bytes 1m --seed 44 --timeout $((60 * S)) --name migrate.h2g.after.host
    # The other CID answers nothing.
    if rvsock-tests stream-send --cid $((7 - cid)) --port 5000 --bytes 1 --timeout 5 --name old > /tmp/old.out 2>&1; then
        cat /tmp/old.out; result fail migrate.old-cid-gone
    else
        grep "^#" /tmp/old.out | head -n 2; result ok migrate.old-cid-gone
    fi
    # The guest says which CID it has (its console is the last destination's log).
    wait_for "${last:-/tmp/l2.log}" "local cid" $((60 * S))
    if tr -d '\r' < "${last:-/tmp/l2.log}" | grep -qx "# local cid $cid"; then result ok migrate.guest-cid; else grep "local cid" "${last:-/tmp/l2.log}"; result fail migrate.guest-cid; fi
    echo quit > "$curmon.in" 2>/dev/null; reap "$cur" $((60 * S))
else
    result fail "l2-never-ready"
    kill -9 "$qemu" "$g2h" 2>/dev/null
fi
echo "qemu output:"; cat /tmp/qemu.out
for f in /tmp/l2.log /tmp/l2-m*.log; do
    [ -f "$f" ] || continue
    echo "RVSOCK-L2-LOG-BEGIN ($f)"; sed 's/^/L2| /' "$f"; echo "RVSOCK-L2-LOG-END"
done
