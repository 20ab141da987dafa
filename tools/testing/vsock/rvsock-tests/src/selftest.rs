//! `selftest`: a battery of AF_VSOCK checks run with both ends in this
//! process (normally over loopback, CID 1). It runs unchanged against the
//! in-tree C stack and against rvsock; the expected values are what the
//! in-tree 6.12 code does (see the function names cited in ERRNO_TABLE).

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use libc::{
    EADDRINUSE, EADDRNOTAVAIL, EAGAIN, ECONNRESET, EHOSTUNREACH, EINPROGRESS, EINVAL, EISCONN, ENETUNREACH, ENODEV,
    ENOPROTOOPT, ENOTCONN, ENOTTY, EOPNOTSUPP, EPIPE, EPROTONOSUPPORT, ERANGE, ESOCKTNOSUPPORT, ETIMEDOUT,
};

use crate::args::Args;
use crate::proto;
use crate::report::{OrFail, Out, Outcome, TestResult};
use crate::sys::{self, AF_VSOCK, SOL_VSOCK_OPTS, VMADDR_CID_ANY as ANY, VMADDR_PORT_ANY as PORT_ANY};

/// Per-syscall timeout on every test socket (SO_RCVTIMEO/SO_SNDTIMEO, poll).
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle timeout of the transfer engines.
const IDLE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy)]
pub struct Ctx {
    peer: u32,
    conns: usize,
    bytes: u64,
    unreachable_cid: u32,
}

type TestFn = fn(&Ctx, &Out) -> TestResult;

/// (name, function, watchdog limit in seconds)
const TESTS: &[(&str, TestFn, u64)] = &[
    ("local_cid", t_local_cid, 10),
    ("siocinq", t_siocinq, 30),
    ("siocoutq", t_siocoutq, 30),
    ("nonblock_connect", t_nonblock_connect, 30),
    ("connect_timeout.setget", t_timeout_setget, 10),
    ("connect_timeout.expire", t_timeout_expire, 30),
    ("buffer_size", t_buffer_size, 10),
    ("backlog", t_backlog, 60),
    ("transfer", t_transfer, 120),
    ("half_close", t_half_close, 60),
    ("concurrent", t_concurrent, 300),
];

pub fn run(a: &Args) -> Result<(), String> {
    let ctx = Ctx {
        peer: a.u32_or("peer-cid", 1)?,
        conns: a.usize_or("conns", 1000)?,
        bytes: a.u64_or("bytes", 32 * 1024)?,
        unreachable_cid: a.u32_or("unreachable-cid", 12345)?,
    };
    let only = a.str_opt("only").map(str::to_string);
    a.check_unused()?;
    let selected = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let want = 2 * ctx.conns as u64 + 256;
    match sys::raise_nofile(want) {
        Ok(n) if n < want => Out::default().info(format!("RLIMIT_NOFILE is only {n}, wanted {want}")),
        Ok(_) => {}
        Err(e) => Out::default().info(format!("setrlimit(RLIMIT_NOFILE): {}", sys::describe(&e))),
    }
    for &(name, f, secs) in TESTS {
        let name = format!("selftest.{name}");
        if selected(&name) {
            guarded(&name, Duration::from_secs(secs), move |out| f(&ctx, out));
        }
    }
    for &(case, expect, origin) in ERRNO_TABLE {
        let name = format!("selftest.errno.{case}");
        if selected(&name) {
            guarded(&name, Duration::from_secs(20), move |out| errno_test(case, expect, origin, &ctx, out));
        }
    }
    Ok(())
}

/// Run `f` on its own thread; if it has not reported within `limit` (a hung
/// kernel path), report it as failed and move on.
fn guarded(name: &str, limit: Duration, f: impl FnOnce(&Out) -> TestResult + Send + 'static) {
    let out = Out::default();
    let (tx, rx) = mpsc::channel();
    let (o2, n2) = (out.clone(), name.to_string());
    let spawned = thread::Builder::new().name(name.chars().take(15).collect()).spawn(move || {
        let r = f(&o2);
        o2.result(&n2, &r);
        let _ = tx.send(());
    });
    if let Err(e) = spawned {
        out.result(name, &Err(format!("cannot spawn test thread: {e}")));
        return;
    }
    match rx.recv_timeout(limit) {
        Ok(()) => {}
        Err(RecvTimeoutError::Timeout) => {
            out.abandon(name, &format!("did not finish within {}s (hung syscall?)", limit.as_secs()));
        }
        Err(RecvTimeoutError::Disconnected) => {
            out.abandon(name, "test thread panicked");
        }
    }
}

// ------------------------------------------------------------ helpers

fn stream() -> io::Result<OwnedFd> {
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0)?;
    sys::set_io_timeout(&s, IO_TIMEOUT)?;
    Ok(s)
}

fn listener(backlog: i32) -> io::Result<(OwnedFd, u32)> {
    let l = stream()?;
    sys::bind_vm(&l, ANY, PORT_ANY)?;
    sys::listen(&l, backlog)?;
    let port = sys::local_addr(&l)?.svm_port;
    Ok((l, port))
}

/// A listener plus one connection through it: client `c`, accepted `s`.
struct Pair {
    _l: OwnedFd,
    c: OwnedFd,
    s: OwnedFd,
    port: u32,
}

