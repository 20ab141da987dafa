//! `vhost-hostile`'s checks of connections the host opens and of the device itself: host
//! connects and closes, a lingering close rebound, several guests, CID rules without a
//! device (`vhost-cid`), dirty-page logging, a broken ring, a CID change, and what releasing
//! the device does to its connections.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::fake_guest::*;
use crate::report::{OrFail, Out, Outcome, TestResult};
use crate::sys::{self, GuestMem, AF_VSOCK, VMADDR_CID_ANY};
use crate::vhost_hostile::*;

/// Whether the host stack under test is rvsock's (else the in-tree reference, where the
/// checks of rvsock-only behaviour report a skip or a `#` line).
pub(crate) fn rvsock_host() -> bool {
    std::fs::read_to_string("/proc/modules").unwrap_or_default().contains("rvsock_vhost ")
}

/// The host connects to the guest: REQUEST arrives on the right device, RESPONSE
/// completes the connect, data flows both ways.
pub(crate) fn host_connect_to(g: &mut Guest, gport: u32) -> Result<(OwnedFd, u32), String> {
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    match sys::connect_vm(&s, g.cid, gport) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(format!("connect: {}", sys::describe(&e))),
    }
    let r = g
        .recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
        .ok_or("no REQUEST reached the guest")?;
    if r.h.src_cid != HOST || r.h.dst_cid != u64::from(g.cid) || r.h.ty != TYPE_STREAM {
        return Err(format!("REQUEST {:?}", r.h));
    }
    let hport = r.h.src_port;
    let h = g.hdr(OP_RESPONSE, gport, hport);
    g.send(&h, &[])?;
    let ev = sys::poll_one(&s, libc::POLLOUT, Duration::from_secs(5)).or_fail("poll")?;
    let err = sys::so_error(&s).or_fail("SO_ERROR")?;
    if ev & libc::POLLOUT == 0 || err != 0 {
        return Err(format!("connect did not complete (revents {ev:#x}, SO_ERROR {})", sys::errno_name(err)));
    }
    sys::set_nonblocking(&s, false).or_fail("blocking")?;
    sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
    Ok((s, hport))
}

pub(crate) fn t_host_connect(e: &mut Env) -> TestResult {
    let (s, hport) = host_connect_to(&mut e.g, G_LISTEN)?;
    sys::send(&s, b"hello", 0).or_fail("send")?;
    let r = e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == G_LISTEN && h.op == OP_RW)?.ok_or("no data")?;
    if r.data != b"hello" {
        return Err(format!("guest got {:?}", r.data));
    }
    let mut h = e.g.hdr(OP_RW, G_LISTEN, hport);
    h.len = 5;
    e.g.send(&h, b"world")?;
    if read_exact(&s, 5)? != b"world" {
        return Err("host got different bytes".into());
    }
    // Orderly close from the guest: the host reads EOF.
    let mut h = e.g.hdr(OP_SHUTDOWN, G_LISTEN, hport);
    h.flags = 3;
    e.g.send(&h, &[])?;
    let mut b = [0u8; 8];
    match sys::recv(&s, &mut b, 0) {
        Ok(0) => {}
        r => return Err(format!("after SHUTDOWN the host read {r:?}")),
    }
    drop(s);
    let _ = e.g.recv_where(Duration::from_secs(2), |h| h.dst_port == G_LISTEN && h.op == OP_RST)?;
    e.g.discard(|h| h.dst_port == G_LISTEN);
    Ok(Outcome::Pass)
}

