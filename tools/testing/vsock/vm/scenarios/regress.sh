# regress: one VM with the loopback AND the vhost transports (CID 2 is then a local CID,
# and rvsock-tests can play a guest on /dev/vhost-vsock). rvsock-tests regress runs one test
# per reviewed kernel defect (races around accept and connect, per-packet memory, MSG_ZEROCOPY
# completions, bindings kept across resets, bind side effects, source CIDs, SO_RCVLOWAT,
# SEQPACKET negotiation). MODS=c is the in-tree reference: defects the in-tree stack shares
# are reported there as skips. The sanitizer kernel runs shorter loops (RVSOCK_REGRESS_SCALE).
load_stack loopback vhost || return
ref=""
[ "$MODS" = c ] && ref=--reference
scale=100
case "$SCENARIO" in *-kasan) scale=35 ;; esac
# Debugging aids (RVSOCK_KARGS): rvsock_regress_scale=PCT, rvsock_regress_only=SUBSTRING.
[ -n "$(arg rvsock_regress_scale)" ] && scale=$(arg rvsock_regress_scale)
only=$(arg rvsock_regress_only)
RVSOCK_REGRESS_SCALE=$scale rvsock-tests regress $ref ${only:+--only "$only"}
echo "rvsock-tests regress exited $?"
