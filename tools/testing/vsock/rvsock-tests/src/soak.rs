//! `soak`: many short-lived connections over loopback (both ends in this process), STREAM and
//! SEQPACKET, random sizes, random close orders, `--concurrency` connections at a time.
//!
//! Every cycle is one connection: connect, accept, move data, close in the way its mode
//! says. Every byte that is supposed to arrive is checked against the sender's seeded
//! stream (and SEQPACKET message lengths against the sender's message sizes), and the
//! sender's and receiver's FNV hashes are compared. Every blocking call has a timeout
//! (`--timeout`), and a watchdog turns a cycle stuck in the kernel into `fail` lines.
//!
//! The modes (both socket types each; "A" is the side that acts first, client or server
//! drawn at random unless the name says which):
//!
//! | mode | what happens |
//! |---|---|
//! | `client_first`, `server_first` | data both ways; that side closes, the other reads EOF and closes |
//! | `inflight_close` | A sends and closes at once; B still reads everything, then EOF |
//! | `reset` | data both ways; A `shutdown(SHUT_RDWR)`, which makes B (nothing unread) answer with an RST; B reads EOF and gets EPIPE; close in random order |
//! | `shut_wr` | A sends + SHUT_WR; B reads to EOF, answers, then SHUT_WR or close; A reads to EOF |
//! | `shut_rd` | B reads A's data then SHUT_RD: B's reads give 0, A's sends fail with EPIPE |
//! | `close_unread` | B reads only part of A's data; close in random order (B closing with unread data after the peer's SHUTDOWN sends an RST) |
//! | `close_connecting` | non-blocking connect, immediate close; a child that reached the listener must see EOF |
//! | `listener_close` | the listener is closed with the connection still in its accept queue: the client sees EOF or ECONNRESET |
//! | `listener_race` | non-blocking connects race the listener's close (another thread): each connect fails, or its connection is ended (EOF or ECONNRESET) within 10 s: none may stay connected to nobody |
//!
//! `--family unix` runs the same cycles over AF_UNIX sockets: that is how the engine is
//! tested on the build machine (`cargo test`), where AF_VSOCK must not be used.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use libc::{c_int, ECONNREFUSED, ECONNRESET, EINPROGRESS};

use crate::args::Args;
use crate::report::{Out, Outcome};
use crate::soak_plan::*;
use crate::sys::{self, AF_VSOCK, VMADDR_CID_ANY, VMADDR_PORT_ANY};

/// Largest SEQPACKET message (well below the 256 KiB default buffer: no EMSGSIZE).
pub(crate) const MAX_MSG: usize = 64 * 1024;
/// Largest single send() of a STREAM plan.
pub(crate) const MAX_WRITE: usize = 32 * 1024;
/// What `close_unread` may leave queued: it must fit in the peer's buffer without a reader.
pub(crate) const MAX_UNREAD: usize = 96 * 1024;
/// How long `close_connecting` looks for the child of the abandoned connect.
const CHILD_GRACE: Duration = Duration::from_millis(20);
/// `listener_race`: the most connects per cycle (below its listener's backlog, so requests
/// still create children while the listener closes), the most connects made before the
/// close starts (the rest race it), and how long a connection may outlive its listener.
const RACE_CONNECTS: usize = 120;
const RACE_BACKLOG: i32 = 128;
const RACE_HEAD_START: u64 = 40;
const RACE_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ty {
    Stream,
    Seqpacket,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Stream => "stream",
            Ty::Seqpacket => "seqpacket",
        }
    }

    fn raw(self) -> c_int {
        match self {
            Ty::Stream => libc::SOCK_STREAM,
            Ty::Seqpacket => libc::SOCK_SEQPACKET,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    ClientFirst,
    ServerFirst,
    InflightClose,
    Reset,
    ShutWr,
    ShutRd,
    CloseUnread,
    CloseConnecting,
    ListenerClose,
    ListenerRace,
}

const TYPES: [Ty; 2] = [Ty::Stream, Ty::Seqpacket];
const MODES: [Mode; 10] = [
    Mode::ClientFirst,
    Mode::ServerFirst,
    Mode::InflightClose,
    Mode::Reset,
    Mode::ShutWr,
    Mode::ShutRd,
    Mode::CloseUnread,
    Mode::CloseConnecting,
    Mode::ListenerClose,
    Mode::ListenerRace,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::ClientFirst => "client_first",
            Mode::ServerFirst => "server_first",
            Mode::InflightClose => "inflight_close",
            Mode::Reset => "reset",
            Mode::ShutWr => "shut_wr",
            Mode::ShutRd => "shut_rd",
            Mode::CloseUnread => "close_unread",
            Mode::CloseConnecting => "close_connecting",
            Mode::ListenerClose => "listener_close",
            Mode::ListenerRace => "listener_race",
        }
    }
}