/// The guest answers a host's blocking connect with RESPONSE and, in the same batch, a full
/// SHUTDOWN (a server that accepts and closes at once). Both are delivered before the
/// connecting task runs again: connect() must still succeed and the host then reads EOF.
/// (In-tree, connect then waits for an ESTABLISHED state that is gone and fails with
/// ETIMEDOUT: reported as a skip on the C reference.)
pub(crate) fn t_connect_then_close(e: &mut Env) -> TestResult {
    let gport = G_LISTEN + 20;
    let mut last = String::new();
    for round in 0..3 {
        let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
        let cid = e.g.cid;
        let t = thread::spawn(move || {
            let r = sys::connect_vm(&s, cid, gport);
            (s, r)
        });
        let r =
            e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
                .ok_or("no REQUEST reached the guest")?;
        let hport = r.h.src_port;
        let mut sh = e.g.hdr(OP_SHUTDOWN, gport, hport);
        sh.flags = 3;
        e.g.send_batch(&[e.g.hdr(OP_RESPONSE, gport, hport), sh])?;
        let (s, r) = t.join().map_err(|_| "connect thread panicked".to_string())?;
        let _ = e.g.recv_where(Duration::from_secs(2), |h| h.dst_port == gport && h.op == OP_RST)?;
        e.g.discard(|h| h.dst_port == gport);
        match r {
            Ok(()) => {
                sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
                let mut b = [0u8; 8];
                match sys::recv(&s, &mut b, 0) {
                    Ok(0) => {}
                    r => return Err(format!("round {round}: after connect + SHUTDOWN the host read {r:?}")),
                }
            }
            Err(err) => last = format!("round {round}: connect: {}", sys::describe(&err)),
        }
    }
    if last.is_empty() {
        Ok(Outcome::Pass)
    } else if rvsock_host() {
        Err(last)
    } else {
        Ok(Outcome::Skip(format!("in-tree stack: {last}")))
    }
}

/// The host closes a connection whose (fake) guest never answers the SHUTDOWN with an RST,
/// so the closed socket lingers holding its port; binding that port again must work at once,
/// and the lingering connection is reset towards the guest. (In-tree answers EADDRINUSE for
/// up to 8 s: reported as a skip on the C reference.)
pub(crate) fn t_rebind_lingering(e: &mut Env) -> TestResult {
    let gport = G_LISTEN + 30;
    let hport = 0x7e57_0001;
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    sys::bind_vm(&s, VMADDR_CID_ANY, hport).or_fail("bind")?;
    match sys::connect_vm(&s, e.g.cid, gport) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(format!("connect: {}", sys::describe(&err))),
    }
    e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
        .ok_or("no REQUEST reached the guest")?;
    e.g.send(&e.g.hdr(OP_RESPONSE, gport, hport), &[])?;
    let ev = sys::poll_one(&s, libc::POLLOUT, Duration::from_secs(5)).or_fail("poll")?;
    if ev & libc::POLLOUT == 0 {
        return Err("connect did not complete".into());
    }
    drop(s);
    e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_SHUTDOWN)?
        .ok_or("close sent no SHUTDOWN")?;
    // No RST from the guest: the closed socket waits for it, holding the port.
    let s2 = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    let r = match sys::bind_vm(&s2, VMADDR_CID_ANY, hport) {
        Ok(()) => {
            e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.src_port == hport && h.op == OP_RST)?
                .ok_or("the lingering connection was not reset towards the guest")?;
            Ok(Outcome::Pass)
        }
        Err(err) if std::fs::read_to_string("/proc/modules").unwrap_or_default().contains("rvsock ") => {
            Err(format!("bind of the lingering socket's port: {}", sys::describe(&err)))
        }
        Err(err) => Ok(Outcome::Skip(format!("in-tree stack: bind: {}", sys::describe(&err)))),
    };
    e.g.discard(|h| h.dst_port == gport);
    r
}

/// A non-blocking connect to a guest that never answers times out (ETIMEDOUT, left unread in
/// SO_ERROR); the same socket then listens on its auto-bound port and a guest connects to
/// it: accept(2) returns the connection, as in-tree does (it ignores the listener's pending
/// error). rvsock failed the accept with ETIMEDOUT and left the child established, unserved.
pub(crate) fn t_listen_after_timeout(e: &mut Env) -> TestResult {
    let gport = G_LISTEN + 40;
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    let tv = sys::timeval_bytes(0, 200_000);
    sys::setsockopt(&s, sys::SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv).or_fail("connect timeout")?;
    match sys::connect_vm(&s, e.g.cid, gport) {
        Ok(()) => return Err("connect to a silent guest succeeded".into()),
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(format!("connect: {}", sys::describe(&err))),
    }
    e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
        .ok_or("no REQUEST reached the guest")?;
    // No answer: the connect times out after 200 ms (SO_ERROR is not read).
    thread::sleep(Duration::from_millis(600));
    let hport = sys::local_addr(&s).or_fail("getsockname")?.svm_port;
    sys::listen(&s, 4).or_fail("listen after the timed-out connect")?;
    let gport2 = gport + 1;
    let res = guest_connect(&mut e.g, &s, gport2, hport, GUEST_BUF).and_then(|c| {
        let mut h = e.g.hdr(OP_RW, gport2, hport);
        h.len = 2;
        e.g.send(&h, b"hi")?;
        sys::set_io_timeout(&c, Duration::from_secs(5)).or_fail("timeout")?;
        let got = read_exact(&c, 2)?;
        if got == b"hi" { Ok(Outcome::Pass) } else { Err(format!("the accepted socket read {got:?}")) }
    });
    e.g.send(&e.g.hdr(OP_RST, gport2, hport), &[])?;
    drop(s);
    thread::sleep(Duration::from_millis(50));
    e.g.discard(|h| h.dst_port == gport || h.dst_port == gport2);
    res
}