fn pair(ctx: &Ctx) -> Result<Pair, String> {
    let (l, port) = listener(16).or_fail("listener")?;
    let c = stream().or_fail("socket")?;
    sys::connect_vm(&c, ctx.peer, port).or_fail(&format!("connect to {}:{port}", ctx.peer))?;
    let s = sys::accept(&l, false).or_fail("accept")?;
    sys::set_io_timeout(&s, IO_TIMEOUT).or_fail("set timeouts")?;
    Ok(Pair { _l: l, c, s, port })
}

/// A port with no listener (bound once by a socket that is closed again).
fn free_port() -> io::Result<u32> {
    let s = stream()?;
    sys::bind_vm(&s, ANY, PORT_ANY)?;
    Ok(sys::local_addr(&s)?.svm_port)
}

fn wait_for(fd: &OwnedFd, events: i16, what: &str) -> Result<i16, String> {
    match sys::poll_one(fd, events, IO_TIMEOUT).or_fail("poll")? {
        0 => Err(format!("timed out after {}s waiting for {what}", IO_TIMEOUT.as_secs())),
        r => Ok(r),
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    proto::fill(seed, 0, &mut v);
    v
}

fn send_all(fd: &OwnedFd, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        let n = sys::send(fd, data, 0).or_fail("send")?;
        data = &data[n..];
    }
    Ok(())
}

fn read_exact(fd: &OwnedFd, n: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match sys::recv(fd, &mut v[got..], 0).or_fail("recv")? {
            0 => return Err(format!("EOF after {got} of {n} bytes")),
            k => got += k,
        }
    }
    Ok(v)
}

/// Poll `f` every 10 ms for up to 2 s until it returns `want`.
fn eventually(what: &str, want: i32, mut f: impl FnMut() -> io::Result<i32>) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        let v = f().or_fail(what)?;
        if v == want {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(2) {
            return Err(format!("{what} = {v}, expected {want}"));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {want:?}"))
    }
}

fn unsupported_ioctl(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ENOTTY) | Some(EOPNOTSUPP))
}

// ------------------------------------------------------------ tests

fn t_local_cid(_: &Ctx, out: &Out) -> TestResult {
    let f = File::open("/dev/vsock").or_fail("open /dev/vsock")?;
    let cid = sys::ioctl_int(&f, sys::IOCTL_VM_SOCKETS_GET_LOCAL_CID).or_fail("IOCTL_VM_SOCKETS_GET_LOCAL_CID")?;
    out.info(format!("local CID: {}", cid as u32));
    // Any other ioctl: ENOTTY, as in-tree's -ENOIOCTLCMD turns into (isatty(3) asks TCGETS).
    match sys::ioctl_int(&f, libc::TCGETS) {
        Err(e) if e.raw_os_error() == Some(ENOTTY) => Ok(Outcome::Pass),
        r => Err(format!("TCGETS on /dev/vsock: {r:?}, expected ENOTTY")),
    }
}

fn t_siocinq(ctx: &Ctx, _: &Out) -> TestResult {
    const K: usize = 1000;
    let p = pair(ctx)?;
    send_all(&p.c, &pattern(K, 1))?;
    wait_for(&p.s, libc::POLLIN, "data")?;
    if let Err(e) = sys::ioctl_int(&p.s, sys::SIOCINQ) {
        return if unsupported_ioctl(&e) {
            Ok(Outcome::Skip(format!("SIOCINQ not implemented for AF_VSOCK here: {}", sys::describe(&e))))
        } else {
            Err(format!("ioctl(SIOCINQ): {}", sys::describe(&e)))
        };
    }
    eventually("SIOCINQ after peer sent 1000", K as i32, || sys::ioctl_int(&p.s, sys::SIOCINQ))?;
    read_exact(&p.s, 300)?;
    check("SIOCINQ after reading 300", sys::ioctl_int(&p.s, sys::SIOCINQ).or_fail("ioctl(SIOCINQ)")?, 700)?;
    read_exact(&p.s, 700)?;
    check("SIOCINQ after reading all", sys::ioctl_int(&p.s, sys::SIOCINQ).or_fail("ioctl(SIOCINQ)")?, 0)?;
    Ok(Outcome::Pass)
}

fn t_siocoutq(ctx: &Ctx, _: &Out) -> TestResult {
    const K: usize = 64 * 1024;
    let p = pair(ctx)?;
    if let Err(e) = sys::ioctl_int(&p.c, sys::SIOCOUTQ) {
        return if unsupported_ioctl(&e) {
            Ok(Outcome::Skip(format!("SIOCOUTQ not implemented here: {}", sys::describe(&e))))
        } else {
            Err(format!("ioctl(SIOCOUTQ): {}", sys::describe(&e)))
        };
    }
    let data = pattern(K, 2);
    send_all(&p.c, &data)?;
    check("data", read_exact(&p.s, K)? == data, true)?;
    eventually("SIOCOUTQ after the peer read everything", 0, || sys::ioctl_int(&p.c, sys::SIOCOUTQ))?;
    Ok(Outcome::Pass)
}