fn part_name(ty: Ty, mode: Mode) -> String {
    format!("soak.{}.{}", ty.name(), mode.name())
}

// ------------------------------------------------------------ the two ends of a cycle

/// A one-way doorbell between the two sides of a cycle. A side that fails drops its
/// links, so the other one stops waiting at once.
struct Link {
    tx: Sender<()>,
    rx: Receiver<()>,
    t: Duration,
}

fn links(t: Duration) -> (Link, Link) {
    let (tx1, rx1) = mpsc::channel();
    let (tx2, rx2) = mpsc::channel();
    (Link { tx: tx1, rx: rx2, t }, Link { tx: tx2, rx: rx1, t })
}

impl Link {
    fn ring(&self) {
        let _ = self.tx.send(());
    }

    fn wait(&self, what: &str) -> Result<(), String> {
        match self.rx.recv_timeout(self.t) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(format!("waited {}s for the other side ({what})", self.t.as_secs())),
            Err(RecvTimeoutError::Disconnected) => Err(format!("the other side gave up before {what}")),
        }
    }

    /// Closes `fd` first (and says so), or after the other side said it closed.
    fn close(&self, fd: OwnedFd, me_first: bool) -> Result<(), String> {
        if me_first {
            drop(fd);
            self.ring();
        } else {
            self.wait("its close")?;
            drop(fd);
        }
        Ok(())
    }
}

/// Hashes seen by one side: of what it sent and of what it received.
#[derive(Default)]
struct Seen {
    sent: Option<u64>,
    got: Option<u64>,
}

/// Where each worker is, for the watchdog.
struct Status {
    busy: bool,
    what: String,
    since: Instant,
    steps: [&'static str; 2],
}

/// A side's step marker for the watchdog's report.
#[derive(Clone, Copy)]
struct Steps<'a> {
    st: &'a Mutex<Status>,
    side: usize,
}

