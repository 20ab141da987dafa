//! `vhost-hostile`: drives `/dev/vhost-vsock` directly as a fake, hostile guest.
//!
//! The program is the VMM and the guest at once: it owns the vhost device
//! (`VHOST_SET_OWNER`), gives it a memory table that maps part of its own address space as
//! "guest RAM" (guest physical address == user address), lays out split virtqueues there
//! (RX 0: host to guest, TX 1: guest to host), and then speaks virtio-vsock by writing
//! descriptors and reading the used rings itself. The host end is ordinary AF_VSOCK sockets
//! in the same process. Everything runs on the host kernel under test, so the program also
//! checks what must never happen: spoofed or malformed packets reaching a host socket.
//!
//! Each check prints one `RVSOCK-TEST` line named `vhost-hostile.<check>`. The checks
//! hold for the in-tree C `vhost_vsock` as well (the reference), except where a line says
//! it only reports (`#` lines).
//!
//! Here: the run and the checks of the guest's packets (what the host must accept, drop or
//! reset); the fake guest is `fake_guest.rs`, the checks of host-opened connections and of
//! the device itself `vhost_device.rs`.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::report::{OrFail, Out, Outcome, TestResult};
use crate::fake_guest::*;
use crate::sys::{self, AF_VSOCK, VMADDR_CID_ANY};
use crate::vhost_device::*;

// ---------------------------------------------------------------------------------------
// Host side helpers.

pub(crate) fn listener(port: u32, backlog: i32) -> Result<OwnedFd, String> {
    let l = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    sys::bind_vm(&l, VMADDR_CID_ANY, port).or_fail("bind")?;
    sys::listen(&l, backlog).or_fail("listen")?;
    Ok(l)
}

pub(crate) fn accept_within(l: &OwnedFd, t: Duration) -> Result<Option<OwnedFd>, String> {
    let ev = sys::poll_one(l, libc::POLLIN, t).or_fail("poll listener")?;
    if ev & libc::POLLIN == 0 {
        return Ok(None);
    }
    let s = sys::accept(l, false).or_fail("accept")?;
    sys::set_io_timeout(&s, Duration::from_secs(10)).or_fail("SO_RCVTIMEO")?;
    Ok(Some(s))
}

/// Reads exactly `n` bytes (the socket has an I/O timeout).
pub(crate) fn read_exact(s: &OwnedFd, n: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match sys::recv(s, &mut v[got..], 0) {
            Ok(0) => return Err(format!("EOF after {got} of {n} bytes")),
            Ok(k) => got += k,
            Err(e) => return Err(format!("recv after {got} of {n} bytes: {}", sys::describe(&e))),
        }
    }
    Ok(v)
}

/// Fails if the socket becomes readable within `t`.
pub(crate) fn expect_no_data(s: &OwnedFd, t: Duration, what: &str) -> Result<(), String> {
    let ev = sys::poll_one(s, libc::POLLIN, t).or_fail("poll")?;
    if ev & libc::POLLIN != 0 {
        let mut b = [0u8; 64];
        let r = sys::recv(s, &mut b, libc::MSG_DONTWAIT);
        return Err(format!("{what}: host socket readable: {r:?}"));
    }
    Ok(())
}

pub(crate) fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Ports used by the checks (host listeners and guest source ports).
pub(crate) const P_LISTEN: u32 = 1100;
pub(crate) const P_STORM: u32 = 1300;
pub(crate) const P_NOBODY: u32 = 1301;
pub(crate) const P_CREDIT: u32 = 1400;
pub(crate) const P_SEQ: u32 = 1500;
pub(crate) const P_SMALL: u32 = 1600;
pub(crate) const G_MAIN: u32 = 40001;
pub(crate) const G_LISTEN: u32 = 7000;

/// A connection set up by the guest: its host socket and the guest's port.
pub(crate) struct Conn {
    pub(crate) host: OwnedFd,
    pub(crate) gport: u32,
    pub(crate) hport: u32,
}

pub(crate) struct Env {
    pub(crate) out: Out,
    pub(crate) g: Guest,
    pub(crate) l: OwnedFd,
    pub(crate) c1: Option<Conn>,
}

pub(crate) fn pass(r: Result<(), String>) -> TestResult {
    r.map(|()| Outcome::Pass)
}

/// Guest connects `gport` -> host `hport` (listener `l`); returns the accepted socket.
pub(crate) fn guest_connect(g: &mut Guest, l: &OwnedFd, gport: u32, hport: u32, buf_alloc: u32) -> Result<OwnedFd, String> {
    let mut h = g.hdr(OP_REQUEST, gport, hport);
    h.buf_alloc = buf_alloc;
    g.send(&h, &[])?;
    let r = g
        .recv_where(Duration::from_secs(5), |x| x.dst_port == gport && x.src_port == hport && x.op != OP_CREDIT_UPDATE)?
        .ok_or("no reply to REQUEST")?;
    let want = Hdr {
        src_cid: HOST,
        dst_cid: u64::from(g.cid),
        src_port: hport,
        dst_port: gport,
        ty: TYPE_STREAM,
        op: OP_RESPONSE,
        ..r.h
    };
    if r.h != want || r.h.len != 0 {
        return Err(format!("reply to REQUEST: got {:?}", r.h));
    }
    accept_within(l, Duration::from_secs(5))?.ok_or_else(|| "host accept timed out after RESPONSE".to_string())
}

