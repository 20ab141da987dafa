# Helpers of rvsock-install's two boots (installed.sh, installed-next-boot.sh); sourced.
KVER=$(uname -r)
coldplug() { for f in /sys/bus/*/devices/*/modalias; do modprobe -b -q "$(cat "$f")" 2>/dev/null; done; }
loaded() { cut -d' ' -f1 /proc/modules | tr '\n' ' '; }
has() { case " $(loaded) " in *" $1 "*) return 0 ;; esac; return 1; }
check() { # NAME CONDITION...: a result from a shell condition, with the modules loaded
    _n=$1; shift
    if "$@"; then result ok "$_n"; else echo "# $_n: modules loaded: $(loaded)"; result fail "$_n"; fi
}
vsock_driver() {
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device")" = 0x0013 ] && basename "$(readlink -f "$d/driver")"
    done
}
intree_loaded() { for m in vsock vmw_vsock_virtio_transport vmw_vsock_virtio_transport_common vsock_loopback vhost_vsock vsock_diag; do has "$m" && return 0; done; return 1; }
no_intree() { ! intree_loaded; }
no_rvsock() { ! has rvsock; }
