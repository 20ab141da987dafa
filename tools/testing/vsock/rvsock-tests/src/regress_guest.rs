//! The `regress` tests that need a peer we control: the fake virtio-vsock guest of
//! `vhost_hostile` (our own vrings on `/dev/vhost-vsock`), which can answer late, stay
//! silent, vanish (transport reset) or lack the SEQPACKET feature.

use std::os::fd::OwnedFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::regress::{listen_on, mib, slab_bytes, spin_for, Ctx, Rng, MIB};
use crate::report::{OrFail, Outcome, TestResult};
use crate::sys::{self, AF_VSOCK, VMADDR_CID_ANY};
use crate::fake_guest::{
    Guest, F_VERSION_1, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SEQ_EOM, TYPE_SEQPACKET,
};
use crate::vhost_device::host_connect_to;

const CAP_NET_BIND_SERVICE: u32 = 10;

/// What the connecting thread is told to do.
enum Cmd {
    Connect,
    Reconnect,
    Send,
    Close,
}

/// The connecting thread's answer: errno (0 = success).
struct Reply {
    errno: i32,
}

/// The connecting thread: one socket at a time, blocking calls only.
fn connector(cid: u32, gport: u32, cmds: mpsc::Receiver<Cmd>, replies: mpsc::Sender<Reply>) {
    let mut sock: Option<OwnedFd> = None;
    for c in cmds {
        let r = match c {
            Cmd::Connect => match sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0) {
                Ok(s) => {
                    let e = sys::errno_of(&sys::connect_vm(&s, cid, gport));
                    sock = Some(s);
                    Reply { errno: e }
                }
                Err(e) => Reply { errno: e.raw_os_error().unwrap_or(-1) },
            },
            Cmd::Reconnect => match &sock {
                Some(s) => Reply { errno: sys::errno_of(&sys::connect_vm(s, cid, gport)) },
                None => Reply { errno: libc::EBADF },
            },
            Cmd::Send => match &sock {
                Some(s) => {
                    let _ = sys::set_io_timeout(s, Duration::from_secs(5));
                    let mut r = sys::send(s, b"s", 0);
                    while matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINTR)) {
                        r = sys::send(s, b"s", 0);
                    }
                    Reply { errno: sys::errno_of(&r) }
                }
                None => Reply { errno: libc::EBADF },
            },
            Cmd::Close => {
                sock = None;
                Reply { errno: 0 }
            }
        };
        if replies.send(r).is_err() {
            break;
        }
    }
}