pub(crate) fn t_features(g: &Guest) -> TestResult {
    let f = ioctl_get_u64(&g.fd, GET_FEATURES).or_fail("GET_FEATURES")?;
    let want = F_VERSION_1 | F_SEQPACKET | F_ACCESS_PLATFORM;
    if f & want != want {
        return Err(format!("features {f:#x} lack {want:#x}"));
    }
    let e = sys::errno_of(&ioctl_u64(&g.fd, SET_FEATURES, F_VERSION_1 | (1 << 50)));
    if e != libc::EOPNOTSUPP {
        return Err(format!("SET_FEATURES with an unknown bit: {}", sys::errno_name(e)));
    }
    let b = ioctl_get_u64(&g.fd, GET_BACKEND_FEATURES).or_fail("GET_BACKEND_FEATURES")?;
    if b != 1 << 1 {
        return Err(format!("backend features {b:#x}, expected IOTLB_MSG_V2 only"));
    }
    let e = sys::errno_of(&ioctl_u64(&g.fd, SET_BACKEND_FEATURES, 1 << 5));
    if e != libc::EOPNOTSUPP {
        return Err(format!("SET_BACKEND_FEATURES with an unknown bit: {}", sys::errno_name(e)));
    }
    Ok(Outcome::Pass)
}

/// The VHOST_VSOCK_SET_GUEST_CID rules, on devices of their own (`cid` is in use by the
/// main guest).
pub(crate) fn t_cid_rules(out: &Out, cid: u32) -> TestResult {
    let a = open_dev().or_fail("open")?;
    let b = open_dev().or_fail("open")?;
    for bad in [0u64, 1, 2, u64::from(u32::MAX), 1 << 32, u64::MAX] {
        let e = sys::errno_of(&ioctl_u64(&a, SET_GUEST_CID, bad));
        if e != libc::EINVAL {
            return Err(format!("SET_GUEST_CID({bad:#x}): {}, expected EINVAL", sys::errno_name(e)));
        }
    }
    let e = sys::errno_of(&ioctl_u64(&a, SET_GUEST_CID, u64::from(cid)));
    if e != libc::EADDRINUSE {
        return Err(format!("SET_GUEST_CID of a CID in use by another device: {}", sys::errno_name(e)));
    }
    let (x, y) = (cid + 100, cid + 101);
    ioctl_u64(&a, SET_GUEST_CID, u64::from(x)).or_fail("SET_GUEST_CID(free)")?;
    ioctl_u64(&a, SET_GUEST_CID, u64::from(x)).or_fail("SET_GUEST_CID(same again)")?;
    let e = sys::errno_of(&ioctl_u64(&b, SET_GUEST_CID, u64::from(x)));
    if e != libc::EADDRINUSE {
        return Err(format!("second device, same CID: {}", sys::errno_name(e)));
    }
    ioctl_u64(&b, SET_GUEST_CID, u64::from(y)).or_fail("SET_GUEST_CID(other)")?;
    // Moving `a` to a new CID frees the old one.
    ioctl_u64(&a, SET_GUEST_CID, u64::from(cid + 102)).or_fail("SET_GUEST_CID(move)")?;
    ioctl_u64(&b, SET_GUEST_CID, u64::from(x)).or_fail("SET_GUEST_CID(freed by move)")?;
    // Closing a device frees its CID.
    drop(a);
    ioctl_u64(&b, SET_GUEST_CID, u64::from(cid + 102)).or_fail("SET_GUEST_CID(freed by close)")?;
    drop(b);
    // Our own CID as a guest (nested: the G2H transport's CID) is refused.
    let local = OpenOptions::new().read(true).open("/dev/vsock").ok().and_then(|f| {
        let f = OwnedFd::from(f);
        sys::ioctl_int(&f, sys::IOCTL_VM_SOCKETS_GET_LOCAL_CID).ok()
    });
    match local.map(|c| c as u32) {
        Some(c) if c > 2 && c != u32::MAX => {
            let d = open_dev().or_fail("open")?;
            let e = sys::errno_of(&ioctl_u64(&d, SET_GUEST_CID, u64::from(c)));
            if e != libc::EADDRINUSE {
                return Err(format!("SET_GUEST_CID(our own guest CID {c}): {}", sys::errno_name(e)));
            }
        }
        c => out.info(format!("cid_rules: local CID {c:?}: no guest CID of our own to refuse")),
    }
    Ok(Outcome::Pass)
}

pub(crate) fn t_connect(e: &mut Env) -> TestResult {
    let host = guest_connect(&mut e.g, &e.l, G_MAIN, P_LISTEN, GUEST_BUF)?;
    let peer = sys::peer_addr(&host).or_fail("getpeername")?;
    if peer.svm_cid != e.g.cid || peer.svm_port != G_MAIN {
        return Err(format!("host sees peer {}:{}", peer.svm_cid, peer.svm_port));
    }
    e.c1 = Some(Conn { host, gport: G_MAIN, hport: P_LISTEN });
    Ok(Outcome::Pass)
}

pub(crate) fn c1(e: &Env) -> Result<&Conn, String> {
    e.c1.as_ref().ok_or_else(|| "no connection (connect failed)".to_string())
}

/// Guest sends `data` on c1 as one RW packet; the host must read exactly it.
pub(crate) fn rw_roundtrip(e: &mut Env, data: &[u8]) -> Result<(), String> {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.len = data.len() as u32;
    e.g.send(&h, data)?;
    let got = read_exact(&c1(e)?.host, data.len())?;
    if got != data {
        return Err("host read different bytes".into());
    }
    Ok(())
}

pub(crate) fn t_g2h(e: &mut Env) -> TestResult {
    pass(rw_roundtrip(e, &pattern(3000, 1)))
}