impl Steps<'_> {
    fn at(&self, what: &'static str) {
        lock(self.st).steps[self.side] = what;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------ address families

#[derive(Clone, Copy)]
enum Family {
    /// AF_VSOCK towards this CID (1: loopback).
    Vsock(u32),
    /// AF_UNIX, abstract names (engine tests on the build machine).
    Unix,
}

struct Listener {
    fd: OwnedFd,
    /// Raw sockaddr to connect to.
    addr: Vec<u8>,
}

static UNIX_NAMES: AtomicUsize = AtomicUsize::new(0);

impl Family {
    fn domain(self) -> c_int {
        match self {
            Family::Vsock(_) => AF_VSOCK,
            Family::Unix => libc::AF_UNIX,
        }
    }

    fn listener(self, ty: Ty) -> Result<Listener, String> {
        self.listener_with(ty, 16)
    }

    fn listener_with(self, ty: Ty, backlog: c_int) -> Result<Listener, String> {
        let fd =
            sys::socket(self.domain(), ty.raw(), 0).map_err(|e| format!("listener socket: {}", sys::describe(&e)))?;
        let addr = match self {
            Family::Vsock(peer) => {
                sys::bind_vm(&fd, VMADDR_CID_ANY, VMADDR_PORT_ANY)
                    .map_err(|e| format!("listener bind: {}", sys::describe(&e)))?;
                let port = sys::local_addr(&fd).map_err(|e| format!("getsockname: {}", sys::describe(&e)))?.svm_port;
                sys::SockaddrVm::new(peer, port).to_bytes().to_vec()
            }
            Family::Unix => {
                let n = UNIX_NAMES.fetch_add(1, Ordering::Relaxed);
                let name = format!("rvsock-soak-{}-{n}", std::process::id());
                let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
                a.push(0);
                a.extend_from_slice(name.as_bytes());
                sys::bind_raw(&fd, &a).map_err(|e| format!("listener bind: {}", sys::describe(&e)))?;
                a
            }
        };
        sys::listen(&fd, backlog).map_err(|e| format!("listen: {}", sys::describe(&e)))?;
        Ok(Listener { fd, addr })
    }

    fn client(self, ty: Ty, nonblock: bool, t: Duration) -> Result<OwnedFd, String> {
        let flags = if nonblock { libc::SOCK_NONBLOCK } else { 0 };
        let fd =
            sys::socket(self.domain(), ty.raw() | flags, 0).map_err(|e| format!("socket: {}", sys::describe(&e)))?;
        sys::set_io_timeout(&fd, t).map_err(|e| format!("SO_RCVTIMEO/SO_SNDTIMEO: {}", sys::describe(&e)))?;
        // Blocking connects wait up to `t`. A non-blocking connect keeps the default (2 s):
        // in-tree vsock_connect holds the socket until its connect timeout fires even if it
        // is closed first, and a long timeout would keep those sockets (and the transport
        // module) around for that long.
        if let (Family::Vsock(_), false) = (self, nonblock) {
            let tv = sys::timeval_bytes(t.as_secs() as i64, 0);
            sys::setsockopt(&fd, sys::SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv)
                .map_err(|e| format!("setsockopt(CONNECT_TIMEOUT): {}", sys::describe(&e)))?;
        }
        Ok(fd)
    }

    /// Identity of a client (its local port), matched against accepted children.
    fn client_id(self, fd: &OwnedFd) -> Option<u32> {
        match self {
            Family::Vsock(_) => sys::local_addr(fd).ok().map(|a| a.svm_port),
            Family::Unix => None,
        }
    }

    /// The client identity an accepted child belongs to.
    fn child_id(self, fd: &OwnedFd) -> Option<u32> {
        match self {
            Family::Vsock(_) => sys::peer_addr(fd).ok().map(|a| a.svm_port),
            Family::Unix => None,
        }
    }
}

// ------------------------------------------------------------ cycles

/// One cycle, drawn from its own generator.
struct Spec {
    idx: u64,
    ty: Ty,
    mode: Mode,
    /// A (the side that acts first) is the client.
    a_client: bool,
    /// A closes before B.
    a_first: bool,
    pa: Plan,
    pb: Plan,
    /// close_unread: how many units of A's plan B reads before closing.
    read_units: usize,
    /// listener_race: connects made before the listener starts closing.
    race_after: usize,
    /// AF_UNIX: a socket closed with unread data resets its peer (ECONNRESET) where
    /// vsock ends the connection with a SHUTDOWN (EOF).
    unix: bool,
}

impl Spec {
    fn draw(seed: u64, idx: u64, combos: &[(Ty, Mode)], max_bytes: usize, unix: bool) -> (usize, Spec) {
        let mut rng = Rng::new(seed, idx);
        let k = rng.below(combos.len() as u64) as usize;
        let (ty, mode) = combos[k];
        let a_client = match mode {
            Mode::ClientFirst => true,
            Mode::ServerFirst => false,
            _ => rng.coin(),
        };
        let a_first = rng.coin();
        let cap = match mode {
            Mode::CloseUnread | Mode::ListenerClose => MAX_UNREAD.min(max_bytes),
            _ => max_bytes,
        };
        let pa = Plan::new(&mut rng, ty, cap);
        let pb = Plan::new(&mut rng, ty, cap);
        let read_units = rng.below(pa.units(ty) as u64) as usize;
        let race_after = 1 + rng.below(RACE_HEAD_START) as usize;
        (k, Spec { idx, ty, mode, a_client, a_first, pa, pb, read_units, race_after, unix })
    }

    fn describe(&self) -> String {
        let who = if self.a_client { "client" } else { "server" };
        let order = if self.a_first { "A closes first" } else { "B closes first" };
        format!(
            "cycle {} {}.{} (A={who}, {order}, A sends {}, B sends {})",
            self.idx,
            self.ty.name(),
            self.mode.name(),
            self.pa.describe(self.ty),
            self.pb.describe(self.ty)
        )
    }
}

struct Worker<'a> {
    fam: Family,
    t: Duration,
    listeners: [Option<Listener>; 2],
    status: &'a Mutex<Status>,
    stale: &'a AtomicU64,
    /// listener_race: connections established, connects refused.
    race: &'a [AtomicU64; 2],
}