/// A blocking connect to a fake guest that answers 0-300 us after the REQUEST, while
/// another thread sends SIGALRM (no SA_RESTART) to the connecting thread at a random moment
/// around the RESPONSE. connect() must return 0, or EINTR; after EINTR a second blocking
/// connect must return 0 or EISCONN, and the connection must carry data to the guest.
pub(crate) fn t_connect_signal(cx: &Ctx, cid: u32) -> TestResult {
    let mut g = Guest::new(cid, 4096)?;
    let gport = 9100;
    let iters = cx.n(2000);
    let budget = cx.secs(60);
    let (ctx, crx) = mpsc::channel::<Cmd>();
    let (rtx, rrx) = mpsc::channel::<Reply>();
    let conn = thread::spawn(move || connector(cid, gport, crx, rtx));
    let target = conn.as_pthread_t();
    let (ktx, krx) = mpsc::channel::<Duration>();
    let (kack, kackrx) = mpsc::channel::<()>();
    let killer = thread::spawn(move || {
        for d in krx {
            spin_for(d);
            let _ = sys::pthread_kill(target, libc::SIGALRM);
            if kack.send(()).is_err() {
                break;
            }
        }
    });
    let mut rng = Rng::new(u64::from(cid));
    let mut counts = [0usize; 5]; // connected, EINTR + connected, EINTR + EISCONN, -, iterations
    let t0 = Instant::now();
    let res = (|| -> Result<(), String> {
        let reply = |t: Duration| rrx.recv_timeout(t).map_err(|_| "the connecting thread did not answer".to_string());
        for i in 0..iters {
            if t0.elapsed() > budget {
                break;
            }
            counts[4] += 1;
            ctx.send(Cmd::Connect).map_err(|_| "connector gone")?;
            let req = g
                .recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
                .ok_or_else(|| format!("iteration {i}: no REQUEST reached the guest"))?;
            let hport = req.h.src_port;
            spin_for(Duration::from_micros(rng.below(300)));
            // The signal: mostly timed around the RESPONSE's processing, sometimes at once.
            let d = if rng.below(4) == 0 { 0 } else { rng.below(800) };
            ktx.send(Duration::from_micros(d)).map_err(|_| "killer gone")?;
            g.send(&g.hdr(OP_RESPONSE, gport, hport), &[])?;
            let first = reply(Duration::from_secs(10))?;
            kackrx.recv_timeout(Duration::from_secs(5)).map_err(|_| "the signalling thread did not answer")?;
            match first.errno {
                0 => counts[0] += 1,
                libc::EINTR => {
                    ctx.send(Cmd::Reconnect).map_err(|_| "connector gone")?;
                    // Answer the new REQUEST, if one comes, until the connector answers.
                    let t1 = Instant::now();
                    let second = loop {
                        if let Ok(r) = rrx.try_recv() {
                            break r;
                        }
                        if let Some(r) = g.recv_where(Duration::from_millis(2), |h| {
                            h.dst_port == gport && h.src_port == hport && h.op == OP_REQUEST
                        })? {
                            g.send(&g.hdr(OP_RESPONSE, gport, r.h.src_port), &[])?;
                        }
                        if t1.elapsed() > Duration::from_secs(10) {
                            return Err(format!("iteration {i}: the second connect after EINTR hangs"));
                        }
                    };
                    match second.errno {
                        0 => counts[1] += 1,
                        libc::EISCONN => counts[2] += 1,
                        e => {
                            return Err(format!(
                                "iteration {i}: connect returned EINTR, then the restarted blocking connect \
                                 returned {} (expected 0 or EISCONN; SIGALRM was sent {}us after the \
                                 RESPONSE was queued)",
                                sys::errno_name(e),
                                d
                            ))
                        }
                    }
                }
                e => return Err(format!("iteration {i}: connect returned {}", sys::errno_name(e))),
            }
            ctx.send(Cmd::Send).map_err(|_| "connector gone")?;
            let s = reply(Duration::from_secs(10))?;
            if s.errno != 0 {
                return Err(format!("iteration {i}: send on the connected socket: {}", sys::errno_name(s.errno)));
            }
            let rw =
                g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.src_port == hport && h.op == OP_RW)?;
            match rw {
                Some(r) if r.data == b"s" => {}
                Some(r) => return Err(format!("iteration {i}: the guest got {:?}", r.data)),
                None => return Err(format!("iteration {i}: the host's byte never reached the guest")),
            }
            ctx.send(Cmd::Close).map_err(|_| "connector gone")?;
            reply(Duration::from_secs(10))?;
            if g.recv_where(Duration::from_secs(2), |h| {
                h.dst_port == gport && h.src_port == hport && h.op == OP_SHUTDOWN
            })?
            .is_some()
            {
                g.send(&g.hdr(OP_RST, gport, hport), &[])?;
            }
            g.discard(|h| h.dst_port == gport);
        }
        Ok(())
    })();
    drop(ctx);
    drop(ktx);
    let _ = conn.join();
    let _ = killer.join();
    cx.out.info(format!(
        "connect-signal: {} iterations in {:.1}s: connected {}, EINTR then connected {}, EINTR then EISCONN {}",
        counts[4],
        t0.elapsed().as_secs_f64(),
        counts[0],
        counts[1],
        counts[2]
    ));
    res.map(|()| Outcome::Pass)
}

/// A host socket connected to the fake guest is reset by a transport reset (the guest's
/// device is closed): it gets ECONNRESET but keeps its port (another bind of it fails
/// EADDRINUSE). Connecting it again (loopback) either answers EISCONN, as in-tree does for a
/// socket that was connected, or works from the same port and carries data.
pub(crate) fn t_binding_kept_reset(cx: &Ctx, cid: u32, lport: u32) -> TestResult {
    let mut g = Guest::new(cid, 4096)?;
    let (a, hport) = host_connect_to(&mut g, 9200)?;
    drop(g);
    let ev = sys::poll_one(&a, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
    if ev & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
        return Err("the transport reset did not wake the host socket".into());
    }
    let mut b = [0u8; 4];
    match sys::recv(&a, &mut b, libc::MSG_DONTWAIT) {
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {}
        Ok(0) => {}
        r => return Err(format!("recv after the transport reset: {r:?}, expected ECONNRESET")),
    }
    let bs = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    let r = sys::bind_vm(&bs, VMADDR_CID_ANY, hport);
    if sys::errno_of(&r) != libc::EADDRINUSE {
        return Err(format!(
            "bind(CID_ANY, {hport}) while the reset socket A (fd open) holds that port: {}, expected EADDRINUSE",
            sys::errno_name(sys::errno_of(&r))
        ));
    }
    drop(bs);
    let again = (|| -> TestResult {
        let l = listen_on(libc::SOCK_STREAM, lport, 4)?;
        match sys::connect_vm(&a, 1, lport) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EISCONN) => return Ok(Outcome::Pass),
            Err(e) => return Err(format!("connect again after the reset: {}", sys::describe(&e))),
        }
        let port = sys::local_addr(&a).or_fail("getsockname")?.svm_port;
        if port != hport {
            return Err(format!("after connecting again A has port {port}, it had {hport}"));
        }
        let ev = sys::poll_one(&l, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
        if ev & libc::POLLIN == 0 {
            return Err("accept timed out".into());
        }
        let s = sys::accept(&l, false).or_fail("accept")?;
        sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
        sys::send(&a, b"r", 0).or_fail("send after reconnecting")?;
        match sys::recv(&s, &mut b, 0) {
            Ok(1) if b[0] == b'r' => Ok(Outcome::Pass),
            r => Err(format!("server recv after the reconnect: {r:?}")),
        }
    })();
    cx.intree_too(again)
}