/// Host sends more than one receive buffer holds: the device splits it over buffers.
pub(crate) fn t_h2g_split(e: &mut Env) -> TestResult {
    let data = pattern(10000, 2);
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let n = sys::send(&c1(e)?.host, &data, 0).or_fail("host send")?;
    if n != data.len() {
        return Err(format!("host sent {n} of {}", data.len()));
    }
    let mut got = Vec::new();
    let mut pkts = 0;
    while got.len() < data.len() {
        let r =
            e.g.recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == gp)?
                .ok_or_else(|| format!("received {} of {} bytes", got.len(), data.len()))?;
        let want =
            Hdr { src_cid: HOST, dst_cid: u64::from(e.g.cid), src_port: hp, dst_port: gp, ty: TYPE_STREAM, ..r.h };
        if r.h != want {
            return Err(format!("RW header {:?}", r.h));
        }
        if r.data.len() > e.g.rx_buf - HDR {
            return Err(format!("packet of {} bytes in a {}-byte buffer", r.data.len(), e.g.rx_buf));
        }
        got.extend_from_slice(&r.data);
        pkts += 1;
    }
    if got != data {
        return Err(format!("guest received different bytes ({} packets)", pkts));
    }
    e.out.info(format!("h2g_split: 10000 bytes in {pkts} packets of at most {} bytes", e.g.rx_buf - HDR));
    Ok(Outcome::Pass)
}

/// A large blocking send(2) that the guest cannot take at once (its receive ring holds ~62
/// KiB): it returns all the same, and the guest receives the bytes as they were during the
/// call, not what the sender wrote into its buffer after send(2) returned. (rvsock sends such
/// a buffer as pinned pages and copies what the device has not taken after a short wait,
/// `zerocopy::SyncPin`; in-tree copies at once.)
pub(crate) fn t_h2g_pinned_send(e: &mut Env) -> TestResult {
    const G_PINNED: u32 = 40011;
    let host = guest_connect(&mut e.g, &e.l, G_PINNED, P_LISTEN, GUEST_BUF)?;
    let n = 200 * 1024;
    let mut buf = pattern(n, 9);
    let want = buf.clone();
    let t0 = Instant::now();
    let sent = sys::send(&host, &buf, 0).or_fail("host send")?;
    let took = t0.elapsed();
    if sent != n {
        return Err(format!("host sent {sent} of {n}"));
    }
    if took > Duration::from_secs(2) {
        return Err(format!("send(2) took {took:?} with the guest's ring full"));
    }
    buf.iter_mut().for_each(|b| *b = !*b);
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let r = e
            .g
            .recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == G_PINNED)?
            .ok_or_else(|| format!("received {} of {n} bytes", got.len()))?;
        got.extend_from_slice(&r.data);
    }
    let h = e.g.hdr(OP_RST, G_PINNED, P_LISTEN);
    e.g.send(&h, &[])?;
    drop(host);
    e.g.discard(|h| h.dst_port == G_PINNED);
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("guest received other bytes from offset {at} (the sender's later writes?)"));
    }
    e.out.info(format!("h2g_pinned_send: {n} bytes, send(2) returned after {took:?}"));
    Ok(Outcome::Pass)
}

pub(crate) fn t_credit_request(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    e.g.discard(|h| h.op == OP_CREDIT_UPDATE);
    let h = e.g.hdr(OP_CREDIT_REQUEST, gp, hp);
    e.g.send(&h, &[])?;
    let r = e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gp && h.op == OP_CREDIT_UPDATE)?;
    match r {
        Some(r) if r.h.src_port == hp && r.h.src_cid == HOST && r.h.buf_alloc > 0 => Ok(Outcome::Pass),
        Some(r) => Err(format!("bad CREDIT_UPDATE {:?}", r.h)),
        None => Err("no CREDIT_UPDATE answers CREDIT_REQUEST".into()),
    }
}