/// A blocking connect interrupted by a signal, the guest's RST, a blocking connect that
/// reports the reset (in-tree, unconnected since the signal, sends a new REQUEST, which the
/// guest resets too), then a non-blocking connect to the silent guest: it times out after its
/// own connect timeout. rvsock keeps an interrupted handshake going under a timer for the
/// time left; that timer, still pending after the reset, ended the next attempt at the first
/// one's deadline.
pub(crate) fn t_connect_timer_restart(e: &mut Env) -> TestResult {
    let gport = G_LISTEN + 50;
    let cid = e.g.cid;
    sys::install_noop_handler(libc::SIGUSR1).or_fail("sigaction")?;
    let s = Arc::new(sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?);
    let tv = sys::timeval_bytes(3, 0);
    sys::setsockopt(&*s, sys::SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv).or_fail("connect timeout")?;
    let t0 = Instant::now();
    let s1 = s.clone();
    let t = thread::spawn(move || sys::connect_vm(&*s1, cid, gport));
    let req = e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?;
    let Some(req) = req else {
        let _ = sys::pthread_kill(t.as_pthread_t(), libc::SIGUSR1);
        let _ = t.join();
        return Err("no REQUEST reached the guest".into());
    };
    let hport = req.h.src_port;
    thread::sleep(Duration::from_millis(100));
    sys::pthread_kill(t.as_pthread_t(), libc::SIGUSR1).or_fail("pthread_kill")?;
    let r = t.join().map_err(|_| "connect thread panicked".to_string())?;
    if sys::errno_of(&r) != libc::EINTR {
        return Err(format!("the interrupted connect returned {r:?}"));
    }
    e.g.send(&e.g.hdr(OP_RST, gport, hport), &[])?;
    thread::sleep(Duration::from_millis(100));
    let s2 = s.clone();
    let t = thread::spawn(move || sys::connect_vm(&*s2, cid, gport));
    if let Some(r) = e.g.recv_where(Duration::from_millis(500), |h| h.dst_port == gport && h.op == OP_REQUEST)? {
        e.g.send(&e.g.hdr(OP_RST, gport, r.h.src_port), &[])?;
    }
    let r = t.join().map_err(|_| "connect thread panicked".to_string())?;
    if sys::errno_of(&r) != libc::ECONNRESET {
        return Err(format!("the connect after the guest's RST returned {r:?}"));
    }
    // Half-way to the first attempt's deadline, a non-blocking attempt.
    thread::sleep((t0 + Duration::from_millis(1500)).saturating_duration_since(Instant::now()));
    sys::set_nonblocking(&*s, true).or_fail("nonblocking")?;
    let t2 = Instant::now();
    match sys::connect_vm(&*s, cid, gport) {
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        r => return Err(format!("the non-blocking connect returned {r:?}")),
    }
    e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
        .ok_or("the non-blocking connect sent no REQUEST")?;
    let ev = sys::poll_one(&*s, libc::POLLOUT, Duration::from_secs(6)).or_fail("poll")?;
    let took = t2.elapsed();
    let err = sys::so_error(&*s).or_fail("SO_ERROR")?;
    drop(s);
    thread::sleep(Duration::from_millis(50));
    e.g.discard(|h| h.dst_port == gport);
    if err != libc::ETIMEDOUT {
        return Err(format!("the non-blocking connect ended with {} (revents {ev:#x})", sys::errno_name(err)));
    }
    if took < Duration::from_millis(2500) {
        return Err(format!("the non-blocking connect timed out after {took:?}, not its own 3 s (the interrupted attempt's timer)"));
    }
    Ok(Outcome::Pass)
}