impl Worker<'_> {
    fn listener(&mut self, ty: Ty) -> Result<&Listener, String> {
        let slot = &mut self.listeners[ty.index()];
        if slot.is_none() {
            *slot = Some(self.fam.listener(ty)?);
        }
        slot.as_ref().ok_or_else(|| "no listener".to_string())
    }

    /// Accepts the child of the client `id` (a child of an earlier abandoned connect that
    /// only arrived now is closed and skipped). `None`: nothing arrived within `wait`.
    fn accept_for(&mut self, ty: Ty, id: Option<u32>, wait: Duration) -> Result<Option<OwnedFd>, String> {
        let (fam, t, stale) = (self.fam, self.t, self.stale);
        let l = self.listener(ty)?;
        let t0 = Instant::now();
        loop {
            let left = wait.saturating_sub(t0.elapsed());
            let rev = sys::poll_one(&l.fd, libc::POLLIN, left)
                .map_err(|e| format!("poll(listener): {}", sys::describe(&e)))?;
            if rev == 0 {
                return Ok(None);
            }
            let c = match sys::accept(&l.fd, true) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(format!("accept: {}", sys::describe(&e))),
            };
            if id.is_some() && fam.child_id(&c) != id {
                stale.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            sys::set_nonblocking(&c, false).map_err(|e| format!("fcntl: {}", sys::describe(&e)))?;
            sys::set_io_timeout(&c, t).map_err(|e| format!("SO_RCVTIMEO/SO_SNDTIMEO: {}", sys::describe(&e)))?;
            return Ok(Some(c));
        }
    }

    /// A connected pair (client, server).
    fn connect_pair(&mut self, ty: Ty) -> Result<(OwnedFd, OwnedFd), String> {
        let c = self.fam.client(ty, false, self.t)?;
        let addr = self.listener(ty)?.addr.clone();
        sys::connect_raw(&c, &addr).map_err(|e| io_fail("connect", &e, self.t))?;
        let id = self.fam.client_id(&c);
        let s = self
            .accept_for(ty, id, self.t)?
            .ok_or_else(|| format!("no child to accept within {}s", self.t.as_secs()))?;
        Ok((c, s))
    }

    fn run(&mut self, sp: &Spec) -> Result<(), String> {
        match sp.mode {
            Mode::CloseConnecting => self.close_connecting(sp),
            Mode::ListenerClose => self.listener_close(sp),
            Mode::ListenerRace => self.listener_race(sp),
            _ => {
                let (c, s) = self.connect_pair(sp.ty)?;
                let (a, b) = if sp.a_client { (c, s) } else { (s, c) };
                duet(sp, a, b, self.t, self.status)
            }
        }
    }

    fn close_connecting(&mut self, sp: &Spec) -> Result<(), String> {
        let c = self.fam.client(sp.ty, true, self.t)?;
        let addr = self.listener(sp.ty)?.addr.clone();
        match sys::connect_raw(&c, &addr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
            Err(e) => return Err(format!("non-blocking connect: {}", sys::describe(&e))),
        }
        let id = self.fam.client_id(&c);
        drop(c);
        // The child, if the request got that far, must see the end of the connection.
        if let Some(child) = self.accept_for(sp.ty, id, CHILD_GRACE)? {
            expect_eof(&child, true, self.t).map_err(|e| format!("child of the closed connect: {e}"))?;
        }
        Ok(())
    }

    fn listener_close(&mut self, sp: &Spec) -> Result<(), String> {
        let c = self.fam.client(sp.ty, false, self.t)?;
        let l = self.listeners[sp.ty.index()].take().map_or_else(|| self.fam.listener(sp.ty), Ok)?;
        sys::connect_raw(&c, &l.addr).map_err(|e| io_fail("connect", &e, self.t))?;
        if sp.a_first {
            // Leave data in the child's queue too.
            send_plan(&c, sp.ty, &sp.pa, self.t)?;
        }
        drop(l);
        expect_eof(&c, true, self.t).map_err(|e| format!("client after the listener closed: {e}"))
    }

    /// Non-blocking connects race the listener's close (on another thread). Each connect
    /// fails, or the connection it made ends (EOF or ECONNRESET) once the listener is gone:
    /// a request that reached the listener before its close must be reset with the rest of
    /// its accept queue (in-tree: `vsock_release` under the listener's lock, and
    /// `virtio_transport_recv_listen` refusing once `sk_shutdown == SHUTDOWN_MASK`).
    fn listener_race(&mut self, sp: &Spec) -> Result<(), String> {
        let l = self.fam.listener_with(sp.ty, RACE_BACKLOG)?;
        let addr = l.addr.clone();
        let (fam, t, ty) = (self.fam, self.t, sp.ty);
        let at = Steps { st: self.status, side: 0 };
        at.at("connects racing the close");
        let (made, stop, closed) = (AtomicUsize::new(0), AtomicBool::new(false), AtomicBool::new(false));
        let clients = thread::scope(|s| -> Result<Vec<OwnedFd>, String> {
            let (made, stop, closed, after) = (&made, &stop, &closed, sp.race_after);
            // Close once the client made `race_after` connects: it is connecting again then.
            let closer = s.spawn(move || {
                while made.load(Ordering::Acquire) < after && !stop.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                drop(l);
                closed.store(true, Ordering::Release);
            });
            let mut v = Vec::new();
            // Connect until two attempts after the close (or the cap).
            let r = (|| {
                let mut after = 0;
                while v.len() < RACE_CONNECTS && after < 2 {
                    if closed.load(Ordering::Acquire) {
                        after += 1;
                    }
                    let c = fam.client(ty, true, t)?;
                    match sys::connect_raw(&c, &addr) {
                        Ok(()) => {}
                        Err(e) if matches!(e.raw_os_error(), Some(EINPROGRESS | ECONNRESET | ECONNREFUSED)) => {}
                        Err(e) => return Err(format!("non-blocking connect {}: {}", v.len(), sys::describe(&e))),
                    }
                    v.push(c);
                    made.fetch_add(1, Ordering::Release);
                }
                Ok(())
            })();
            stop.store(true, Ordering::Release);
            let _ = closer.join();
            r.map(|()| v)
        })?;
        let wait = RACE_WAIT.min(t);
        for (i, c) in clients.iter().enumerate() {
            at.at("connect outcome");
            let rev = sys::poll_one(c, libc::POLLOUT, wait).map_err(|e| format!("poll: {}", sys::describe(&e)))?;
            if rev == 0 {
                return Err(format!("connect {i} neither completed nor failed within {}s", wait.as_secs()));
            }
            if sys::so_error(c).map_err(|e| format!("SO_ERROR: {}", sys::describe(&e)))? != 0 {
                self.race[1].fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.race[0].fetch_add(1, Ordering::Relaxed);
            at.at("end of a connection whose listener closed");
            sys::set_nonblocking(c, false).map_err(|e| format!("fcntl: {}", sys::describe(&e)))?;
            sys::set_io_timeout(c, wait).map_err(|e| format!("SO_RCVTIMEO: {}", sys::describe(&e)))?;
            let ended = match fam {
                Family::Vsock(_) => expect_eof(c, true, wait),
                // AF_UNIX ends such a connection with ECONNRESET, ENOTCONN or EINVAL.
                Family::Unix => match sys::recv(c, &mut [0u8; 16], 0) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io_fail("expected its end", &e, wait)),
                    _ => Ok(()),
                },
            };
            ended.map_err(|e| {
                format!(
                    "connect {i} of {} (the listener's close began after connect {}) succeeded but its connection \
                     did not end after the listener closed: {e}",
                    clients.len(),
                    sp.race_after
                )
            })?;
        }
        Ok(())
    }
}