/// SEQPACKET: a message larger than a receive buffer arrives split, EOM on the last piece;
/// two 48 KiB messages sent back to back arrive as they were during their send(2) calls.
pub(crate) fn t_seqpacket_split(e: &mut Env) -> TestResult {
    let l = sys::socket(AF_VSOCK, libc::SOCK_SEQPACKET, 0).or_fail("socket")?;
    sys::bind_vm(&l, VMADDR_CID_ANY, P_SEQ).or_fail("bind")?;
    sys::listen(&l, 4).or_fail("listen")?;
    let gp = G_MAIN + 50;
    let mut h = e.g.hdr(OP_REQUEST, gp, P_SEQ);
    h.ty = TYPE_SEQPACKET;
    e.g.send(&h, &[])?;
    let r = e.g.recv_where(Duration::from_secs(5), |x| x.dst_port == gp)?.ok_or("no reply to SEQPACKET REQUEST")?;
    if r.h.op != OP_RESPONSE || r.h.ty != TYPE_SEQPACKET {
        return Err(format!("reply {:?}", r.h));
    }
    let s = accept_within(&l, Duration::from_secs(5))?.ok_or("accept timed out")?;
    let msg = pattern(3000, 3);
    sys::send(&s, &msg, 0).or_fail("send message")?;
    let mut got = Vec::new();
    loop {
        let r =
            e.g.recv_where(Duration::from_secs(5), |x| x.dst_port == gp && x.op == OP_RW)?
                .ok_or_else(|| format!("message incomplete after {} bytes", got.len()))?;
        got.extend_from_slice(&r.data);
        let last = got.len() >= msg.len();
        if (r.h.flags & SEQ_EOM != 0) != last {
            return Err(format!(
                "EOM {} on a piece ending at {} of {}",
                r.h.flags & SEQ_EOM != 0,
                got.len(),
                msg.len()
            ));
        }
        if last {
            break;
        }
    }
    if got != msg {
        return Err("message bytes differ".into());
    }
    // Two 48 KiB messages, more than the guest's ring holds at once (rvsock sends each as
    // pinned pages, `zerocopy::SyncPin`; the second one's rest is copied after a short wait):
    // the guest gets each message as it was during its send(2), not the sender's later
    // writes into the buffer, with EOM at each message's end only.
    let big = 48 * 1024;
    let mut buf = pattern(big, 5);
    let mut want = Vec::new();
    let pinned0 = pinned_sends();
    for i in 0..2 {
        want.push(buf.clone());
        let t0 = Instant::now();
        let n = sys::send(&s, &buf, 0).or_fail("send 48 KiB message")?;
        if n != big {
            return Err(format!("message {i}: sent {n} of {big} bytes"));
        }
        if t0.elapsed() > Duration::from_secs(2) {
            return Err(format!("message {i}: send(2) took {:?}", t0.elapsed()));
        }
        buf.iter_mut().for_each(|b| *b = !*b);
    }
    for (i, m) in want.iter().enumerate() {
        let mut got = Vec::new();
        loop {
            let r = e
                .g
                .recv_where(Duration::from_secs(5), |x| x.dst_port == gp && x.op == OP_RW)?
                .ok_or_else(|| format!("48 KiB message {i} incomplete after {} bytes", got.len()))?;
            got.extend_from_slice(&r.data);
            let last = got.len() >= m.len();
            if (r.h.flags & SEQ_EOM != 0) != last {
                return Err(format!("48 KiB message {i}: EOM {} at {} bytes", r.h.flags & SEQ_EOM != 0, got.len()));
            }
            if last {
                break;
            }
        }
        if got != *m {
            let at = got.iter().zip(m).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!("48 KiB message {i}: other bytes from offset {at} (the sender's later writes?)"));
        }
    }
    // rvsock (its debugfs counter present): both messages went as pinned pages.
    if let (Some(a), Some(b)) = (pinned0, pinned_sends()) {
        if b < a + 2 {
            return Err(format!("the 48 KiB messages were copied (tx_pinned {a} -> {b})"));
        }
    }
    // Guest to host message.
    let mut h = e.g.hdr(OP_RW, gp, P_SEQ);
    h.ty = TYPE_SEQPACKET;
    h.flags = SEQ_EOM;
    h.len = 500;
    e.g.send(&h, &pattern(500, 4))?;
    sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
    let mut b = vec![0u8; 1000];
    let n = sys::recv(&s, &mut b, 0).or_fail("recv message")?;
    if b[..n] != pattern(500, 4)[..] {
        return Err(format!("host received a {n}-byte message"));
    }
    // rvsock: a reader asleep in recv(2) sleeps on through a message's first piece and
    // wakes for its last (in-tree wakes it for every piece: not checked there).
    if pinned0.is_some() {
        seq_woken_at_eom(e, &s, gp)?;
    }
    let mut h = e.g.hdr(OP_RST, gp, P_SEQ);
    h.ty = TYPE_SEQPACKET;
    e.g.send(&h, &[])?;
    Ok(Outcome::Pass)
}

/// A host reader blocked in recv(2) on the SEQPACKET socket `s` while the guest sends a
/// message in two pieces, 300 ms apart: its voluntary context switches (`/proc`) must not move
/// between the pieces (the first did not wake it), and it gets the whole message.
fn seq_woken_at_eom(e: &mut Env, s: &OwnedFd, gp: u32) -> Result<(), String> {
    let msg = pattern(700, 6);
    let switches = |tid: i32| -> Result<u64, String> {
        crate::bench_stats::status_field(&format!("/proc/self/task/{tid}"), "voluntary_ctxt_switches")
            .ok_or_else(|| format!("no voluntary_ctxt_switches for task {tid}"))
    };
    let asleep = |tid: i32| {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .ok()
            .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| rest.starts_with('S')))
            .unwrap_or(false)
    };
    thread::scope(|sc| -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = sc.spawn(move || -> Result<Vec<u8>, String> {
            // SAFETY: gettid has no preconditions.
            let _ = tx.send(unsafe { libc::gettid() });
            let mut b = vec![0u8; 2000];
            let n = sys::recv(s, &mut b, 0).map_err(|x| format!("recv: {}", sys::describe(&x)))?;
            b.truncate(n);
            Ok(b)
        });
        let tid = rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "reader did not start".to_string())?;
        let t0 = Instant::now();
        while !asleep(tid) && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(100));
        let before = switches(tid)?;
        let mut h = e.g.hdr(OP_RW, gp, P_SEQ);
        h.ty = TYPE_SEQPACKET;
        h.len = 300;
        e.g.send(&h, &msg[..300])?;
        thread::sleep(Duration::from_millis(300));
        let between = switches(tid)?;
        h.flags = SEQ_EOM;
        h.len = 400;
        e.g.send(&h, &msg[300..])?;
        let got = reader.join().map_err(|_| "reader panicked".to_string())??;
        if got != msg {
            return Err(format!("two-piece message: host read {} bytes, not the message", got.len()));
        }
        if between != before {
            return Err(format!("the message's first piece woke the reader ({before} -> {between} voluntary switches)"));
        }
        Ok(())
    })
}

/// rvsock's count of payloads sent as pinned pages towards vhost (none: not rvsock, or no
/// debugfs).
fn pinned_sends() -> Option<u64> {
    sys::rvsock_counter("vhost", "tx_pinned").ok()
}

/// One of rvsock_vhost's debugfs counters (none: not rvsock, or no debugfs).
fn vhost_count(name: &str) -> Option<u64> {
    sys::read_counter(&format!("/sys/kernel/debug/rvsock_vhost/{name}")).ok()
}

fn set_running(g: &Guest, on: bool) -> Result<(), String> {
    let mut v = i32::from(on).to_ne_bytes();
    sys::ioctl_buf(&g.fd, SET_RUNNING, &mut v).or_fail("VHOST_VSOCK_SET_RUNNING").map(|_| ())
}