/// The guest connects from `gp` to host port `hport` and the host sends it `len` bytes of
/// pattern `seed` while the guest takes nothing (its 64 posted buffers hold about half of
/// 128 KiB: the rest waits in vhost's queue); returns the listener, the host's socket and
/// the bytes sent, 100 ms after the last send.
pub(crate) fn fill_guest(e: &mut Env, gp: u32, hport: u32, len: usize, seed: u8) -> Result<(OwnedFd, OwnedFd, Vec<u8>), String> {
    let l = listener(hport, 4)?;
    let s = guest_connect(&mut e.g, &l, gp, hport, GUEST_BUF)?;
    let data = pattern(len, seed);
    let mut sent = 0;
    while sent < len {
        sent += sys::send(&s, &data[sent..], 0).or_fail("send")?;
    }
    thread::sleep(ms(100));
    Ok((l, s, data))
}

/// SIOCOUTQ counts what the host sent that the guest has not taken: 128 KiB to a guest whose
/// 64 posted buffers hold about half of it, with the guest taking nothing, leave SIOCOUTQ
/// above 0 (in-tree: `bytes_unsent` falls when vhost has copied a packet into the guest);
/// once the guest has read everything it is 0. rvsock counted only what a send had not
/// handed to the transport yet (always 0 here).
pub(crate) fn t_siocoutq(e: &mut Env) -> TestResult {
    const LEN: usize = 128 * 1024;
    let gp = G_MAIN + 300;
    let (_l, s, data) = fill_guest(e, gp, P_SMALL + 1, LEN, 7)?;
    let waiting = sys::ioctl_int(&s, sys::SIOCOUTQ).or_fail("SIOCOUTQ")?;
    let mut got = Vec::with_capacity(LEN);
    let t0 = Instant::now();
    while got.len() < LEN && t0.elapsed() < Duration::from_secs(20) {
        if let Some(r) = e.g.recv_where(ms(200), |h| h.dst_port == gp && h.op == OP_RW)? {
            got.extend_from_slice(&r.data);
        }
    }
    // The last packets leave vhost's queue once the guest took them.
    let mut after = sys::ioctl_int(&s, sys::SIOCOUTQ).or_fail("SIOCOUTQ")?;
    let t1 = Instant::now();
    while after != 0 && t1.elapsed() < Duration::from_secs(2) {
        thread::sleep(ms(10));
        after = sys::ioctl_int(&s, sys::SIOCOUTQ).or_fail("SIOCOUTQ")?;
    }
    e.out.info(format!("siocoutq: {waiting} bytes outstanding with the guest's buffers full, {after} once it read"));
    e.g.send(&e.g.hdr(OP_RST, gp, P_SMALL + 1), &[])?;
    drop(s);
    thread::sleep(ms(50));
    e.g.discard(|h| h.dst_port == gp);
    if got != data {
        return Err(format!("the guest got {} of {LEN} bytes (or other bytes)", got.len()));
    }
    if waiting <= 0 || waiting as usize > LEN {
        return Err(format!("SIOCOUTQ was {waiting} with the guest's buffers full, expected 1..={LEN}"));
    }
    if after != 0 {
        return Err(format!("SIOCOUTQ was {after} after the guest read everything"));
    }
    Ok(Outcome::Pass)
}

/// A host connect that times out while the guest takes no receive buffers (its ring full of
/// a stream's data): the REQUEST is taken back (in-tree `vhost_transport_cancel_pkt`), so
/// the guest does not see it once it takes buffers again, where it would accept a
/// connection the host has given up. rvsock left it queued until then. The same for the
/// REQUEST of a non-blocking connect closed before the guest took it (rvsock only).
pub(crate) fn t_cancel_request(e: &mut Env) -> TestResult {
    const LEN: usize = 128 * 1024;
    let gp = G_MAIN + 310;
    let cport = G_LISTEN + 60;
    let (_l, s, _) = fill_guest(e, gp, P_SMALL + 2, LEN, 9)?;
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    let tv = sys::timeval_bytes(0, 300_000);
    sys::setsockopt(&c, sys::SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv).or_fail("connect timeout")?;
    let r = sys::errno_of(&sys::connect_vm(&c, e.g.cid, cport));
    // And a non-blocking connect closed while its REQUEST waits (rvsock takes it back at
    // close; in-tree does not: reported only).
    let n = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    let _ = sys::connect_vm(&n, e.g.cid, cport + 1);
    drop(n);
    let mut got = 0;
    let (mut request, mut closed_request) = (false, false);
    let t0 = Instant::now();
    let ours = |h: &Hdr| h.dst_port == gp || h.dst_port == cport || h.dst_port == cport + 1;
    while (got < LEN || t0.elapsed() < ms(500)) && t0.elapsed() < Duration::from_secs(20) {
        if let Some(x) = e.g.recv_where(ms(100), ours)? {
            if x.h.dst_port == cport {
                request |= x.h.op == OP_REQUEST;
            } else if x.h.dst_port == cport + 1 {
                closed_request |= x.h.op == OP_REQUEST;
            } else if x.h.op == OP_RW {
                got += x.data.len();
            }
        }
    }
    e.g.send(&e.g.hdr(OP_RST, gp, P_SMALL + 2), &[])?;
    drop(s);
    thread::sleep(ms(50));
    e.g.discard(ours);
    let rvsock = rvsock_host();
    if closed_request {
        if rvsock {
            return Err("a connecting socket's REQUEST reached the guest after the socket was closed".into());
        }
        e.out.info("cancel_request: in-tree delivers a closed connecting socket's REQUEST");
    }
    if r != libc::ETIMEDOUT {
        return Err(format!("connect to a guest taking no buffers: {}, expected ETIMEDOUT", sys::errno_name(r)));
    }
    if got != LEN {
        return Err(format!("the guest got {got} of {LEN} bytes"));
    }
    if request {
        return Err("the timed-out connect's REQUEST reached the guest once it took buffers".into());
    }
    Ok(Outcome::Pass)
}