fn t_nonblock_connect(ctx: &Ctx, _: &Out) -> TestResult {
    let (l, port) = listener(16).or_fail("listener")?;
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    match sys::connect_vm(&c, ctx.peer, port) {
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Ok(()) => return Err("non-blocking connect returned 0; in-tree returns EINPROGRESS (vsock_connect)".into()),
        Err(e) => return Err(format!("connect: {}", sys::describe(&e))),
    }
    let rev = wait_for(&c, libc::POLLOUT, "POLLOUT after connect")?;
    if rev & (libc::POLLERR | libc::POLLHUP) != 0 || rev & libc::POLLOUT == 0 {
        return Err(format!("poll revents {rev:#x}, expected POLLOUT without POLLERR/POLLHUP"));
    }
    check("SO_ERROR", sys::so_error(&c).or_fail("SO_ERROR")?, 0)?;
    check("getpeername port", sys::peer_addr(&c).or_fail("getpeername")?.svm_port, port)?;
    sys::set_nonblocking(&c, false).or_fail("fcntl")?;
    sys::set_io_timeout(&c, IO_TIMEOUT).or_fail("set timeouts")?;
    let s = sys::accept(&l, false).or_fail("accept")?;
    sys::set_io_timeout(&s, IO_TIMEOUT).or_fail("set timeouts")?;
    let (a, b) = (pattern(8192, 3), pattern(8192, 4));
    send_all(&c, &a)?;
    check("client->server data", read_exact(&s, a.len())? == a, true)?;
    send_all(&s, &b)?;
    check("server->client data", read_exact(&c, b.len())? == b, true)?;
    Ok(Outcome::Pass)
}

fn get_tv(fd: &OwnedFd, opt: i32) -> Result<(i64, i64), String> {
    let mut b = [0u8; 16];
    let n = sys::getsockopt(fd, SOL_VSOCK_OPTS, opt, &mut b).or_fail("getsockopt(CONNECT_TIMEOUT)")?;
    check("optlen", n, 16)?;
    sys::timeval_from_bytes(&b).ok_or_else(|| "short timeval".to_string())
}

fn set_tv(fd: &OwnedFd, opt: i32, sec: i64, usec: i64) -> Result<(), String> {
    sys::setsockopt(fd, SOL_VSOCK_OPTS, opt, &sys::timeval_bytes(sec, usec)).or_fail("setsockopt(CONNECT_TIMEOUT)")
}

fn t_timeout_setget(_: &Ctx, _: &Out) -> TestResult {
    use sys::{SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW as NEW, SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD as OLD};
    let s = stream().or_fail("socket")?;
    // VSOCK_DEFAULT_CONNECT_TIMEOUT is 2 * HZ.
    check("default", get_tv(&s, NEW)?, (2, 0))?;
    // 1.5 s is a whole number of jiffies for HZ = 100/250/300/1000.
    set_tv(&s, NEW, 1, 500_000)?;
    check("NEW after set NEW 1.5s", get_tv(&s, NEW)?, (1, 500_000))?;
    check("OLD after set NEW 1.5s", get_tv(&s, OLD)?, (1, 500_000))?;
    set_tv(&s, OLD, 3, 0)?;
    check("NEW after set OLD 3s", get_tv(&s, NEW)?, (3, 0))?;
    // A zero timeout restores the default (vsock_connectible_setsockopt).
    set_tv(&s, NEW, 0, 0)?;
    check("after set 0", get_tv(&s, NEW)?, (2, 0))?;
    Ok(Outcome::Pass)
}

fn t_timeout_expire(ctx: &Ctx, _: &Out) -> TestResult {
    let s = stream().or_fail("socket")?;
    set_tv(&s, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, 0, 300_000)?;
    let t0 = Instant::now();
    let r = sys::connect_vm(&s, ctx.unreachable_cid, 1234);
    let dt = t0.elapsed();
    match sys::errno_of(&r) {
        ETIMEDOUT if dt >= Duration::from_millis(250) && dt < Duration::from_secs(3) => Ok(Outcome::Pass),
        ETIMEDOUT => Err(format!("ETIMEDOUT after {dt:?}, expected about 300ms")),
        e @ (ENODEV | ECONNRESET | ENETUNREACH | EHOSTUNREACH) => Ok(Outcome::Skip(format!(
            "connect to CID {} failed with {} after {dt:?}: nothing on this path drops packets silently, so ETIMEDOUT \
             cannot be provoked (loopback always answers)",
            ctx.unreachable_cid,
            sys::errno_name(e)
        ))),
        0 => Err(format!("connect to CID {} succeeded", ctx.unreachable_cid)),
        e => Err(format!("connect failed with {} after {dt:?}", sys::errno_name(e))),
    }
}

fn t_buffer_size(_: &Ctx, _: &Out) -> TestResult {
    use sys::{
        SO_VM_SOCKETS_BUFFER_MAX_SIZE as MAX, SO_VM_SOCKETS_BUFFER_MIN_SIZE as MIN, SO_VM_SOCKETS_BUFFER_SIZE as SIZE,
    };
    let s = stream().or_fail("socket")?;
    let get = |opt| sys::getsockopt_u64(&s, SOL_VSOCK_OPTS, opt).or_fail("getsockopt");
    let set = |opt, v: u64| sys::setsockopt(&s, SOL_VSOCK_OPTS, opt, &v.to_ne_bytes()).or_fail("setsockopt");
    // VSOCK_DEFAULT_BUFFER_{SIZE,MIN_SIZE,MAX_SIZE}
    check("default size", get(SIZE)?, 256 * 1024)?;
    check("default min", get(MIN)?, 128)?;
    check("default max", get(MAX)?, 256 * 1024)?;
    // vsock_update_buffer_size clamps into [min, max].
    set(SIZE, 1 << 20)?;
    check("size above max", get(SIZE)?, 256 * 1024)?;
    set(SIZE, 64)?;
    check("size below min", get(SIZE)?, 128)?;
    set(MAX, 1 << 20)?;
    set(SIZE, 1 << 19)?;
    check("size after raising max", get(SIZE)?, 1 << 19)?;
    // The minimum is applied first, the maximum last: a minimum above the maximum leaves the
    // size at the maximum (in-tree's order; rvsock took the minimum, above the maximum).
    let f = stream().or_fail("socket")?;
    sys::setsockopt(&f, SOL_VSOCK_OPTS, MIN, &(1u64 << 20).to_ne_bytes()).or_fail("setsockopt")?;
    check("size after a minimum above the maximum", sys::getsockopt_u64(&f, SOL_VSOCK_OPTS, SIZE).or_fail("getsockopt")?, 256 * 1024)?;
    Ok(Outcome::Pass)
}