/// Runs the two ends of a connected cycle: A on this thread, B on a helper thread.
fn duet(sp: &Spec, a: OwnedFd, b: OwnedFd, t: Duration, st: &Mutex<Status>) -> Result<(), String> {
    let (la, lb) = links(t);
    let (sa, sb) = (Steps { st, side: 0 }, Steps { st, side: 1 });
    let (ra, rb) = thread::scope(|s| {
        let hb = s.spawn(move || side_b(sp, b, lb, t, sb));
        let ra = side_a(sp, a, la, t, sa);
        let rb = hb.join().unwrap_or_else(|_| Err("B's thread panicked".into()));
        (ra, rb)
    });
    let (ya, yb) = match (ra, rb) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(ea), Err(eb)) => return Err(format!("A: {ea}; B: {eb}")),
        (Err(e), _) => return Err(format!("A: {e}")),
        (_, Err(e)) => return Err(format!("B: {e}")),
    };
    if let (Some(s), Some(g)) = (ya.sent, yb.got) {
        if s != g {
            return Err(format!("hash of A's data: sent {s:016x}, B received {g:016x}"));
        }
    }
    if let (Some(s), Some(g)) = (yb.sent, ya.got) {
        if s != g {
            return Err(format!("hash of B's data: sent {s:016x}, A received {g:016x}"));
        }
    }
    Ok(())
}

