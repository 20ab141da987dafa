# `make bench`, the second L2 guest (CID 4) of bench-nested.sh's two-guests phase: streams to
# the host at the same time as the first guest (two_guests_stream, in bench-common.sh).
. /rvsock/scenarios/bench-common.sh
ROUND=$(arg rvsock_round); MS=$(arg rvsock_ms)
load_stack virtio || return
two_guests_stream RVSOCK-L2-READY 4