fn t_backlog(ctx: &Ctx, out: &Out) -> TestResult {
    const B: usize = 4;
    const EXTRA: usize = 4;
    let (l, port) = listener(B as i32).or_fail("listener")?;
    let (mut ok, mut reset) = (Vec::new(), 0);
    for i in 0..B + EXTRA {
        let c = stream().or_fail("socket")?;
        match sys::connect_vm(&c, ctx.peer, port) {
            Ok(()) => ok.push(c),
            Err(e) if e.raw_os_error() == Some(ECONNRESET) => reset += 1,
            Err(e) => return Err(format!("connect #{i}: {} (expected success or ECONNRESET)", sys::describe(&e))),
        }
    }
    out.info(format!("backlog {B}: {} connects succeeded, {reset} got ECONNRESET", ok.len()));
    // sk_acceptq_is_full() is "ack_backlog > max_ack_backlog": B + 1 fit.
    if !(B..=B + 1).contains(&ok.len()) {
        return Err(format!("{} connects succeeded, expected {B} or {}", ok.len(), B + 1));
    }
    for c in &ok {
        send_all(c, b"x")?;
    }
    for i in 0..ok.len() {
        let s = sys::accept(&l, false).or_fail(&format!("accept #{i} of the queued connections"))?;
        sys::set_io_timeout(&s, IO_TIMEOUT).or_fail("set timeouts")?;
        check("byte from queued connection", read_exact(&s, 1)?, b"x".to_vec())?;
    }
    let c = stream().or_fail("socket")?;
    sys::connect_vm(&c, ctx.peer, port).or_fail("connect after draining the queue")?;
    sys::accept(&l, false).or_fail("accept after draining the queue")?;
    Ok(Outcome::Pass)
}

/// `conns` concurrent connections of `bytes` each through the proto engines.
fn engine_roundtrip(ctx: &Ctx, out: &Out, conns: usize, bytes: u64, eof: bool) -> TestResult {
    let backlog = i32::try_from(conns + 16).unwrap_or(i32::MAX);
    let (l, port) = listener(backlog).or_fail("listener")?;
    sys::set_nonblocking(&l, true).or_fail("fcntl")?;
    let server = thread::spawn(move || proto::run_server(&l, conns, 64 * 1024, IDLE));
    let t0 = Instant::now();
    let clients =
        (0..conns).map(|i| proto::start_vsock_client(ctx.peer, port, 0x5eed + i as u64, bytes, eof, IDLE)).collect();
    let cr = proto::run_clients(clients, 64 * 1024, IDLE);
    let sr = server.join().map_err(|_| "server thread panicked".to_string())?;
    out.info(format!("{conns} connection(s) x {bytes} bytes in {:.2?}", t0.elapsed()));
    proto::summarize(&cr)?;
    if let Some(e) = sr.iter().find_map(|r| r.as_ref().err()) {
        return Err(format!("server side: {e}"));
    }
    check("connections served", sr.len(), conns)?;
    Ok(Outcome::Pass)
}

fn t_transfer(ctx: &Ctx, out: &Out) -> TestResult {
    engine_roundtrip(ctx, out, 1, 8 << 20, false)
}

fn t_half_close(ctx: &Ctx, out: &Out) -> TestResult {
    engine_roundtrip(ctx, out, 1, 1 << 20, true)
}

fn t_concurrent(ctx: &Ctx, out: &Out) -> TestResult {
    engine_roundtrip(ctx, out, ctx.conns, ctx.bytes, false)
}

// ------------------------------------------------------------ errno table

