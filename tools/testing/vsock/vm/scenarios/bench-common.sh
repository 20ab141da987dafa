# `make bench`, shared by the L2 scripts of the nested bench (they source it).

# two_guests_stream READY-MARKER CID: an L2 guest's half of the two-guests phase: wait for the
# host's go (a 1-byte stream to port 7398), then stream 64 KiB writes to the host for MS ms
# (the host's sink serves each guest in a thread of its own) and print the result as
# "RVSOCK-BENCH-GUEST stack round cid guests_tput_64k value unit better".
two_guests_stream() {
    rvsock-tests stream-recv --port 7398 --count 1 --timeout $((1800 * $(l2_scale))) --name bench-go2 > /tmp/go2.out 2>&1 &
    go2=$!
    wait_polling "$go2" $((30 * $(l2_scale))) || sleep 1
    echo "$1"
    reap "$go2" $((1800 * $(l2_scale)))
    rvsock-tests bench --remote --peer-cid 2 --port 7300 --ms "$MS" --only guests_tput_64k |
        sed -e "s/^RVSOCK-BENCH /RVSOCK-BENCH-GUEST $MODS $ROUND $2 /" -e "/^RVSOCK-BENCH-CPU /d"
    echo "RVSOCK-BENCH-DONE2"
}