fn side_a(sp: &Spec, fd: OwnedFd, l: Link, t: Duration, at: Steps<'_>) -> Result<Seen, String> {
    let (ty, pa, pb) = (sp.ty, &sp.pa, &sp.pb);
    let mut y = Seen::default();
    match sp.mode {
        Mode::ClientFirst | Mode::ServerFirst => {
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pa, t)?);
            at.at("recv");
            y.got = Some(recv_plan(&fd, ty, pb, usize::MAX, t)?);
            drop(fd);
        }
        Mode::InflightClose => {
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pa, t)?);
            drop(fd);
        }
        Mode::Reset => {
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pa, t)?);
            at.at("recv");
            y.got = Some(recv_plan(&fd, ty, pb, usize::MAX, t)?);
            shutdown(&fd, libc::SHUT_RDWR)?;
            at.at("close");
            l.close(fd, sp.a_first)?;
        }
        Mode::ShutWr => {
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pa, t)?);
            shutdown(&fd, libc::SHUT_WR)?;
            at.at("recv to EOF");
            y.got = Some(recv_plan(&fd, ty, pb, usize::MAX, t)?);
            expect_eof(&fd, false, t)?;
            at.at("close");
            l.close(fd, sp.a_first)?;
        }
        Mode::ShutRd => {
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pa, t)?);
            at.at("wait for SHUT_RD");
            l.wait("its SHUT_RD")?;
            at.at("send until EPIPE");
            expect_epipe(&fd, t)?;
            at.at("close");
            l.close(fd, sp.a_first)?;
        }
        Mode::CloseUnread => {
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pa, t)?);
            l.ring();
            at.at("close");
            if sp.a_first {
                l.close(fd, true)?;
            } else {
                l.wait("its close")?;
                // B closed with our data unread: its SHUTDOWN ends our connection.
                at.at("EOF after B's close");
                expect_eof(&fd, sp.unix, t)?;
                expect_epipe(&fd, t)?;
                drop(fd);
            }
        }
        Mode::CloseConnecting | Mode::ListenerClose | Mode::ListenerRace => return Err("not a duet mode".into()),
    }
    Ok(y)
}

fn side_b(sp: &Spec, fd: OwnedFd, l: Link, t: Duration, at: Steps<'_>) -> Result<Seen, String> {
    let (ty, pa, pb) = (sp.ty, &sp.pa, &sp.pb);
    let mut y = Seen::default();
    match sp.mode {
        Mode::ClientFirst | Mode::ServerFirst => {
            at.at("recv");
            y.got = Some(recv_plan(&fd, ty, pa, usize::MAX, t)?);
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pb, t)?);
            at.at("EOF");
            expect_eof(&fd, false, t)?;
            drop(fd);
        }
        Mode::InflightClose => {
            at.at("recv to EOF");
            y.got = Some(recv_plan(&fd, ty, pa, usize::MAX, t)?);
            expect_eof(&fd, false, t)?;
            drop(fd);
        }
        Mode::Reset => {
            at.at("recv");
            y.got = Some(recv_plan(&fd, ty, pa, usize::MAX, t)?);
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pb, t)?);
            at.at("EOF after A's SHUT_RDWR");
            expect_eof(&fd, false, t)?;
            expect_epipe(&fd, t)?;
            at.at("close");
            l.close(fd, !sp.a_first)?;
        }
        Mode::ShutWr => {
            at.at("recv to EOF");
            y.got = Some(recv_plan(&fd, ty, pa, usize::MAX, t)?);
            expect_eof(&fd, false, t)?;
            at.at("send");
            y.sent = Some(send_plan(&fd, ty, pb, t)?);
            at.at("close");
            if sp.a_first {
                shutdown(&fd, libc::SHUT_WR)?;
                l.close(fd, false)?;
            } else {
                // Close instead of SHUT_WR: A still reads everything, then EOF.
                l.close(fd, true)?;
            }
        }
        Mode::ShutRd => {
            at.at("recv");
            y.got = Some(recv_plan(&fd, ty, pa, usize::MAX, t)?);
            shutdown(&fd, libc::SHUT_RD)?;
            let mut b = [0u8; 16];
            match sys::recv(&fd, &mut b, 0) {
                Ok(0) => {}
                Ok(n) => return Err(format!("recv after SHUT_RD returned {n} bytes, expected 0")),
                Err(e) => return Err(format!("recv after SHUT_RD: {}, expected 0", sys::describe(&e))),
            }
            l.ring();
            at.at("close");
            l.close(fd, !sp.a_first)?;
        }
        Mode::CloseUnread => {
            at.at("recv part");
            let _ = recv_plan(&fd, ty, pa, sp.read_units, t)?;
            l.wait("sending everything")?;
            at.at("close");
            if sp.a_first {
                l.wait("its close")?;
                // A's SHUTDOWN has arrived (or is about to): close with data unread.
                at.at("wait for A's SHUTDOWN");
                let rev = sys::poll_one(&fd, libc::POLLRDHUP, t).map_err(|e| format!("poll: {}", sys::describe(&e)))?;
                if rev & libc::POLLRDHUP == 0 {
                    return Err(format!("no POLLRDHUP {}s after the peer closed (revents {rev:#x})", t.as_secs()));
                }
                drop(fd);
            } else {
                l.close(fd, true)?;
            }
        }
        Mode::CloseConnecting | Mode::ListenerClose | Mode::ListenerRace => return Err("not a duet mode".into()),
    }
    Ok(y)
}