/// (case, expected errno (0 = success), in-tree function in
/// net/vmw_vsock/af_vsock.c (or the file named) that decides it).
const ERRNO_TABLE: &[(&str, i32, &str)] = &[
    ("socket.sock_raw", ESOCKTNOSUPPORT, "vsock_create"),
    ("socket.bad_protocol", EPROTONOSUPPORT, "vsock_create"),
    ("socket.protocol_pf_vsock", 0, "vsock_create"),
    ("socket.seqpacket", 0, "vsock_create"),
    ("socket.dgram_no_transport", ENODEV, "vsock_create -> vsock_assign_transport (no transport_dgram)"),
    ("bind.port_in_use", EADDRINUSE, "__vsock_bind_connectible"),
    ("bind.nonlocal_cid", EADDRNOTAVAIL, "__vsock_bind (vsock_find_cid)"),
    ("bind.twice", EINVAL, "__vsock_bind"),
    ("bind.after_connect", EINVAL, "__vsock_bind (autobound by connect)"),
    ("bind.wrong_family", EINVAL, "vsock_bind (vsock_addr_cast -> -EAFNOSUPPORT mapped to -EINVAL)"),
    ("bind.short_addrlen", EINVAL, "vsock_bind (vsock_addr_cast -> -EFAULT mapped to -EINVAL)"),
    ("bind.bad_flags", EINVAL, "vsock_bind (vsock_addr_validate)"),
    ("bind.reserved_port_as_root", 0, "__vsock_bind_connectible (CAP_NET_BIND_SERVICE; EACCES without it)"),
    ("connect.no_listener", ECONNRESET, "vsock_connect (sk_err from virtio_transport_recv_connecting OP_RST)"),
    ("connect.nonblock_refused.so_error", ECONNRESET, "virtio_transport_recv_connecting (sk_err = ECONNRESET)"),
    ("connect.on_listener", EINVAL, "vsock_connect (sk_state == TCP_LISTEN)"),
    ("connect.already_connected", EISCONN, "vsock_connect (SS_CONNECTED)"),
    ("connect.after_shutdown", EINVAL, "vsock_connect (SS_DISCONNECTING, set by vsock_shutdown)"),
    ("connect.short_addrlen", EINVAL, "vsock_connect (vsock_addr_cast)"),
    ("connect.wrong_family", EINVAL, "vsock_connect (vsock_addr_cast)"),
    ("listen.unbound", EINVAL, "vsock_listen (no autobind: !vsock_addr_bound)"),
    ("listen.connected", EINVAL, "vsock_listen (sock->state != SS_UNCONNECTED)"),
    ("accept.unbound", EINVAL, "vsock_accept (sk_state != TCP_LISTEN)"),
    ("accept.not_listening", EINVAL, "vsock_accept (sk_state != TCP_LISTEN)"),
    ("accept.nonblock_empty", EAGAIN, "vsock_accept (timeout 0)"),
    ("send.unconnected", ENOTCONN, "vsock_connectible_sendmsg"),
    ("send.oob", EOPNOTSUPP, "vsock_connectible_sendmsg (MSG_OOB)"),
    ("send.after_shut_wr", EPIPE, "vsock_connectible_sendmsg (SEND_SHUTDOWN)"),
    ("send.after_peer_close", EPIPE, "vsock_connectible_sendmsg (peer_shutdown & RCV_SHUTDOWN)"),
    ("send.after_refused_shutdown", EPIPE, "vsock_shutdown (SS_CONNECTING: sk_shutdown set) -> sendmsg"),
    ("send.nosignal_pending_error", ECONNRESET, "vsock_connectible_sendmsg -> sk_stream_error (sock_error first)"),
    ("sendto.unconnected_with_addr", EOPNOTSUPP, "vsock_connectible_sendmsg (msg_namelen, not established)"),
    ("sendto.connected_with_addr", EISCONN, "vsock_connectible_sendmsg (msg_namelen, established)"),
    ("recv.unconnected", ENOTCONN, "__vsock_connectible_recvmsg (!SOCK_DONE)"),
    ("recv.listening", ENOTCONN, "__vsock_connectible_recvmsg"),
    ("recv.oob", EOPNOTSUPP, "__vsock_connectible_recvmsg (MSG_OOB)"),
    ("recv.nonblock_empty", EAGAIN, "vsock_connectible_wait_data"),
    ("recv.after_shut_rd", 0, "__vsock_connectible_recvmsg (RCV_SHUTDOWN -> 0)"),
    ("recv.after_peer_close", 0, "__vsock_connectible_recvmsg (SOCK_DONE -> 0)"),
    ("recv.peek_fault_after_packet", 0, "virtio_transport_stream_do_peek (if (total) err = total)"),
    ("shutdown.bad_how", EINVAL, "vsock_shutdown (mode check precedes state check)"),
    ("shutdown.unconnected", ENOTCONN, "vsock_shutdown"),
    ("getpeername.unconnected", ENOTCONN, "vsock_getname"),
    ("getpeername.listening", ENOTCONN, "vsock_getname"),
    ("getsockname.unbound", 0, "vsock_getname"),
    ("setsockopt.unknown_opt", ENOPROTOOPT, "vsock_connectible_setsockopt"),
    ("setsockopt.bad_level", ENOPROTOOPT, "vsock_connectible_setsockopt"),
    ("setsockopt.buffer_size_short", EINVAL, "vsock_connectible_setsockopt (COPY_IN)"),
    ("setsockopt.timeout_usec_range", ERANGE, "vsock_connectible_setsockopt"),
    ("setsockopt.timeout_negative", ERANGE, "vsock_connectible_setsockopt"),
    ("setsockopt.timeout_negative_usec", 0, "vsock_connectible_setsockopt (no lower bound on tv_usec)"),
    ("setsockopt.timeout_short", EINVAL, "sock_copy_user_timeval (net/core/sock.c)"),
    ("setsockopt.rcvlowat_above_buffer", EINVAL, "vsock_set_rcvlowat (val > buffer_size)"),
    ("setsockopt.seqpacket_rcvlowat_above_buffer", 0, "sk_setsockopt (SEQPACKET ops: no set_rcvlowat)"),
    ("getsockopt.unknown_opt", ENOPROTOOPT, "vsock_connectible_getsockopt"),
    ("getsockopt.bad_level", ENOPROTOOPT, "vsock_connectible_getsockopt"),
    ("getsockopt.buffer_size_short", EINVAL, "vsock_connectible_getsockopt (len < lv)"),
    ("getsockopt.timeout_short", EINVAL, "vsock_connectible_getsockopt (len < lv)"),
    ("getsockopt.buffer_size_clamped_at_connect", 0, "virtio_transport_do_socket_init (u32 max)"),
    ("ioctl.siocoutq_unconnected", EOPNOTSUPP, "vsock_do_ioctl (no transport)"),
    ("ioctl.siocoutq_listening", EOPNOTSUPP, "vsock_do_ioctl (listeners have no transport)"),
    ("ioctl.unknown", ENOTTY, "vsock_do_ioctl -ENOIOCTLCMD -> sock_do_ioctl (net/socket.c)"),
];