/// Two guests at once: packets go to the device of their destination CID only; another
/// guest cannot inject into (or reset) a connection, not even with its own valid CID;
/// closing a device resets the host's connections to it.
pub(crate) fn t_multi_guest(e: &mut Env) -> TestResult {
    let mut b = Guest::new(e.g.cid + 1, 4096)?;
    let bport = G_LISTEN + 10;
    let (s, hport) = host_connect_to(&mut b, bport)?;
    e.g.expect_none(ms(200), "routing", |h| h.dst_port == bport || h.src_port == hport)?;
    // Guest A (correctly addressed, its own CID) targets the host's connection to guest B,
    // once from B's port and once from another.
    for sport in [bport, bport + 1] {
        let mut h = e.g.hdr(OP_RW, sport, hport);
        h.len = 8;
        e.g.send(&h, b"injected")?;
        let h = e.g.hdr(OP_RST, sport, hport);
        e.g.send(&h, &[])?;
    }
    expect_no_data(&s, ms(300), "injection from another guest")?;
    // The connection to B is intact.
    let mut h = b.hdr(OP_RW, bport, hport);
    h.len = 2;
    b.send(&h, b"ok")?;
    if read_exact(&s, 2)? != b"ok" {
        return Err("the connection to guest B lost its data".into());
    }
    e.g.discard(|h| h.src_port == hport);
    drop(b);
    let ev = sys::poll_one(&s, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
    if ev & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
        return Err("closing the device did not wake its host socket".into());
    }
    let mut buf = [0u8; 8];
    match sys::recv(&s, &mut buf, libc::MSG_DONTWAIT) {
        Ok(0) => {}
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => return Err(format!("host socket after the device closed: recv {r:?}")),
    }
    // No device for that CID any more: connecting fails at once with ENODEV (in-tree).
    connect_enodev(e.g.cid + 1)?;
    Ok(Outcome::Pass)
}

/// `net.vsock.g2h_fallback` (Linux 7.x; rvsock on every kernel line): 1 (the default) sends a
/// connect to a CID that no local vhost device has to the host over the guest's own transport.
const G2H_FALLBACK: &str = "/proc/sys/net/vsock/g2h_fallback";

/// A connect from a nested host (a guest that runs guests) to `cid`, which none of its vhost
/// devices has. Without the g2h_fallback setting (the 6.12 in-tree stack), and with it 0, it
/// fails at once with ENODEV; with it 1, the request goes to the host over the guest's
/// transport (in-tree 7.x), which has no such CID either: not ENODEV, and nothing connects.
fn connect_no_device(cid: u32) -> Result<(), String> {
    let Ok(saved) = std::fs::read_to_string(G2H_FALLBACK) else { return connect_enodev(cid) };
    let set = |v: &str| std::fs::write(G2H_FALLBACK, v).map_err(|e| format!("write {G2H_FALLBACK} = {v}: {e}"));
    let r = set("0").and_then(|()| connect_enodev(cid)).map_err(|e| format!("g2h_fallback 0: {e}"));
    let r = r.and_then(|()| set("1")).and_then(|()| connect_to_host_fallback(cid));
    set(saved.trim())?;
    r
}

