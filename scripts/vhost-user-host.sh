#!/usr/bin/env bash
# Host side of the vhost-user-guest scenarios: the Unix-socket peers of vhost-device-vsock.
# Usage: scripts/vhost-user-host.sh SERIAL_LOG UDS_PATH   (results on stdout)
set -u
. "$(dirname "$0")/lib.sh"
LOG=$1 UDS=$2 SCRIPT=${3:-vhost-user-guest}
T=$TOP/build/tools$BUILD_TAG/rvsock-tests
if [ "$SCRIPT" = installed ]; then
    # rvsock-install: one stream from the installed stack, one after the uninstall.
    "$T" uds-recv --listen "${UDS}_1234" --count 2 --name installed.g2h.host --timeout 600
    exit 0
fi
if [ "$SCRIPT" = installed-next-boot ]; then
    # rvsock-install's second boot: one stream from the in-tree stack that loaded itself.
    "$T" uds-recv --listen "${UDS}_1234" --count 1 --name next-boot.g2h.host --timeout 600
    exit 0
fi
"$T" uds-recv --listen "${UDS}_1234" --count 1 --name g2h.64MiB.host --timeout 300 &
"$T" uds-recv --listen "${UDS}_1235" --count 100 --name g2h.100conns.host --timeout 300 &
# Device unbind/rebind in the guest (vhost-user-guest.sh): the 1236 transfer is cut by the
# unbind (its verdict is the guest's: discarded here); 1237 runs after the rebind.
"$T" uds-recv --listen "${UDS}_1236" --count 1 --name unbind.inflight.host --timeout 60 > /dev/null 2>&1 &
"$T" uds-recv --listen "${UDS}_1237" --count 1 --name rebind.g2h.host --timeout 300 &
# System sleep in the guest, after its driver was unloaded and loaded again: 1238 is cut by
# the driver's freeze (discarded), 1239 runs after the resume.
"$T" uds-recv --listen "${UDS}_1238" --count 1 --name sleep.inflight.host --timeout 300 > /dev/null 2>&1 &
"$T" uds-recv --listen "${UDS}_1239" --count 1 --name sleep.resume.g2h.host --timeout 300 &
for _ in $(seq 1 3000); do
    grep -aq RVSOCK-H2G-READY "$LOG" 2>/dev/null && break
    sleep 0.2
done
if grep -aq RVSOCK-H2G-READY "$LOG"; then
    "$T" uds-send --uds "$UDS" --port 2000 --bytes 64m --seed 7 --name h2g.64MiB.host --timeout 300
else
    echo "RVSOCK-TEST fail h2g.64MiB.host"
fi
wait