/// A guest's large payloads: rvsock takes them by reference (debugfs `rx_held`), and gives a
/// chain back within a bound even when the host application does not read: the payload is
/// copied first, so the host still reads what was sent after the guest reused its memory
/// (in-tree copies at once: a skip). Then the same across a stop (`SET_RUNNING` 0), which
/// copies and returns whatever is still held.
pub(crate) fn t_held_tx(e: &mut Env) -> TestResult {
    const G_HELD: u32 = 40013;
    let host = guest_connect(&mut e.g, &e.l, G_HELD, P_LISTEN, GUEST_BUF)?;
    let held0 = vhost_count("rx_held");
    let (a, b) = (pattern(48 * 1024, 21), pattern(40 * 1024, 22));
    let mut slots = Vec::new();
    for d in [&a, &b] {
        let mut h = e.g.hdr(OP_RW, G_HELD, P_LISTEN);
        h.len = d.len() as u32;
        slots.push(e.g.send_held(&h, d)?);
    }
    // Nobody reads on the host: the chains still come back.
    let t0 = Instant::now();
    e.g.wait_held(Duration::from_secs(3)).map_err(|err| format!("with the host not reading: {err}"))?;
    let back = t0.elapsed();
    for s in &slots {
        e.g.scribble_held(*s, &vec![0xEE; 48 * 1024])?;
    }
    let got = read_exact(&host, a.len() + b.len())?;
    if got.get(..a.len()) != Some(&a[..]) || got.get(a.len()..) != Some(&b[..]) {
        return Err("the host read the guest's later bytes, not what it sent".into());
    }
    let held = held0.zip(vhost_count("rx_held")).map_or(0, |(x, y)| y.saturating_sub(x));
    if held != 2 {
        let why = format!("{held} of 2 payloads taken by reference");
        let intree = std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.lines().any(|l| l.starts_with("vhost_vsock ")));
        return if intree && held0.is_none() { Ok(Outcome::Skip(format!("in-tree stack copies: {why}"))) } else { Err(why) };
    }
    // A stop right after the device took the payload: the chain comes back by the stop or
    // by then, the payload copied either way.
    let stop0 = vhost_count("rx_held_stop");
    let held1 = vhost_count("rx_held");
    let c = pattern(64 * 1024, 23);
    let mut h = e.g.hdr(OP_RW, G_HELD, P_LISTEN);
    h.len = c.len() as u32;
    let slot = e.g.send_held(&h, &c)?;
    let t0 = Instant::now();
    while vhost_count("rx_held") == held1 {
        if t0.elapsed() > Duration::from_secs(3) {
            return Err("the device did not take the third payload within 3 s".into());
        }
        thread::sleep(Duration::from_micros(200));
    }
    set_running(&e.g, false)?;
    let back_stop = e.g.wait_held(Duration::from_secs(2));
    e.g.scribble_held(slot, &vec![0xEE; c.len()])?;
    set_running(&e.g, true)?;
    back_stop.map_err(|err| format!("after SET_RUNNING 0: {err}"))?;
    let got = read_exact(&host, c.len())?;
    let h = e.g.hdr(OP_RST, G_HELD, P_LISTEN);
    e.g.send(&h, &[])?;
    drop(host);
    e.g.discard(|h| h.dst_port == G_HELD);
    if got != c {
        return Err("after a stop, the host read the guest's later bytes, not what it sent".into());
    }
    let stopped = stop0.zip(vhost_count("rx_held_stop")).map_or(0, |(x, y)| y.saturating_sub(x));
    e.out.info(format!("held_tx: 2 payloads held, back unread after {back:?}; the stop returned {stopped} held chain(s)"));
    Ok(Outcome::Pass)
}

/// Spoofed source CIDs: nothing may reach a host socket.
pub(crate) fn t_spoofed(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let cid = u64::from(e.g.cid);
    let spoofs = [cid + 1, HOST, 1, 0, u64::from(u32::MAX), cid | 1 << 32, cid + 1000];
    for (i, s) in spoofs.iter().enumerate() {
        let mut h = e.g.hdr(OP_REQUEST, 41000 + i as u32, P_LISTEN);
        h.src_cid = *s;
        e.g.send(&h, &[])?;
        let mut h = e.g.hdr(OP_RW, gp, hp);
        h.src_cid = *s;
        h.len = 8;
        e.g.send(&h, b"spoofed!")?;
    }
    if let Some(s) = accept_within(&e.l, ms(300))? {
        let p = sys::peer_addr(&s).ok();
        return Err(format!("a spoofed REQUEST was accepted (peer {p:?})"));
    }
    expect_no_data(&c1(e)?.host, ms(300), "spoofed RW")?;
    // Whatever the host answered must not have come back to us under our CID/ports.
    e.g.expect_none(ms(200), "spoofed", |h| h.dst_port >= 41000 && h.dst_port < 41000 + spoofs.len() as u32)?;
    pass(rw_roundtrip(e, b"still fine"))
}

/// Packets not addressed to the host: dropped, not answered.
pub(crate) fn t_misaddressed(e: &mut Env) -> TestResult {
    let cid = u64::from(e.g.cid);
    let dsts = [1, 0, 3, cid, u64::from(u32::MAX), HOST | 1 << 32, cid + 1];
    for (i, d) in dsts.iter().enumerate() {
        let mut h = e.g.hdr(OP_REQUEST, 42000 + i as u32, P_LISTEN);
        h.dst_cid = *d;
        e.g.send(&h, &[])?;
    }
    if accept_within(&e.l, ms(300))?.is_some() {
        return Err("a misaddressed REQUEST was accepted".into());
    }
    e.g.expect_none(ms(200), "misaddressed", |h| h.dst_port >= 42000 && h.dst_port < 42000 + dsts.len() as u32)?;
    Ok(Outcome::Pass)
}