// ------------------------------------------------------------ driver

#[derive(Default)]
struct Stat {
    ok: u64,
    fail: u64,
    examples: Vec<String>,
}

struct Shared {
    next: AtomicU64,
    done: AtomicU64,
    stale: AtomicU64,
    race: [AtomicU64; 2],
    stats: Mutex<HashMap<usize, Stat>>,
    status: Vec<Mutex<Status>>,
}

struct Opts {
    fam: Family,
    cycles: u64,
    conc: usize,
    seed: u64,
    t: Duration,
    max_bytes: usize,
    combos: Vec<(Ty, Mode)>,
}

fn worker(o: &Opts, sh: &Shared, id: usize) {
    let st = &sh.status[id];
    let mut w = Worker { fam: o.fam, t: o.t, listeners: [None, None], status: st, stale: &sh.stale, race: &sh.race };
    loop {
        let idx = sh.next.fetch_add(1, Ordering::Relaxed);
        if idx >= o.cycles {
            break;
        }
        let (k, sp) = Spec::draw(o.seed, idx, &o.combos, o.max_bytes, matches!(o.fam, Family::Unix));
        {
            let mut s = lock(st);
            *s = Status { busy: true, what: sp.describe(), since: Instant::now(), steps: ["connect", "-"] };
        }
        let r = w.run(&sp);
        lock(st).busy = false;
        {
            let mut stats = lock(&sh.stats);
            let e = stats.entry(k).or_default();
            match r {
                Ok(()) => e.ok += 1,
                Err(err) => {
                    e.fail += 1;
                    if e.examples.len() < 3 {
                        e.examples.push(format!("{}: {err}", sp.describe()));
                    }
                }
            }
        }
        sh.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints one line per (type, mode) in use and `soak.complete`.
fn report(o: &Opts, sh: &Shared, complete: Result<String, String>) {
    let out = Out::default();
    let stats = lock(&sh.stats);
    for (k, &(ty, mode)) in o.combos.iter().enumerate() {
        let name = part_name(ty, mode);
        let r = match stats.get(&k) {
            None => Ok(Outcome::Skip("no cycle drew this combination".into())),
            Some(s) if s.fail == 0 => {
                out.info(format!("{name}: {} cycles", s.ok));
                Ok(Outcome::Pass)
            }
            Some(s) => {
                for e in s.examples.iter().skip(1) {
                    out.info(format!("{name}: also {e}"));
                }
                Err(format!("{} of {} cycles failed; first: {}", s.fail, s.ok + s.fail, s.examples[0]))
            }
        };
        out.result(&name, &r);
    }
    drop(stats);
    out.result(
        "soak.complete",
        &complete.map(|m| {
            out.info(m);
            Outcome::Pass
        }),
    );
}

pub fn run(a: &Args) -> Result<(), String> {
    let fam = match a.str_or("family", "vsock") {
        "vsock" => Family::Vsock(a.u32_or("peer-cid", 1)?),
        "unix" => Family::Unix,
        f => return Err(format!("--family: {f:?} is neither vsock nor unix")),
    };
    let only = a.str_opt("only").map(str::to_string);
    let mut combos = Vec::new();
    for ty in TYPES {
        for mode in MODES {
            if only.as_deref().is_none_or(|o| o.split(',').any(|w| part_name(ty, mode).contains(w))) {
                combos.push((ty, mode));
            }
        }
    }
    if combos.is_empty() {
        return Err("--only selects nothing".into());
    }
    let o = Opts {
        fam,
        cycles: a.u64_or("cycles", 10_000)?,
        conc: a.usize_or("concurrency", 50)?.max(1),
        seed: a.u64_or("seed", 1)?,
        t: a.secs_or("timeout", 30)?.max(Duration::from_secs(1)),
        max_bytes: a.usize_or("max-bytes", 128 * 1024)?.max(1),
        combos,
    };
    a.check_unused()?;
    let _ = sys::raise_nofile(o.conc as u64 * (RACE_CONNECTS as u64 + 8) + 64);
    let sh = Arc::new(Shared {
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        race: [AtomicU64::new(0), AtomicU64::new(0)],
        stats: Mutex::new(HashMap::new()),
        status: (0..o.conc)
            .map(|_| Mutex::new(Status { busy: false, what: String::new(), since: Instant::now(), steps: ["-", "-"] }))
            .collect(),
    });
    let o = Arc::new(o);
    let info = Out::default();
    info.info(format!(
        "soak: {} cycles, {} at a time, seed {}, timeout {}s, up to {} bytes per direction, {} combinations",
        o.cycles,
        o.conc,
        o.seed,
        o.t.as_secs(),
        o.max_bytes,
        o.combos.len()
    ));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for id in 0..o.conc {
        let (o2, sh2) = (o.clone(), sh.clone());
        let h = thread::Builder::new().name(format!("soak-{id}")).spawn(move || worker(&o2, &sh2, id));
        match h {
            Ok(h) => handles.push(h),
            Err(e) => info.info(format!("soak: cannot start worker {id}: {e}")),
        }
    }
    if handles.is_empty() {
        report(&o, &sh, Err("no worker thread could be started".into()));
        return Ok(());
    }
    // Watchdog: every cycle's blocking calls are bounded by `t`, so a cycle that takes much
    // longer than a few of them is stuck in the kernel.
    let limit = o.t * 4 + Duration::from_secs(30);
    let mut next_note = o.cycles / 10;
    while handles.iter().any(|h| !h.is_finished()) {
        thread::sleep(Duration::from_millis(200));
        let done = sh.done.load(Ordering::Relaxed);
        if done >= next_note && next_note > 0 && done < o.cycles {
            info.info(format!("soak: {done}/{} cycles after {:.1?}", o.cycles, t0.elapsed()));
            next_note += o.cycles / 10;
        }
        let stuck: Vec<String> = sh
            .status
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let s = lock(m);
                (s.busy && s.since.elapsed() > limit).then(|| {
                    format!(
                        "worker {i} stuck for {}s in {} (A at \"{}\", B at \"{}\")",
                        s.since.elapsed().as_secs(),
                        s.what,
                        s.steps[0],
                        s.steps[1]
                    )
                })
            })
            .collect();
        if !stuck.is_empty() {
            for s in &stuck {
                info.info(format!("soak: {s}"));
            }
            report(
                &o,
                &sh,
                Err(format!("{} (and {} more stuck); a syscall hangs in the kernel", stuck[0], stuck.len() - 1)),
            );
            // Threads blocked in the kernel cannot be joined: leave now.
            std::process::exit(1);
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let done = sh.done.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let stale = sh.stale.load(Ordering::Relaxed);
    let (raced, refused) = (sh.race[0].load(Ordering::Relaxed), sh.race[1].load(Ordering::Relaxed));
    let complete = if done == o.cycles {
        Ok(format!(
            "soak: {done} cycles in {secs:.1}s ({:.0}/s); {stale} late children of abandoned connects skipped; \
             listener_race: {raced} connections established and ended, {refused} connects refused",
            done as f64 / secs.max(1e-9)
        ))
    } else {
        Err(format!("only {done} of {} cycles ran", o.cycles))
    };
    report(&o, &sh, complete);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_cover_everything() {
        let combos: Vec<(Ty, Mode)> = TYPES.iter().flat_map(|&t| MODES.iter().map(move |&m| (t, m))).collect();
        let mut seen = vec![0; combos.len()];
        for i in 0..2000 {
            let (k, a) = Spec::draw(3, i, &combos, 4096, false);
            let (k2, b) = Spec::draw(3, i, &combos, 4096, false);
            assert_eq!((k, a.describe()), (k2, b.describe()));
            seen[k] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