/// A closed host socket bound to privileged port 900 lingers (the fake guest never answers
/// its SHUTDOWN); an unprivileged bind of port 900 must fail EACCES without touching it:
/// no RST reaches the guest. (On rvsock, a privileged bind then reclaims the port.)
pub(crate) fn t_bind_eacces(cx: &Ctx, cid: u32) -> TestResult {
    let mut g = Guest::new(cid, 4096)?;
    let gport = 9300;
    let hport = 900;
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    sys::bind_vm(&s, VMADDR_CID_ANY, hport).or_fail("bind port 900 as root")?;
    match sys::connect_vm(&s, cid, gport) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(format!("connect: {}", sys::describe(&e))),
    }
    g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
        .ok_or("no REQUEST reached the guest")?;
    g.send(&g.hdr(OP_RESPONSE, gport, hport), &[])?;
    let ev = sys::poll_one(&s, libc::POLLOUT, Duration::from_secs(5)).or_fail("poll")?;
    if ev & libc::POLLOUT == 0 || sys::so_error(&s).or_fail("SO_ERROR")? != 0 {
        return Err("connect to the fake guest did not complete".into());
    }
    drop(s);
    g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_SHUTDOWN)?
        .ok_or("close sent no SHUTDOWN")?;
    // An unprivileged bind of the lingering socket's port, from a thread without
    // CAP_NET_BIND_SERVICE (capabilities are per thread).
    let unpriv = thread::spawn(move || -> Result<i32, String> {
        sys::drop_effective_cap(CAP_NET_BIND_SERVICE).or_fail("capset")?;
        let b = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
        Ok(sys::errno_of(&sys::bind_vm(&b, VMADDR_CID_ANY, hport)))
    });
    let e = unpriv.join().map_err(|_| "bind thread panicked".to_string())??;
    let rst = g.recv_where(Duration::from_secs(1), |h| h.dst_port == gport && h.src_port == hport && h.op == OP_RST)?;
    let r = if e != libc::EACCES {
        Err(format!(
            "bind of privileged port {hport} without CAP_NET_BIND_SERVICE: {}, expected EACCES",
            sys::errno_name(e)
        ))
    } else if let Some(p) = rst {
        Err(format!(
            "the refused (EACCES) bind reset the lingering connection on port {hport}: the guest got {:?}",
            p.h
        ))
    } else if !cx.reference {
        // rvsock's improvement still holds: a privileged bind reclaims the port at once.
        let b = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
        match sys::bind_vm(&b, VMADDR_CID_ANY, hport) {
            Ok(()) => {
                g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.src_port == hport && h.op == OP_RST)?
                    .ok_or("the privileged bind reclaimed the port but sent no RST")?;
                Ok(Outcome::Pass)
            }
            Err(e) => Err(format!("privileged bind of the lingering socket's port: {}", sys::describe(&e))),
        }
    } else {
        Ok(Outcome::Pass)
    };
    // Let the lingering socket finish now rather than after the 8 s close timeout.
    let _ = g.send(&g.hdr(OP_RST, gport, hport), &[]);
    g.discard(|h| h.dst_port == gport);
    r
}