/// Truncated chains and headers that claim more than the chain holds: dropped.
pub(crate) fn t_truncated(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let mut kept = 0;
    let mut count = |s: Sent| {
        if s == Sent::Kept {
            kept += 1
        }
    };
    let full = e.g.hdr(OP_RW, gp, hp).encode();
    // Shorter than a header.
    count(e.g.send_chain(&[(&full[..20], false)], ms(300))?);
    count(e.g.send_chain(&[(&full[..0], false)], ms(300))?);
    // Header says 1000 bytes, chain holds 500.
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.len = 1000;
    let hb = h.encode();
    let half = pattern(500, 5);
    count(e.g.send_chain(&[(&hb, false), (&half, false)], ms(300))?);
    // Header says 1 byte, chain holds none.
    h.len = 1;
    let hb1 = h.encode();
    count(e.g.send_chain(&[(&hb1, false)], ms(300))?);
    expect_no_data(&c1(e)?.host, ms(300), "truncated")?;
    // A header split over two descriptors and a payload over three is fine.
    h.len = 300;
    let hb = h.encode();
    let p = pattern(300, 6);
    match e.g.send_chain(
        &[(&hb[..10], false), (&hb[10..], false), (&p[..1], false), (&p[1..200], false), (&p[200..], false)],
        Duration::from_secs(10),
    )? {
        Sent::Returned => {}
        Sent::Kept => return Err("a valid fragmented packet was not returned".into()),
    }
    let got = read_exact(&c1(e)?.host, 300)?;
    if got != p {
        return Err("fragmented packet: host read different bytes".into());
    }
    e.out.info(format!("truncated: {kept} of 4 dropped chains were not returned to the guest"));
    Ok(Outcome::Pass)
}

/// Lengths above 64 KiB are dropped; exactly 64 KiB is delivered.
pub(crate) fn t_oversized(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let big = pattern(MAX_PKT + 1, 7);
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.len = (MAX_PKT + 1) as u32;
    let hb = h.encode();
    e.g.send_chain(&[(&hb, false), (&big, false)], ms(500))?;
    h.len = u32::MAX;
    let hb = h.encode();
    e.g.send_chain(&[(&hb, false), (&big[..100], false)], ms(300))?;
    expect_no_data(&c1(e)?.host, ms(300), "oversized")?;
    pass(rw_roundtrip(e, &big[..MAX_PKT]))
}

/// Device-writable descriptors in a TX chain: dropped.
pub(crate) fn t_bad_chain(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.len = 4;
    let hb = h.encode();
    // (A readable descriptor after a writable one breaks the ring for good: see bad_ring.)
    e.g.send_chain(&[(&hb, false), (b"evil", true)], ms(300))?;
    e.g.send_chain(&[(&hb, true)], ms(300))?;
    expect_no_data(&c1(e)?.host, ms(300), "writable descriptors")?;
    pass(rw_roundtrip(e, b"after bad chains"))
}

/// Unknown ops and types, control ops with payload: at most an RST comes back, the host
/// socket sees nothing, and the connection keeps working.
pub(crate) fn t_nonsense(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let cases: [(u16, u16, u32); 7] = [
        (TYPE_STREAM, 0, 0),
        (TYPE_STREAM, 99, 0),
        (TYPE_STREAM, u16::MAX, 0),
        (3, OP_RW, 4),
        (9, OP_REQUEST, 0),
        (0, OP_RW, 4),
        (TYPE_STREAM, OP_CREDIT_UPDATE, 4),
    ];
    for (ty, op, len) in cases {
        let mut h = e.g.hdr(op, gp, hp);
        h.ty = ty;
        h.len = len;
        e.g.send(&h, &b"junk"[..len as usize])?;
    }
    // Garbage flags on an RW are ignored.
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.flags = u32::MAX;
    h.len = 3;
    e.g.send(&h, b"abc")?;
    let got = read_exact(&c1(e)?.host, 3)?;
    if got != b"abc" {
        return Err("RW with garbage flags: wrong bytes".into());
    }
    expect_no_data(&c1(e)?.host, ms(200), "nonsense")?;
    // Any answer is an RST to our port.
    e.g.poll_rx()?;
    let mut rsts = 0;
    for r in e.g.inbox.iter().filter(|r| r.h.dst_port == gp && r.h.op != OP_CREDIT_UPDATE) {
        if r.h.op != OP_RST || r.h.src_port != hp || r.h.src_cid != HOST {
            return Err(format!("answer to nonsense: {:?}", r.h));
        }
        rsts += 1;
    }
    e.g.discard(|h| h.dst_port == gp && (h.op == OP_RST || h.op == OP_CREDIT_UPDATE));
    e.out.info(format!("nonsense: {rsts} RST answers to {} nonsense packets", cases.len()));
    pass(rw_roundtrip(e, b"after nonsense"))
}

