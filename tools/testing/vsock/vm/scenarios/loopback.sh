# One VM: upstream vsock_test over CID 1 (local transport), server and client in this VM.
load_stack loopback || return
vsock_test --mode=server --control-port=1234 --peer-cid=1 $(arg rvsock_vtargs | tr , " ") > /tmp/server.out 2>&1 &
server=$!
sleep 1
# rvsock_vtargs=a,b,c on the kernel command line adds vsock_test options (debugging aid).
extra=$(arg rvsock_vtargs | tr , ' ')
run_vsock_test "" /tmp/client.out --mode=client --control-host=127.0.0.1 --control-port=1234 --peer-cid=1 $extra
reap_server "$server" 20 /tmp/server.out
# The newest upstream vsock_test (Linux 7.3), each test on its own. rvsock_vt7_only=ID,ID on
# the kernel command line (RVSOCK_KARGS) runs only those tests (debugging aid).
VT7_ONLY=$(arg rvsock_vt7_only | tr , ' ') run_vsock_test_each "" 1