/// A guest that did not negotiate VIRTIO_VSOCK_F_SEQPACKET sends a SEQPACKET REQUEST to a
/// host SEQPACKET listener: it gets an RST and nothing is accepted (in-tree asks the
/// transport's `seqpacket_allow` for the child).
pub(crate) fn t_seqpacket_not_negotiated(_cx: &Ctx, cid: u32) -> TestResult {
    let mut g = Guest::with_features(cid, 4096, F_VERSION_1)?;
    let (hport, gport) = (9400, 9401);
    let l = listen_on(libc::SOCK_SEQPACKET, hport, 4)?;
    let mut h = g.hdr(OP_REQUEST, gport, hport);
    h.ty = TYPE_SEQPACKET;
    g.send(&h, &[])?;
    let r = g.recv_where(Duration::from_secs(3), |x| x.dst_port == gport && x.op != OP_CREDIT_UPDATE)?;
    let accepted = sys::poll_one(&l, libc::POLLIN, Duration::from_millis(300)).or_fail("poll")? & libc::POLLIN != 0;
    let res = match r {
        Some(p) if p.h.op == OP_RST && !accepted => Ok(Outcome::Pass),
        Some(p) => Err(format!(
            "a SEQPACKET REQUEST from a guest without VIRTIO_VSOCK_F_SEQPACKET was answered with op {} \
             (RESPONSE = {OP_RESPONSE}, RST = {OP_RST}){}",
            p.h.op,
            if accepted { " and the listener has a child to accept" } else { "" }
        )),
        None => Err("no answer to the SEQPACKET REQUEST (expected RST)".into()),
    };
    if accepted {
        if let Ok(c) = sys::accept(&l, true) {
            drop(c);
        }
    }
    let mut rst = g.hdr(OP_RST, gport, hport);
    rst.ty = TYPE_SEQPACKET;
    let _ = g.send(&rst, &[]);
    res
}

/// A hostile guest floods a host SEQPACKET connection whose reader never reads with empty
/// messages (RW, len 0, EOM): credit does not limit them (they carry no payload), so only a
/// per-packet charge bounds the memory they pin. Kernel memory may grow by at most
/// 2 x the receive buffer + 4 MiB; the host may reset the connection (RST) once its budget
/// is spent (in-tree does, after about 340), and must still answer.
pub(crate) fn t_empty_message_flood(cx: &Ctx, cid: u32) -> TestResult {
    let mut g = Guest::new(cid, 4096)?;
    let (hport, gport) = (9500, 9501);
    let l = listen_on(libc::SOCK_SEQPACKET, hport, 4)?;
    let mut req = g.hdr(OP_REQUEST, gport, hport);
    req.ty = TYPE_SEQPACKET;
    g.send(&req, &[])?;
    let r = g
        .recv_where(Duration::from_secs(5), |x| x.dst_port == gport && x.op != OP_CREDIT_UPDATE)?
        .ok_or("no answer to the SEQPACKET REQUEST")?;
    if r.h.op != OP_RESPONSE {
        return Err(format!("SEQPACKET REQUEST answered with op {}", r.h.op));
    }
    if sys::poll_one(&l, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")? & libc::POLLIN == 0 {
        return Err("the listener has no child to accept".into());
    }
    let s = sys::accept(&l, false).or_fail("accept")?;
    let buf = crate::regress_mem::buffer_size(&s)?;
    let bound = 2 * buf + 4 * MIB;
    let base = slab_bytes()?;
    let mut empty = g.hdr(OP_RW, gport, hport);
    empty.ty = TYPE_SEQPACKET;
    empty.flags = SEQ_EOM;
    let batch = vec![empty; 32];
    let (max, limit) = (cx.n(200_000).max(20_000), cx.secs(60));
    let t0 = Instant::now();
    let (mut sent, mut peak, mut reset) = (0usize, 0u64, false);
    while sent < max && t0.elapsed() < limit {
        g.send_batch(&batch)?;
        sent += batch.len();
        if sent % 1024 == 0 {
            peak = peak.max(slab_bytes()?.saturating_sub(base));
            if peak > 24 * MIB {
                break;
            }
            if g.recv_where(Duration::ZERO, |x| x.dst_port == gport && x.op == OP_RST)?.is_some() {
                reset = true;
                break;
            }
        }
    }
    if !reset {
        reset = g.recv_where(Duration::from_millis(300), |x| x.dst_port == gport && x.op == OP_RST)?.is_some();
    }
    peak = peak.max(slab_bytes()?.saturating_sub(base));
    cx.out.info(format!(
        "empty-message-flood: {sent} empty messages from the guest, kernel memory +{} (bound {}), {}",
        mib(peak),
        mib(bound),
        if reset { "the host reset the connection" } else { "no reset" }
    ));
    let mut rst = g.hdr(OP_RST, gport, hport);
    rst.ty = TYPE_SEQPACKET;
    let _ = g.send(&rst, &[]);
    drop(s);
    if peak > bound {
        return Err(format!(
            "{sent} empty SEQPACKET messages from a guest pinned {} of kernel memory (bound {})",
            mib(peak),
            mib(bound)
        ));
    }
    Ok(Outcome::Pass)
}