fn errno_test(case: &str, expect: i32, origin: &str, ctx: &Ctx, out: &Out) -> TestResult {
    let got = errno_case(case, ctx).map_err(|e| format!("setup: {e}"))?;
    out.errno_row(case, got);
    if got == expect {
        Ok(Outcome::Pass)
    } else {
        Err(format!("got {}, expected {} (in-tree: {origin})", sys::errno_name(got), sys::errno_name(expect)))
    }
}

/// recv(MSG_PEEK) of two queued packets (100 and 8,000 bytes) into a buffer whose first 100
/// bytes are mapped and the rest not: the first packet's bytes (0), not EFAULT. Another count:
/// EMSGSIZE.
fn peek_fault(ctx: &Ctx) -> Result<i32, String> {
    let p = pair(ctx)?;
    sys::send(&p.c, &[7u8; 100], 0).or_fail("send 100")?;
    // Apart, so that neither stack merges them into one packet.
    wait_for(&p.s, libc::POLLIN, "the first packet")?;
    sys::send(&p.c, &[8u8; 8000], 0).or_fail("send 8000")?;
    // Both queued (6.12 in-tree has no SIOCINQ; its loopback delivers from a worker): peek
    // until all of them are there.
    let mut all = vec![0u8; 8100];
    let t0 = Instant::now();
    while sys::recv(&p.s, &mut all, libc::MSG_PEEK | libc::MSG_DONTWAIT).unwrap_or(0) < 8100 {
        if t0.elapsed() > IO_TIMEOUT {
            return Err("the 8,100 bytes did not arrive".into());
        }
        thread::sleep(Duration::from_millis(5));
    }
    const PAGE: usize = 4096;
    // SAFETY: a fresh anonymous mapping of two pages; the second made inaccessible at once
    // (not unmapped: nothing else can be mapped there meanwhile), so the buffer below is 100
    // writable bytes followed by a hole. Only the kernel touches it; unmapped whole after.
    let r = unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if m == libc::MAP_FAILED {
            return Err("mmap".into());
        }
        if libc::mprotect(m.cast::<u8>().add(PAGE).cast(), PAGE, libc::PROT_NONE) != 0 {
            libc::munmap(m, 2 * PAGE);
            return Err("mprotect".into());
        }
        let buf = m.cast::<u8>().add(PAGE - 100);
        let r = libc::recv(std::os::fd::AsRawFd::as_raw_fd(&p.s), buf.cast(), 8100, libc::MSG_PEEK);
        let err = io::Error::last_os_error().raw_os_error().unwrap_or(-1);
        libc::munmap(m, 2 * PAGE);
        if r < 0 {
            -err
        } else {
            r as i32
        }
    };
    Ok(match r {
        100 => 0,
        r if r < 0 => -r,
        _ => libc::EMSGSIZE,
    })
}