fn connect_to_host_fallback(cid: u32) -> Result<(), String> {
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    match sys::connect_vm(&c, cid, G_LISTEN) {
        Ok(()) => Err(format!("g2h_fallback 1: connected to CID {cid}, which nobody has")),
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {
            Err(format!("g2h_fallback 1: connect to CID {cid}: ENODEV, expected the request to go to the host"))
        }
        Err(_) => Ok(()),
    }
}

/// A connect to `cid`, which has no vhost device, fails at once with ENODEV, as in-tree
/// (the transport refuses the REQUEST), and the socket can connect again afterwards.
fn connect_enodev(cid: u32) -> Result<(), String> {
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    for attempt in 0..2 {
        let t0 = Instant::now();
        match sys::connect_vm(&c, cid, G_LISTEN) {
            Ok(()) => return Err(format!("connected to CID {cid}, which has no device")),
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) && t0.elapsed() < Duration::from_secs(1) => {}
            Err(err) => {
                return Err(format!(
                    "connect {attempt} to CID {cid} without a device: {} after {:?}, expected ENODEV at once",
                    sys::describe(&err),
                    t0.elapsed()
                ))
            }
        }
    }
    Ok(())
}

/// `vhost-cid --cid C --own G`: the CID rules on a host that is itself a guest with CID `G`
/// (its G2H transport is up): `G` is refused with EADDRINUSE like a CID of another guest,
/// `C` is taken, and a connect to a CID without a device fails with ENODEV.
pub fn run_cid(a: &Args) -> Result<(), String> {
    let cid = a.u32_req("cid")?;
    let own = a.u32_req("own")?;
    a.check_unused()?;
    let out = Out::default();
    let r = (|| -> TestResult {
        let local = OpenOptions::new().read(true).open("/dev/vsock").or_fail("open /dev/vsock")?;
        let local = sys::ioctl_int(&OwnedFd::from(local), sys::IOCTL_VM_SOCKETS_GET_LOCAL_CID)
            .or_fail("IOCTL_VM_SOCKETS_GET_LOCAL_CID")? as u32;
        if local != own {
            return Err(format!("local CID is {local}, expected our guest CID {own}"));
        }
        let a = open_dev().or_fail("open")?;
        let e = sys::errno_of(&ioctl_u64(&a, SET_GUEST_CID, u64::from(own)));
        if e != libc::EADDRINUSE {
            return Err(format!("SET_GUEST_CID(our own guest CID {own}): {}, expected EADDRINUSE", sys::errno_name(e)));
        }
        ioctl_u64(&a, SET_GUEST_CID, u64::from(cid)).or_fail("SET_GUEST_CID(free)")?;
        let b = open_dev().or_fail("open")?;
        let e = sys::errno_of(&ioctl_u64(&b, SET_GUEST_CID, u64::from(cid)));
        if e != libc::EADDRINUSE {
            return Err(format!("second device, same CID: {}, expected EADDRINUSE", sys::errno_name(e)));
        }
        Ok(Outcome::Pass)
    })();
    out.result("vhost-cid.own_guest_cid", &r);
    out.result("vhost-cid.connect_enodev", &connect_no_device(cid + 1).map(|()| Outcome::Pass));
    Ok(())
}