/// Credit: the host respects a small guest buffer; bogus credit updates and a guest that
/// overruns the host's buffer break nothing.
pub(crate) fn t_credit(e: &mut Env) -> TestResult {
    let l = listener(P_CREDIT, 4)?;
    let gp = G_MAIN + 100;
    let s = guest_connect(&mut e.g, &l, gp, P_CREDIT, 4096)?;
    sys::set_nonblocking(&s, true).or_fail("nonblock")?;
    let data = pattern(20000, 8);
    let mut sent = 0;
    while sent < data.len() {
        match sys::send(&s, &data[sent..], 0) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
        thread::sleep(ms(1));
        if sent >= 4096 {
            break;
        }
    }
    thread::sleep(ms(300));
    let mut got = 0usize;
    while let Some(r) = e.g.recv_where(ms(200), |h| h.dst_port == gp && h.op == OP_RW)? {
        got += r.data.len();
    }
    if got > 4096 {
        return Err(format!("host sent {got} bytes into a 4096-byte guest buffer"));
    }
    // Bogus credit: fwd_cnt far beyond what was sent, maximal buffer.
    for (fwd, alloc) in [(0xFFFF_0000u32, 4096u32), (u32::MAX, u32::MAX), (0x8000_0000, 1)] {
        let mut h = e.g.hdr(OP_CREDIT_UPDATE, gp, P_CREDIT);
        h.fwd_cnt = fwd;
        h.buf_alloc = alloc;
        e.g.send(&h, &[])?;
    }
    while e.g.recv_where(ms(200), |h| h.dst_port == gp && h.op == OP_RW)?.is_some() {}
    // Overrun the host: 5 x 64 KiB without the host reading (its buffer is 256 KiB).
    let chunk = pattern(MAX_PKT, 9);
    for _ in 0..5 {
        let mut h = e.g.hdr(OP_RW, gp, P_CREDIT);
        h.len = MAX_PKT as u32;
        e.g.send(&h, &chunk)?;
    }
    thread::sleep(ms(200));
    let mut total = 0usize;
    let mut b = vec![0u8; MAX_PKT];
    loop {
        match sys::recv(&s, &mut b, libc::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(_) => break,
        }
    }
    let cap = 256 * 1024;
    if total > cap {
        return Err(format!("host socket queued {total} bytes, above its {cap}-byte buffer"));
    }
    e.out.info(format!("credit: host sent {got} bytes with 4096 credit; took {total} of 327680 overrun bytes"));
    let h = e.g.hdr(OP_RST, gp, P_CREDIT);
    e.g.send(&h, &[])?;
    e.g.discard(|h| h.dst_port == gp);
    Ok(Outcome::Pass)
}

/// One-byte writes to a guest that stops taking receive buffers: the packets the host queues
/// for it are charged to the writing socket, so its writes stop (EAGAIN) once about a credit
/// window of packet memory waits in the device, not after a credit window of payload bytes
/// (256 KiB of one-byte packets: 262,144 allocations). Then the guest drains: every byte
/// arrives in order, the writes queued meanwhile come joined into few packets (rvsock fills
/// each receive buffer with the queued payloads of one connection), and the writer is woken.
pub(crate) fn t_small_writes(e: &mut Env) -> TestResult {
    // rvsock stops near 2,048 one-byte packets (128-byte allocations in a 256 KiB window)
    // plus what the posted buffers took (up to a buffer's payload each, joined); a stack that
    // bounds only payload bytes goes on.
    let limit = 16384 + usize::from(NUM) * (e.g.rx_buf - HDR);
    let l = listener(P_SMALL, 4)?;
    let gp = G_MAIN + 200;
    let s = guest_connect(&mut e.g, &l, gp, P_SMALL, GUEST_BUF)?;
    sys::set_nonblocking(&s, true).or_fail("nonblock")?;
    let data = pattern(limit, 5);
    let slab0 = crate::regress::slab_bytes()?;
    let mut sent = 0;
    // The guest takes nothing meanwhile: its 64 posted buffers fill, the rest waits.
    let t0 = Instant::now();
    while sent < limit && t0.elapsed() < Duration::from_secs(20) {
        match sys::send(&s, &data[sent..sent + 1], libc::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                // Full, unless the device was still taking packets into posted buffers.
                let ev = sys::poll_one(&s, libc::POLLOUT, ms(200)).or_fail("poll")?;
                if ev & libc::POLLOUT == 0 {
                    break;
                }
            }
            Err(err) => return Err(format!("send {}: {}", sent + 1, sys::describe(&err))),
        }
    }
    let grew = crate::regress::slab_bytes()?.saturating_sub(slab0);
    e.out.info(format!(
        "small writes: {sent} one-byte writes before EAGAIN, Slab +{} KiB",
        grew >> 10
    ));
    let bounded = sent < limit;
    if bounded {
        // Drain: every byte, in order, then the writer is writable again.
        let mut got = Vec::with_capacity(sent);
        let mut pkts = 0usize;
        let t1 = Instant::now();
        while got.len() < sent && t1.elapsed() < Duration::from_secs(20) {
            if let Some(r) = e.g.recv_where(ms(200), |h| h.dst_port == gp && h.op == OP_RW)? {
                got.extend_from_slice(&r.data);
                pkts += 1;
            }
        }
        if got.len() != sent || got[..] != data[..sent] {
            return Err(format!("guest got {} of {sent} bytes (or out of order)", got.len()));
        }
        e.out.info(format!("small writes: the guest received them in {pkts} packets"));
        // Thousands of writes waited for buffers: they fill the buffers joined.
        if pkts * 4 > sent {
            return Err(format!("{sent} queued one-byte writes reached the guest in {pkts} packets (not joined)"));
        }
        let ev = sys::poll_one(&s, libc::POLLOUT, Duration::from_secs(2)).or_fail("poll")?;
        if ev & libc::POLLOUT == 0 {
            return Err("writer not writable after the guest took everything".into());
        }
    }
    let h = e.g.hdr(OP_RST, gp, P_SMALL);
    e.g.send(&h, &[])?;
    thread::sleep(ms(100));
    e.g.discard(|h| h.dst_port == gp);
    if !bounded {
        let why = format!("{sent} one-byte packets queued for a guest that takes none, Slab +{} KiB", grew >> 10);
        // The in-tree stack bounds payload bytes only (an skb per write).
        let intree = std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.lines().any(|l| l.starts_with("vhost_vsock ")));
        return if intree { Ok(Outcome::Skip(format!("in-tree stack: {why}"))) } else { Err(why) };
    }
    Ok(Outcome::Pass)
}