/// Perform `case` and return the errno of the call under test (0 = success).
fn errno_case(case: &str, ctx: &Ctx) -> Result<i32, String> {
    use sys::errno_of as e;
    let fresh = || stream().or_fail("socket");
    let vm = |cid, port| sys::SockaddrVm::new(cid, port);
    let tv = sys::timeval_bytes;
    let mut buf = [0u8; 16];
    Ok(match case {
        "socket.sock_raw" => e(&sys::socket(AF_VSOCK, libc::SOCK_RAW, 0)),
        "socket.bad_protocol" => e(&sys::socket(AF_VSOCK, libc::SOCK_STREAM, 1)),
        "socket.protocol_pf_vsock" => e(&sys::socket(AF_VSOCK, libc::SOCK_STREAM, AF_VSOCK)),
        "socket.seqpacket" => e(&sys::socket(AF_VSOCK, libc::SOCK_SEQPACKET, 0)),
        "socket.dgram_no_transport" => e(&sys::socket(AF_VSOCK, libc::SOCK_DGRAM, 0)),
        "bind.port_in_use" => {
            let (_l, port) = listener(1).or_fail("listener")?;
            e(&sys::bind_vm(&fresh()?, ANY, port))
        }
        "bind.nonlocal_cid" => e(&sys::bind_vm(&fresh()?, 12345, PORT_ANY)),
        "bind.twice" => {
            let s = fresh()?;
            sys::bind_vm(&s, ANY, PORT_ANY).or_fail("first bind")?;
            e(&sys::bind_vm(&s, ANY, PORT_ANY))
        }
        "bind.after_connect" => e(&sys::bind_vm(&pair(ctx)?.c, ANY, PORT_ANY)),
        "bind.wrong_family" => {
            let mut a = vm(ANY, PORT_ANY);
            a.svm_family = libc::AF_INET as u16;
            e(&sys::bind_raw(&fresh()?, &a.to_bytes()))
        }
        "bind.short_addrlen" => e(&sys::bind_raw(&fresh()?, &vm(ANY, PORT_ANY).to_bytes()[..8])),
        "bind.bad_flags" => {
            let mut a = vm(ANY, PORT_ANY);
            a.svm_flags = 0x80;
            e(&sys::bind_raw(&fresh()?, &a.to_bytes()))
        }
        "bind.reserved_port_as_root" => {
            if sys::geteuid() != 0 {
                return Err("not running as root".into());
            }
            // Find a reserved port that nobody else uses.
            let mut r = Err(io::Error::from_raw_os_error(EADDRINUSE));
            for port in (900..1024).rev() {
                r = sys::bind_vm(&fresh()?, ANY, port);
                if sys::errno_of(&r) != EADDRINUSE {
                    break;
                }
            }
            e(&r)
        }
        "connect.no_listener" => e(&sys::connect_vm(&fresh()?, ctx.peer, free_port().or_fail("free port")?)),
        "connect.nonblock_refused.so_error" => {
            let port = free_port().or_fail("free port")?;
            let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
            let r = sys::connect_vm(&c, ctx.peer, port);
            if sys::errno_of(&r) != EINPROGRESS {
                return Err(format!("non-blocking connect returned {}, expected EINPROGRESS", sys::errno_name(e(&r))));
            }
            let rev = wait_for(&c, libc::POLLOUT, "connect failure")?;
            if rev & (libc::POLLERR | libc::POLLHUP) == 0 {
                return Err(format!("poll revents {rev:#x} lack POLLERR/POLLHUP"));
            }
            sys::so_error(&c).or_fail("SO_ERROR")?
        }
        "connect.on_listener" => {
            let (l, port) = listener(1).or_fail("listener")?;
            e(&sys::connect_vm(&l, ctx.peer, port))
        }
        "connect.already_connected" => {
            let p = pair(ctx)?;
            e(&sys::connect_vm(&p.c, ctx.peer, p.port))
        }
        "connect.after_shutdown" => {
            let p = pair(ctx)?;
            sys::shutdown(&p.c, libc::SHUT_WR).or_fail("shutdown")?;
            e(&sys::connect_vm(&p.c, ctx.peer, p.port))
        }
        "connect.short_addrlen" => e(&sys::connect_raw(&fresh()?, &vm(ctx.peer, 1234).to_bytes()[..8])),
        "connect.wrong_family" => {
            let mut a = vm(ctx.peer, 1234);
            a.svm_family = libc::AF_INET as u16;
            e(&sys::connect_raw(&fresh()?, &a.to_bytes()))
        }
        "listen.unbound" => e(&sys::listen(&fresh()?, 1)),
        "listen.connected" => e(&sys::listen(&pair(ctx)?.c, 1)),
        "accept.unbound" => e(&sys::accept(&fresh()?, false)),
        "accept.not_listening" => {
            let s = fresh()?;
            sys::bind_vm(&s, ANY, PORT_ANY).or_fail("bind")?;
            e(&sys::accept(&s, false))
        }
        "accept.nonblock_empty" => {
            let (l, _) = listener(1).or_fail("listener")?;
            sys::set_nonblocking(&l, true).or_fail("fcntl")?;
            e(&sys::accept(&l, false))
        }
        "send.unconnected" => e(&sys::send(&fresh()?, b"x", 0)),
        "send.oob" => e(&sys::send(&pair(ctx)?.c, b"x", libc::MSG_OOB)),
        "send.after_shut_wr" => {
            let p = pair(ctx)?;
            sys::shutdown(&p.c, libc::SHUT_WR).or_fail("shutdown")?;
            e(&sys::send(&p.c, b"x", 0))
        }
        "send.after_refused_shutdown" => {
            // A refused non-blocking connect, its error read, then shutdown(2): the socket is
            // still "connecting" to the socket layer, so the shutdown is taken and sticks.
            let port = free_port().or_fail("free port")?;
            let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
            let _ = sys::connect_vm(&c, ctx.peer, port);
            wait_for(&c, libc::POLLOUT, "connect failure")?;
            let _ = sys::so_error(&c);
            sys::shutdown(&c, libc::SHUT_RDWR).or_fail("shutdown")?;
            e(&sys::send(&c, b"x", 0))
        }
        "send.nosignal_pending_error" => {
            // As send.after_refused_shutdown, with the refusal's ECONNRESET left pending: it
            // replaces the EPIPE (and is taken), MSG_NOSIGNAL or not.
            let port = free_port().or_fail("free port")?;
            let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
            let _ = sys::connect_vm(&c, ctx.peer, port);
            wait_for(&c, libc::POLLOUT, "connect failure")?;
            sys::shutdown(&c, libc::SHUT_RDWR).or_fail("shutdown")?;
            let r = e(&sys::send(&c, b"x", libc::MSG_NOSIGNAL));
            let left = sys::so_error(&c).or_fail("SO_ERROR")?;
            if left != 0 {
                return Err(format!("send returned {}, SO_ERROR then {}", sys::errno_name(r), sys::errno_name(left)));
            }
            r
        }
        "recv.peek_fault_after_packet" => peek_fault(ctx)?,
        "send.after_peer_close" | "recv.after_peer_close" => {
            let Pair { c, s, .. } = pair(ctx)?;
            drop(s);
            wait_for(&c, libc::POLLRDHUP, "the peer's shutdown")?;
            if case.starts_with("send") {
                e(&sys::send(&c, b"x", 0))
            } else {
                e(&sys::recv(&c, &mut buf, 0))
            }
        }
        "sendto.unconnected_with_addr" => e(&sys::send_to(&fresh()?, b"x", vm(ctx.peer, 1234))),
        "sendto.connected_with_addr" => {
            let p = pair(ctx)?;
            e(&sys::send_to(&p.c, b"x", vm(ctx.peer, p.port)))
        }
        "recv.unconnected" => e(&sys::recv(&fresh()?, &mut buf, 0)),
        "recv.listening" => e(&sys::recv(&listener(1).or_fail("listener")?.0, &mut buf, 0)),
        "recv.oob" => e(&sys::recv(&pair(ctx)?.c, &mut buf, libc::MSG_OOB)),
        "recv.nonblock_empty" => e(&sys::recv(&pair(ctx)?.c, &mut buf, libc::MSG_DONTWAIT)),
        "recv.after_shut_rd" => {
            let p = pair(ctx)?;
            sys::shutdown(&p.c, libc::SHUT_RD).or_fail("shutdown")?;
            e(&sys::recv(&p.c, &mut buf, 0))
        }
        "shutdown.bad_how" => e(&sys::shutdown(&pair(ctx)?.c, 3)),
        "shutdown.unconnected" => e(&sys::shutdown(&fresh()?, libc::SHUT_RDWR)),
        "getpeername.unconnected" => e(&sys::peer_addr(&fresh()?)),
        "getpeername.listening" => e(&sys::peer_addr(&listener(1).or_fail("listener")?.0)),
        "getsockname.unbound" => e(&sys::local_addr(&fresh()?)),
        "setsockopt.unknown_opt" => e(&sys::setsockopt(&fresh()?, SOL_VSOCK_OPTS, 99, &0u64.to_ne_bytes())),
        "setsockopt.bad_level" => e(&sys::setsockopt(&fresh()?, libc::SOL_TCP, 0, &0u64.to_ne_bytes())),
        "setsockopt.buffer_size_short" => {
            e(&sys::setsockopt(&fresh()?, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_BUFFER_SIZE, &0u32.to_ne_bytes()))
        }
        "setsockopt.timeout_usec_range" => {
            e(&sys::setsockopt(&fresh()?, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv(1, 1_000_000)))
        }
        "setsockopt.timeout_negative" => {
            e(&sys::setsockopt(&fresh()?, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv(-1, 0)))
        }
        "setsockopt.timeout_negative_usec" => {
            e(&sys::setsockopt(&fresh()?, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv(1, -5_000)))
        }
        "setsockopt.timeout_short" => {
            e(&sys::setsockopt(&fresh()?, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv(1, 0)[..8]))
        }
        "setsockopt.rcvlowat_above_buffer" | "setsockopt.seqpacket_rcvlowat_above_buffer" => {
            let ty = if case.contains("seqpacket") { libc::SOCK_SEQPACKET } else { libc::SOCK_STREAM };
            let s = sys::socket(AF_VSOCK, ty, 0).or_fail("socket")?;
            // Above the default buffer size (256 KiB).
            e(&sys::setsockopt(&s, libc::SOL_SOCKET, libc::SO_RCVLOWAT, &(1i32 << 20).to_ne_bytes()))
        }
        "getsockopt.unknown_opt" => e(&sys::getsockopt(&fresh()?, SOL_VSOCK_OPTS, 99, &mut buf[..8])),
        "getsockopt.bad_level" => e(&sys::getsockopt(&fresh()?, libc::SOL_TCP, 0, &mut buf[..8])),
        "getsockopt.buffer_size_short" => {
            e(&sys::getsockopt(&fresh()?, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_BUFFER_SIZE, &mut buf[..4]))
        }
        "getsockopt.buffer_size_clamped_at_connect" => {
            // 5 GiB set before connect (on the client and on the listener) stays 5 GiB until
            // a transport is assigned, then reads as the transport's limit (u32::MAX), on the
            // client and on the accepted child. Another value: EMSGSIZE.
            let (l, port) = listener(4).or_fail("listener")?;
            let c = fresh()?;
            let big = 5u64 << 30;
            let get = |fd: &OwnedFd| sys::getsockopt_u64(fd, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_BUFFER_SIZE).or_fail("get");
            for fd in [&c, &l] {
                sys::setsockopt(fd, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_BUFFER_MAX_SIZE, &(8u64 << 30).to_ne_bytes())
                    .or_fail("buffer max")?;
                sys::setsockopt(fd, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_BUFFER_SIZE, &big.to_ne_bytes())
                    .or_fail("buffer size")?;
            }
            let before = (get(&c)?, get(&l)?);
            sys::connect_vm(&c, ctx.peer, port).or_fail("connect")?;
            let s = sys::accept(&l, false).or_fail("accept")?;
            let after = (get(&c)?, get(&s)?);
            let max = u64::from(u32::MAX);
            if before == (big, big) && after == (max, max) {
                0
            } else {
                libc::EMSGSIZE
            }
        }
        "getsockopt.timeout_short" => {
            e(&sys::getsockopt(&fresh()?, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &mut buf[..8]))
        }
        "ioctl.siocoutq_unconnected" => e(&sys::ioctl_int(&fresh()?, sys::SIOCOUTQ)),
        "ioctl.siocoutq_listening" => e(&sys::ioctl_int(&listener(1).or_fail("listener")?.0, sys::SIOCOUTQ)),
        "ioctl.unknown" => e(&sys::ioctl_int(&fresh()?, libc::TCGETS)),
        other => return Err(format!("no such case {other:?}")),
    })
}