/// Broken rings (descriptors outside guest memory, loops) on a throwaway device: the
/// device reports the error and nothing else happens.
/// Dirty logging (migration): with `VHOST_F_LOG_ALL` on, the device marks every guest page
/// it writes in the VMM's log (one bit per 4 KiB page of guest memory), so a page written
/// while the VMM copies memory is copied again. A second guest (CID `cid`) connects, the host
/// sends it data, and the pages of its receive buffers must be marked. (In-tree vhost_vsock
/// passes a NULL log for the buffers it fills, so only rvsock passes; a skip on the C
/// reference.)
pub(crate) fn t_dirty_log(e: &mut Env, cid: u32) -> TestResult {
    const PAGE: u64 = 4096;
    let bitmap = GuestMem::new(4096).or_fail("mmap log")?;
    // Guest addresses are our own addresses (the memory table maps them 1:1): bias the base
    // so that the bits of our guest memory's pages land in `bitmap`.
    let bm = bitmap.addr(0);
    let mut g = Guest::with_log(cid, 1024, |mem| bm.wrapping_sub(mem / PAGE / 8))?;
    let base_page = g.mem.addr(0) / PAGE;
    let host = guest_connect(&mut g, &e.l, 7001, P_LISTEN, GUEST_BUF)?;
    bitmap.write(0, &[0u8; 4096]).ok_or("clear log")?;
    let data = pattern(3000, 9);
    sys::send(&host, &data, 0).or_fail("host send")?;
    let mut got = Vec::new();
    while got.len() < data.len() {
        let r = g
            .recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == 7001)?
            .ok_or_else(|| format!("guest received {} of {} bytes", got.len(), data.len()))?;
        got.extend_from_slice(&r.data);
    }
    let log = bitmap.read(0, 4096).ok_or("read log")?;
    let marked = |page: u64| {
        let i = page - base_page + base_page % 8;
        log.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0)
    };
    let first = (g.mem.addr(RX_BUFS) / PAGE) as u64;
    let last = (g.mem.addr(RX_BUFS + usize::from(NUM) * g.rx_buf - 1) / PAGE) as u64;
    let n = (first..=last).filter(|p| marked(*p)).count();
    e.out.info(format!("dirty_log: {n} of {} receive-buffer pages marked after 3000 bytes host to guest", last - first + 1));
    if n > 0 {
        return Ok(Outcome::Pass);
    }
    let intree = std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.lines().any(|l| l.starts_with("vhost_vsock ")));
    if intree {
        return Ok(Outcome::Skip("in-tree vhost_vsock logs no page it writes into guest buffers (NULL log)".into()));
    }
    Err("no receive-buffer page marked dirty: a migration would lose the data written there".into())
}

pub(crate) fn t_bad_ring(e: &mut Env) -> TestResult {
    let mut b = Guest::new(e.g.cid + 2, 4096)?;
    // TX descriptor pointing outside the memory table.
    b.tx.set_desc(&b.mem, 0, 0x1000, 64, 0, 0).ok_or("desc")?;
    b.tx.publish(&b.mem, 0).ok_or("publish")?;
    b.kick(1)?;
    let t0 = Instant::now();
    while !b.error_signalled(1) {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err("no error signalled for a descriptor outside guest memory".into());
        }
        thread::sleep(ms(5));
    }
    // RX side: a descriptor loop while the host has something to send.
    let mut c = Guest::new(e.g.cid + 3, 4096)?;
    for i in 0..NUM {
        let _ = c.rx.set_desc(&c.mem, i, c.mem.addr(RX_BUFS), 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, i);
    }
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    let _ = sys::connect_vm(&s, c.cid, G_LISTEN);
    c.kick(0)?;
    // TX: a readable descriptor after a writable one (vhost refuses the chain).
    let hb = c.hdr(OP_RW, 1, 2).encode();
    c.send_chain(&[(&hb, true), (b"evil", false)], ms(300))?;
    thread::sleep(ms(500));
    e.out.info(format!(
        "bad_ring: rx error signalled: {}, tx error signalled: {}",
        c.error_signalled(0),
        c.error_signalled(1)
    ));
    drop(c);
    drop(b);
    drop(s);
    pass(rw_roundtrip(e, b"after bad rings"))
}