/// Connect and reset storms: every REQUEST is answered (RESPONSE or RST), RSTs are never
/// answered, and the device keeps up when replies outnumber receive buffers.
pub(crate) fn t_storm(e: &mut Env) -> TestResult {
    const N: u32 = 200;
    let base = 50000;
    let l = listener(P_STORM, 8)?;
    for i in 0..N {
        let h = e.g.hdr(OP_REQUEST, base + i, P_STORM);
        e.g.send(&h, &[])?;
    }
    let (mut resp, mut rst) = (0, 0);
    for _ in 0..N {
        let r =
            e.g.recv_where(Duration::from_secs(10), |h| {
                h.dst_port >= base && h.dst_port < base + N && h.src_port == P_STORM && h.op != OP_CREDIT_UPDATE
            })?
            .ok_or_else(|| format!("only {} of {N} REQUESTs answered", resp + rst))?;
        match r.h.op {
            OP_RESPONSE => resp += 1,
            OP_RST => rst += 1,
            op => return Err(format!("REQUEST answered with op {op}")),
        }
    }
    e.out.info(format!("storm: {resp} RESPONSE, {rst} RST for {N} REQUESTs to a backlog-8 listener"));
    for i in 0..N {
        let h = e.g.hdr(OP_RST, base + i, P_STORM);
        e.g.send(&h, &[])?;
    }
    // Nobody listens here: one RST each.
    for i in 0..N {
        let h = e.g.hdr(OP_REQUEST, base + N + i, P_NOBODY);
        e.g.send(&h, &[])?;
    }
    for k in 0..N {
        let r =
            e.g.recv_where(Duration::from_secs(10), |h| h.src_port == P_NOBODY)?
                .ok_or_else(|| format!("only {k} of {N} REQUESTs to a closed port answered"))?;
        if r.h.op != OP_RST || r.h.dst_port < base + N || r.h.dst_port >= base + 2 * N {
            return Err(format!("answer from a closed port: {:?}", r.h));
        }
    }
    // RSTs to nothing are never answered.
    for i in 0..N {
        let h = e.g.hdr(OP_RST, base + 2 * N + i, 2000 + i);
        e.g.send(&h, &[])?;
    }
    e.g.expect_none(ms(300), "RST storm", |h| h.dst_port >= base + 2 * N && h.dst_port < base + 3 * N)?;
    // The children that were queued are dead now; accepting them must not hang.
    let mut accepted = 0;
    while let Some(c) = accept_within(&l, ms(100))? {
        accepted += 1;
        let mut b = [0u8; 8];
        sys::set_io_timeout(&c, ms(500)).or_fail("timeout")?;
        if let Ok(n) = sys::recv(&c, &mut b, 0) {
            if n > 0 {
                return Err("a reset connection delivered data".into());
            }
        }
    }
    e.g.discard(|h| h.dst_port >= base && h.dst_port < base + 3 * N);
    e.out.info(format!("storm: accepted {accepted} reset children"));
    pass(rw_roundtrip(e, b"after storm"))
}

/// One check on the main guest.
pub(crate) type Check = fn(&mut Env) -> TestResult;

pub fn run(a: &Args) -> Result<(), String> {
    let cid = a.u32_or("cid", 3)?;
    let rx_buf = a.usize_or("rx-buf", 1024)?;
    a.check_unused()?;
    if !(3..u32::MAX - 200).contains(&cid) {
        return Err("--cid must be between 3 and 2^32-200".into());
    }
    let out = Out::default();
    let name = |t: &str| format!("vhost-hostile.{t}");
    let g = match Guest::new(cid, rx_buf) {
        Ok(g) => g,
        Err(err) => {
            out.result(&name("setup"), &Err(err));
            return Ok(());
        }
    };
    out.result(&name("setup"), &Ok(Outcome::Pass));
    out.result(&name("features"), &t_features(&g));
    out.result(&name("cid_rules"), &t_cid_rules(&out, cid));
    out.result(&name("not_running"), &t_not_running(cid));
    let l = match listener(P_LISTEN, 16) {
        Ok(l) => l,
        Err(err) => {
            out.result(&name("listener"), &Err(err));
            return Ok(());
        }
    };
    let mut e = Env { out: out.clone(), g, l, c1: None };
    let checks: [(&str, Check); 25] = [
        ("connect", t_connect),
        ("g2h_data", t_g2h),
        ("h2g_split", t_h2g_split),
        ("h2g_pinned_send", t_h2g_pinned_send),
        ("credit_request", t_credit_request),
        ("seqpacket_split", t_seqpacket_split),
        ("spoofed_src", t_spoofed),
        ("misaddressed_dst", t_misaddressed),
        ("truncated", t_truncated),
        ("oversized", t_oversized),
        ("bad_chain", t_bad_chain),
        ("nonsense", t_nonsense),
        ("credit", t_credit),
        ("small_writes", t_small_writes),
        ("storm", t_storm),
        ("host_connect", t_host_connect),
        ("connect_then_close", t_connect_then_close),
        ("rebind_lingering", t_rebind_lingering),
        ("listen_after_timeout", t_listen_after_timeout),
        ("connect_timer_restart", t_connect_timer_restart),
        ("siocoutq", t_siocoutq),
        ("cancel_request", t_cancel_request),
        ("held_tx", t_held_tx),
        ("capture_guest", crate::vhost_capture::t_capture_guest),
        ("capture_at_delivery", crate::vhost_capture::t_capture_at_delivery),
    ];
    for (n, f) in checks {
        let r = f(&mut e);
        out.result(&name(n), &r);
    }
    out.result(&name("multi_guest"), &t_multi_guest(&mut e));
    out.result(&name("dirty_log"), &t_dirty_log(&mut e, cid + 50));
    out.result(&name("cid_change"), &t_cid_change(&mut e));
    out.result(&name("bad_ring"), &t_bad_ring(&mut e));
    if e.g.rx_garbage > 0 {
        out.info(format!("{} receive buffers came back without a valid header", e.g.rx_garbage));
    }
    out.result(&name("release_resets"), &t_release(e));
    Ok(())
}