/// A VMM moves a running device to another CID, as a migration destination would (stop,
/// VHOST_VSOCK_SET_GUEST_CID, start): the host's connections to the old CID are reset
/// (ECONNRESET, not an end of file), a packet the guest still sends from the old CID is
/// dropped unanswered, the old CID is unreachable, the new one takes connections.
pub(crate) fn t_cid_change(e: &mut Env) -> TestResult {
    let (old, new) = (e.g.cid + 60, e.g.cid + 61);
    let mut g = Guest::new(old, 4096)?;
    let (s, hport) = host_connect_to(&mut g, G_LISTEN)?;
    sys::send(&s, b"before", 0).or_fail("send")?;
    g.recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == G_LISTEN)?.ok_or("no data before the move")?;
    // Data the host has queued for reading when the move comes is not delivered after it.
    let mut h = g.hdr(OP_RW, G_LISTEN, hport);
    h.len = 4;
    g.send(&h, b"lost")?;
    let ev = sys::poll_one(&s, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
    if ev & libc::POLLIN == 0 {
        return Err("the guest's data did not reach the host".into());
    }
    let mut off = 0i32.to_ne_bytes();
    sys::ioctl_buf(&g.fd, SET_RUNNING, &mut off).or_fail("SET_RUNNING 0")?;
    ioctl_u64(&g.fd, SET_GUEST_CID, u64::from(new)).or_fail("SET_GUEST_CID(new)")?;
    let mut on = 1i32.to_ne_bytes();
    sys::ioctl_buf(&g.fd, SET_RUNNING, &mut on).or_fail("SET_RUNNING 1")?;
    let mut b = [0u8; 8];
    match sys::recv(&s, &mut b, libc::MSG_DONTWAIT) {
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => {
            let intree = std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.lines().any(|l| l.starts_with("vhost_vsock ")));
            if intree {
                return Ok(Outcome::Skip(format!(
                    "in-tree vhost_vsock keeps the host's connections to the old CID (recv: {r:?})"
                )));
            }
            return Err(format!("host recv after the device moved to another CID: {r:?}, expected ECONNRESET"));
        }
    }
    match sys::send(&s, b"x", 0) {
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => return Err(format!("host send after the move: {r:?}, expected ECONNRESET")),
    }
    // The guest still talks from the old CID (it has not seen its TRANSPORT_RESET yet).
    let mut h = g.hdr(OP_RW, G_LISTEN, hport);
    h.src_cid = u64::from(old);
    h.len = 5;
    g.send(&h, b"stale")?;
    let mut h = g.hdr(OP_REQUEST, 42000, P_LISTEN);
    h.src_cid = u64::from(old);
    g.send(&h, &[])?;
    if let Some(a) = accept_within(&e.l, ms(300))? {
        let p = sys::peer_addr(&a).ok();
        return Err(format!("a REQUEST from the old CID was accepted (peer {p:?})"));
    }
    g.expect_none(ms(200), "after the move", |h| h.dst_port == G_LISTEN || h.dst_port == 42000)?;
    let t = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    match sys::connect_vm(&t, old, G_LISTEN) {
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {}
        r => return Err(format!("connect to the old CID {old}: {r:?}, expected ENODEV")),
    }
    g.cid = new;
    let (s2, _) = host_connect_to(&mut g, G_LISTEN)?;
    sys::send(&s2, b"after", 0).or_fail("send after")?;
    let r = g.recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == G_LISTEN)?.ok_or("no data at the new CID")?;
    if r.h.dst_cid != u64::from(new) || r.data != b"after" {
        return Err(format!("at the new CID the guest got {:?} {:?}", r.h, r.data));
    }
    Ok(Outcome::Pass)
}

/// Closing the device resets the host's connections to the guest.
pub(crate) fn t_release(e: Env) -> TestResult {
    let Env { g, c1, .. } = e;
    let c = c1.ok_or("no connection")?;
    drop(g);
    let ev = sys::poll_one(&c.host, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
    if ev & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
        return Err("host socket not woken when the device closed".into());
    }
    let mut b = [0u8; 8];
    match sys::recv(&c.host, &mut b, libc::MSG_DONTWAIT) {
        Ok(0) => {}
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => return Err(format!("recv after the device closed: {r:?}")),
    }
    match sys::send(&c.host, b"x", 0) {
        Err(err) if matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)) => {
            Ok(Outcome::Pass)
        }
        r => Err(format!("send after the device closed: {r:?}")),
    }
}

/// A device that has a CID but never ran (`VHOST_VSOCK_SET_RUNNING` never sent: the guest's
/// driver not up yet): a host connect to it fails at once with EHOSTUNREACH, as in 7.3
/// in-tree, instead of queueing its REQUEST until the connect timeout. (The 6.12 in-tree
/// stack queues it and times out: reported as a skip there.)
pub(crate) fn t_not_running(cid: u32) -> TestResult {
    let d = open_dev().or_fail("open")?;
    let x = cid + 110;
    ioctl_u64(&d, SET_GUEST_CID, u64::from(x)).or_fail("SET_GUEST_CID")?;
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    let tv = sys::timeval_bytes(3, 0);
    sys::setsockopt(&s, sys::SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv).or_fail("connect timeout")?;
    let t = Instant::now();
    let e = sys::errno_of(&sys::connect_vm(&s, x, G_LISTEN));
    let took = t.elapsed();
    if e == libc::EHOSTUNREACH && took < Duration::from_secs(1) {
        return Ok(Outcome::Pass);
    }
    let why = format!("connect to a device that never ran: {} after {took:?}", sys::errno_name(e));
    if rvsock_host() {
        Err(why)
    } else {
        Ok(Outcome::Skip(format!("in-tree stack: {why}")))
    }
}
