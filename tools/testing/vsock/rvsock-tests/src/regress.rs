//! `regress`: one test (or a few) per kernel-side defect found in review, each written so
//! that it fails on the defect and passes on the in-tree C stack (the reference,
//! `--reference`). Where the in-tree stack has the same defect, the reference run reports
//! a skip ("in-tree 6.12 has this bug too: ...") instead of a failure; rvsock never skips.
//!
//! Loopback tests live here; the ones that need a peer we control (late RESPONSE, silent
//! peer, transport reset, a guest without SEQPACKET) use the fake guest of `vhost_hostile`
//! and live in `regress_guest.rs`. Every flood is capped by a count, a time and a kernel
//! memory growth limit, so the 1 GiB test VM survives a stack that does not bound it.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use libc::c_int;

use crate::args::Args;
use crate::regress_guest;
use crate::report::{OrFail, Out, Outcome, TestResult};
use crate::sys::{self, AF_VSOCK, SOL_VSOCK_OPTS, VMADDR_CID_ANY};

pub(crate) const SO_ZEROCOPY: c_int = 60;
pub(crate) const MSG_ZEROCOPY: c_int = 0x400_0000;
const CID_LOCAL: u32 = 1;
const MIB: u64 = 1 << 20;

/// Options shared by the tests.
pub(crate) struct Ctx {
    /// The stack under test is the in-tree reference (MODS=c).
    pub(crate) reference: bool,
    /// Loop counts and durations in percent of the defaults (the sanitizer kernel is slower).
    pub(crate) scale: u64,
    pub(crate) out: Out,
}

impl Ctx {
    /// `base` scaled, at least a tenth of it and at least 1.
    pub(crate) fn n(&self, base: usize) -> usize {
        let v = (base as u64 * self.scale / 100) as usize;
        v.max(base / 10).max(1)
    }

    pub(crate) fn secs(&self, base: u64) -> Duration {
        Duration::from_millis((base * 1000 * self.scale / 100).max(base * 100))
    }

    /// On the reference stack a failure of a check that in-tree fails too becomes a skip.
    pub(crate) fn intree_too(&self, r: TestResult) -> TestResult {
        match r {
            Err(e) if self.reference => Ok(Outcome::Skip(format!("in-tree 6.12 has this bug too: {e}"))),
            r => r,
        }
    }
}

/// A small xorshift generator (no external crates).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64);
        Rng((seed ^ t.unwrap_or(0x9e37_79b9)) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Busy-waits `d` (sleeping is far too coarse under TCG for the races we want).
pub(crate) fn spin_for(d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        std::hint::spin_loop();
    }
}

pub(crate) fn errno_str(e: &std::io::Error) -> String {
    sys::errno_name(e.raw_os_error().unwrap_or(-1))
}

fn is_errno<T>(r: &std::io::Result<T>, e: c_int) -> bool {
    matches!(r, Err(x) if x.raw_os_error() == Some(e))
}

pub(crate) fn ty_name(ty: c_int) -> &'static str {
    if ty == libc::SOCK_SEQPACKET {
        "seqpacket"
    } else {
        "stream"
    }
}

/// A listener of type `ty` on CID_ANY:`port`.
pub(crate) fn listen_on(ty: c_int, port: u32, backlog: i32) -> Result<OwnedFd, String> {
    let l = sys::socket(AF_VSOCK, ty, 0).or_fail("socket")?;
    sys::bind_vm(&l, VMADDR_CID_ANY, port).or_fail("bind listener")?;
    sys::listen(&l, backlog).or_fail("listen")?;
    Ok(l)
}

/// A connected loopback pair (client, accepted) of type `ty` through listener `l` on `port`.
fn pair(l: &OwnedFd, ty: c_int, port: u32) -> Result<(OwnedFd, OwnedFd), String> {
    let c = sys::socket(AF_VSOCK, ty, 0).or_fail("socket")?;
    sys::connect_vm(&c, CID_LOCAL, port).or_fail("connect")?;
    let ev = sys::poll_one(l, libc::POLLIN, Duration::from_secs(5)).or_fail("poll listener")?;
    if ev & libc::POLLIN == 0 {
        return Err("accept timed out".into());
    }
    let s = sys::accept(l, false).or_fail("accept")?;
    Ok((c, s))
}

/// A field of /proc/meminfo, in KiB.
pub(crate) fn meminfo_kib(key: &str) -> Result<u64, String> {
    let t = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    meminfo_field(&t, key).ok_or_else(|| format!("no {key} in /proc/meminfo"))
}

fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Kernel slab memory (`Slab:` of /proc/meminfo), in bytes.
pub(crate) fn slab_bytes() -> Result<u64, String> {
    meminfo_kib("Slab").map(|k| k * 1024)
}

/// Active objects of the named slab caches (those that exist); None if none exists.
fn slab_objs(names: &[&str]) -> Result<Option<u64>, String> {
    let t = std::fs::read_to_string("/proc/slabinfo").map_err(|e| format!("/proc/slabinfo: {e}"))?;
    Ok(slabinfo_active(&t, names))
}

fn slabinfo_active(t: &str, names: &[&str]) -> Option<u64> {
    let mut sum = None;
    for l in t.lines() {
        let mut w = l.split_whitespace();
        let (Some(name), Some(active)) = (w.next(), w.next()) else { continue };
        if names.contains(&name) {
            if let Ok(v) = active.parse::<u64>() {
                sum = Some(sum.unwrap_or(0) + v);
            }
        }
    }
    sum
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

/// Counts of outcomes by name, shared between threads.
#[derive(Default, Clone)]
struct Tally(Arc<Mutex<BTreeMap<String, usize>>>);

impl Tally {
    fn add(&self, k: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(k.to_string()).or_insert(0) += 1;
    }

    fn show(&self) -> String {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

/// The first failure, kept with its context.
#[derive(Default, Clone)]
struct FirstErr(Arc<Mutex<Option<String>>>);

impl FirstErr {
    fn set(&self, e: String) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_none() {
            *m = Some(e);
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

// ---------------------------------------------------------------------------------------
// 1. The child must not be acceptable before its RESPONSE was sent.

/// A server thread busy-polls accept4(SOCK_NONBLOCK) and, the moment it has a child, sends
/// it one byte and closes it; 4 clients connect in a loop. connect() must succeed and the
/// client then reads the byte (or EOF). With the child queued before its RESPONSE left, the
/// server's byte can overtake the RESPONSE and the connect fails.
fn t_child_response_race(cx: &Ctx, ty: c_int, port: u32) -> TestResult {
    let total = cx.n(6000);
    let budget = cx.secs(40);
    let l = listen_on(ty, port, 128)?;
    sys::set_nonblocking(&l, true).or_fail("nonblocking listener")?;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let first = FirstErr::default();
    let server = {
        let (stop, served, first) = (stop.clone(), served.clone(), first.clone());
        thread::spawn(move || {
            let mut idle = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match sys::accept(&l, true) {
                    Ok(c) => {
                        idle = 0;
                        let _ = sys::send(&c, b"x", 0);
                        drop(c);
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                        idle += 1;
                        if idle % 20000 == 0 {
                            thread::yield_now();
                        }
                        std::hint::spin_loop();
                    }
                    Err(e) => {
                        first.set(format!("server accept4: {}", sys::describe(&e)));
                        break;
                    }
                }
            }
        })
    };
    let tally = Tally::default();
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (tally, first, done) = (tally.clone(), first.clone(), done.clone());
            thread::spawn(move || {
                for i in 0..total.div_ceil(4) {
                    if t0.elapsed() > budget || first.get().is_some() {
                        break;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    let c = match sys::socket(AF_VSOCK, ty, 0) {
                        Ok(c) => c,
                        Err(e) => {
                            first.set(format!("socket: {}", sys::describe(&e)));
                            break;
                        }
                    };
                    if let Err(e) = sys::connect_vm(&c, CID_LOCAL, port) {
                        tally.add(&format!("connect-{}", errno_str(&e)));
                        first.set(format!("connect #{i} of a client: {}", sys::describe(&e)));
                        continue;
                    }
                    tally.add("connected");
                    let _ = sys::set_io_timeout(&c, Duration::from_secs(10));
                    let mut b = [0u8; 4];
                    match sys::recv(&c, &mut b, 0) {
                        Ok(1) if b[0] == b'x' => tally.add("byte"),
                        Ok(0) => tally.add("eof"),
                        Ok(n) => first.set(format!("client read {n} bytes {:?}, expected the server's byte", &b[..n])),
                        Err(e) => {
                            tally.add(&format!("recv-{}", errno_str(&e)));
                            first.set(format!("client read after a successful connect: {}", sys::describe(&e)))
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    cx.out.info(format!(
        "child-response-race.{}: {} connects in {:.1}s, served {}: {}",
        ty_name(ty),
        done.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        served.load(Ordering::Relaxed),
        tally.show()
    ));
    match first.get() {
        Some(e) => Err(format!("{e} (outcomes: {})", tally.show())),
        None => Ok(Outcome::Pass),
    }
}

/// Clients connect in a loop while two threads accept and close at once and another closes
/// and re-creates the listener. A connect may fail only with ECONNRESET, ECONNREFUSED or
/// ETIMEDOUT; a connection that succeeded must end (EOF or ECONNRESET) within 10 s.
fn t_listener_close_race(cx: &Ctx, ty: c_int, port: u32) -> TestResult {
    let dur = cx.secs(10);
    let cur: Arc<Mutex<Option<Arc<OwnedFd>>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let first = FirstErr::default();
    let tally = Tally::default();
    let recreator = {
        let (cur, stop, first, tally) = (cur.clone(), stop.clone(), first.clone(), tally.clone());
        thread::spawn(move || {
            let mut rng = Rng::new(u64::from(port));
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let l = loop {
                    match listen_on(ty, port, 16) {
                        Ok(l) => break Some(l),
                        // The previous listener may still be held by an acceptor for a moment.
                        Err(e) if e.contains("EADDRINUSE") && t0.elapsed() < Duration::from_secs(5) => {
                            thread::sleep(Duration::from_millis(1))
                        }
                        Err(e) => {
                            first.set(format!("re-creating the listener: {e}"));
                            break None;
                        }
                    }
                };
                let Some(l) = l else { break };
                if let Err(e) = sys::set_nonblocking(&l, true) {
                    first.set(format!("nonblocking: {}", sys::describe(&e)));
                    break;
                }
                *cur.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(l));
                tally.add("listeners");
                spin_for(Duration::from_micros(rng.below(3000)));
                let old = cur.lock().unwrap_or_else(|p| p.into_inner()).take();
                drop(old);
                spin_for(Duration::from_micros(rng.below(500)));
            }
        })
    };
    let acceptors: Vec<_> = (0..2)
        .map(|_| {
            let (cur, stop, first, tally) = (cur.clone(), stop.clone(), first.clone(), tally.clone());
            thread::spawn(move || {
                let mut idle = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let l = cur.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let Some(l) = l else {
                        thread::yield_now();
                        continue;
                    };
                    match sys::accept(&*l, true) {
                        Ok(c) => {
                            tally.add("accepted");
                            drop(c);
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                            idle += 1;
                            if idle % 64 == 0 {
                                thread::yield_now();
                            }
                        }
                        Err(e) => first.set(format!("accept4: {}", sys::describe(&e))),
                    }
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (first, tally) = (first.clone(), tally.clone());
            thread::spawn(move || {
                while t0.elapsed() < dur && first.get().is_none() {
                    let c = match sys::socket(AF_VSOCK, ty, 0) {
                        Ok(c) => c,
                        Err(e) => {
                            first.set(format!("socket: {}", sys::describe(&e)));
                            break;
                        }
                    };
                    let tv = sys::timeval_bytes(1, 0);
                    let _ = sys::setsockopt(&c, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv);
                    match sys::connect_vm(&c, CID_LOCAL, port) {
                        Ok(()) => {}
                        Err(e) => {
                            let n = e.raw_os_error().unwrap_or(-1);
                            tally.add(&format!("connect-{}", sys::errno_name(n)));
                            if ![libc::ECONNRESET, libc::ECONNREFUSED, libc::ETIMEDOUT].contains(&n) {
                                first.set(format!("connect: {}", sys::describe(&e)));
                            }
                            continue;
                        }
                    }
                    tally.add("connected");
                    let _ = sys::set_io_timeout(&c, Duration::from_secs(10));
                    let mut b = [0u8; 4];
                    match sys::recv(&c, &mut b, 0) {
                        Ok(0) => tally.add("eof"),
                        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => tally.add("reset"),
                        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                            first.set("a connection stayed up 10 s after the listener or child closed".into())
                        }
                        r => first.set(format!("read on a connection nobody keeps: {r:?}")),
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    stop.store(true, Ordering::Relaxed);
    for a in acceptors {
        let _ = a.join();
    }
    let _ = recreator.join();
    cx.out.info(format!("listener-close-race.{}: {}", ty_name(ty), tally.show()));
    match first.get() {
        Some(e) => Err(format!("{e} (outcomes: {})", tally.show())),
        None => Ok(Outcome::Pass),
    }
}

// ---------------------------------------------------------------------------------------
// 2. Small packets must be charged for the memory they pin.

const FLOOD_MAX: usize = 300_000;
const FLOOD_MEM_CAP: u64 = 96 * MIB;

/// What a capped flood did.
struct Flood {
    sent: usize,
    growth: u64,
    stop: String,
}

/// Sends `msg(i)` with MSG_DONTWAIT until EAGAIN, or FLOOD_MAX sends, or `limit`, or
/// kernel slab growth above FLOOD_MEM_CAP; returns what was sent and the largest growth.
fn flood(c: &OwnedFd, limit: Duration, msg: impl Fn(usize) -> Vec<u8>, max: usize) -> Result<Flood, String> {
    let base = slab_bytes()?;
    let t0 = Instant::now();
    let mut peak = 0u64;
    let mut sent = 0usize;
    let stop;
    loop {
        if sent >= max {
            stop = format!("{max} sends");
            break;
        }
        match sys::send(c, &msg(sent), libc::MSG_DONTWAIT) {
            Ok(_) => sent += 1,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                stop = "EAGAIN".to_string();
                break;
            }
            Err(e) => {
                stop = format!("send #{sent}: {}", sys::describe(&e));
                break;
            }
        }
        if sent % 1000 == 0 {
            peak = peak.max(slab_bytes()?.saturating_sub(base));
            if peak > FLOOD_MEM_CAP {
                stop = format!("kernel memory grew by more than {}", mib(FLOOD_MEM_CAP));
                break;
            }
            if t0.elapsed() > limit {
                stop = format!("{}s", limit.as_secs());
                break;
            }
        }
    }
    // Asynchronous transports (in-tree loopback) deliver from a worker: let it settle.
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(100));
        peak = peak.max(slab_bytes()?.saturating_sub(base));
    }
    Ok(Flood { sent, growth: peak, stop })
}

fn buffer_size(s: &OwnedFd) -> Result<u64, String> {
    sys::getsockopt_u64(s, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_BUFFER_SIZE).or_fail("SO_VM_SOCKETS_BUFFER_SIZE")
}

fn pat(i: usize) -> u8 {
    (i % 251) as u8
}

/// A receiver that never reads; 1-byte writes (STREAM) or 1-byte messages (SEQPACKET) until
/// EAGAIN. Kernel memory may grow by at most 2 x the receive buffer + 4 MiB; then every
/// byte or message arrives, in order.
fn t_small_packets(cx: &Ctx, ty: c_int, port: u32) -> TestResult {
    let l = listen_on(ty, port, 4)?;
    let (c, s) = pair(&l, ty, port)?;
    let buf = buffer_size(&s)?;
    let bound = 2 * buf + 4 * MIB;
    let f = flood(&c, cx.secs(60), |i| vec![pat(i)], FLOOD_MAX)?;
    cx.out.info(format!(
        "small-packets-{}: {} sends ({}), kernel memory +{} (bound {}: 2 x {} KiB + 4 MiB), {} bytes per packet",
        ty_name(ty),
        f.sent,
        f.stop,
        mib(f.growth),
        mib(bound),
        buf / 1024,
        f.growth / (f.sent.max(1) as u64)
    ));
    let mem = if f.growth > bound {
        Err(format!(
            "{} one-byte {} pinned {} of kernel memory (bound {}), {} bytes each (stopped by {})",
            f.sent,
            if ty == libc::SOCK_STREAM { "writes" } else { "messages" },
            mib(f.growth),
            mib(bound),
            f.growth / (f.sent.max(1) as u64),
            f.stop
        ))
    } else if f.stop != "EAGAIN" {
        Err(format!("the flood ended by {} instead of EAGAIN after {} sends", f.stop, f.sent))
    } else {
        Ok(())
    };
    // Drain: everything that was accepted arrives in order.
    sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
    let mut got = 0usize;
    let mut b = vec![0u8; 65536];
    let drain = (|| -> Result<(), String> {
        while got < f.sent {
            let n = match sys::recv(&s, &mut b, 0) {
                Ok(0) => return Err(format!("EOF after {got} of {} bytes", f.sent)),
                Ok(n) => n,
                Err(e) => return Err(format!("recv after {got} of {}: {}", f.sent, sys::describe(&e))),
            };
            if ty == libc::SOCK_SEQPACKET && n != 1 {
                return Err(format!("message {got} has {n} bytes, expected 1"));
            }
            for (k, x) in b[..n].iter().enumerate() {
                if *x != pat(got + k) {
                    return Err(format!("byte {} is {x}, expected {}", got + k, pat(got + k)));
                }
            }
            got += n;
        }
        match sys::recv(&s, &mut b, libc::MSG_DONTWAIT) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
            r => Err(format!("after all {} sent: recv {r:?}", f.sent)),
        }
    })();
    mem?;
    drain.map(|()| Outcome::Pass)
}

/// SEQPACKET zero-length messages: ["a", "", "b", "c"] must arrive as messages of length
/// 1, 0, 1, 1 (an empty message is delivered) or 1, 1, 1 (the in-tree 6.12 stack sends
/// nothing for a zero-length send); the connection stays up; a flood of zero-length sends
/// stays within the memory bound of `small-packets` and what was sent arrives.
fn t_empty_seqpacket(cx: &Ctx, port: u32) -> TestResult {
    let ty = libc::SOCK_SEQPACKET;
    let l = listen_on(ty, port, 4)?;
    let (c, s) = pair(&l, ty, port)?;
    sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
    sys::set_io_timeout(&c, Duration::from_secs(5)).or_fail("timeout")?;
    for m in [&b"a"[..], b"", b"b", b"c"] {
        let n = sys::send(&c, m, 0).map_err(|e| format!("send of {} bytes: {}", m.len(), sys::describe(&e)))?;
        if n != m.len() {
            return Err(format!("send of {} bytes returned {n}", m.len()));
        }
    }
    let mut lens = Vec::new();
    let mut b = [0u8; 16];
    loop {
        let (n, fl) =
            sys::recv_flags(&s, &mut b, 0).map_err(|e| format!("recv after {lens:?}: {}", sys::describe(&e)))?;
        if fl & libc::MSG_EOR == 0 {
            return Err(format!("message {} ({n} bytes) without MSG_EOR", lens.len()));
        }
        lens.push(n);
        if n == 1 && b[0] == b'c' || lens.len() > 5 {
            break;
        }
    }
    let empty_sent = match lens.as_slice() {
        [1, 0, 1, 1] => true,
        [1, 1, 1] => false,
        other => return Err(format!("messages of lengths {other:?} arrived for [a, (empty), b, c]")),
    };
    cx.out.info(format!(
        "empty-seqpacket-messages: a zero-length send {}",
        if empty_sent { "delivers an empty message" } else { "sends nothing (as in-tree 6.12)" }
    ));
    // The flood of zero-length sends.
    let buf = buffer_size(&s)?;
    let bound = 2 * buf + 4 * MIB;
    let f = flood(&c, cx.secs(30), |_| Vec::new(), cx.n(50_000).max(10_000))?;
    cx.out.info(format!(
        "empty-seqpacket-messages: {} zero-length sends ({}), kernel memory +{} (bound {})",
        f.sent,
        f.stop,
        mib(f.growth),
        mib(bound)
    ));
    if f.growth > bound {
        return Err(format!(
            "{} zero-length messages pinned {} of kernel memory (bound {}; stopped by {})",
            f.sent,
            mib(f.growth),
            mib(bound),
            f.stop
        ));
    }
    if f.stop != "EAGAIN" && !f.stop.ends_with("sends") {
        return Err(format!("the zero-length flood ended by {}", f.stop));
    }
    // Then a marker: whatever empty messages were queued come first, then the marker.
    let sender = thread::spawn(move || -> Result<(), String> {
        sys::send(&c, b"z", 0).map(drop).map_err(|e| format!("marker send: {}", sys::describe(&e)))?;
        Ok(())
    });
    let mut empties = 0usize;
    loop {
        let n = sys::recv(&s, &mut b, 0)
            .map_err(|e| format!("recv after {empties} empty messages: {}", sys::describe(&e)))?;
        match n {
            0 => empties += 1,
            1 if b[0] == b'z' => break,
            n => return Err(format!("a {n}-byte message among the empty ones")),
        }
    }
    sender.join().map_err(|_| "marker thread panicked".to_string())??;
    if empties != 0 && empties != f.sent {
        return Err(format!("{} zero-length sends succeeded but {empties} empty messages arrived", f.sent));
    }
    if (empties > 0) != empty_sent {
        return Err(format!("{empties} empty messages arrived from the flood, but the first check said otherwise"));
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------
// 3. MSG_ZEROCOPY completions must not outlive the socket.

/// 10,000 x (connect, SO_ZEROCOPY, 4 KiB MSG_ZEROCOPY send, close without reading the
/// error queue); the completions (skbs) must be freed with their sockets.
fn t_zerocopy_close_unread(cx: &Ctx, port: u32) -> TestResult {
    const CACHES: [&str; 2] = ["skbuff_head_cache", "skbuff_small_head"];
    let iters = cx.n(10_000);
    let l = listen_on(libc::SOCK_STREAM, port, 128)?;
    let served = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first = FirstErr::default();
    let server = {
        let (served, stop, first) = (served.clone(), stop.clone(), first.clone());
        thread::spawn(move || {
            let mut b = vec![0u8; 8192];
            while !stop.load(Ordering::Relaxed) {
                match sys::poll_one(&l, libc::POLLIN, Duration::from_millis(100)) {
                    Ok(ev) if ev & libc::POLLIN != 0 => {}
                    Ok(_) => continue,
                    Err(e) => {
                        first.set(format!("poll: {}", sys::describe(&e)));
                        break;
                    }
                }
                let s = match sys::accept(&l, false) {
                    Ok(s) => s,
                    Err(e) => {
                        first.set(format!("accept: {}", sys::describe(&e)));
                        break;
                    }
                };
                let _ = sys::set_io_timeout(&s, Duration::from_secs(10));
                loop {
                    match sys::recv(&s, &mut b, 0) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => break,
                        Err(e) => {
                            first.set(format!("server recv: {}", sys::describe(&e)));
                            break;
                        }
                    }
                }
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let objs0 = slab_objs(&CACHES)?.ok_or("no skbuff_head_cache / skbuff_small_head in /proc/slabinfo")?;
    let slab0 = slab_bytes()?;
    let data = vec![0x5au8; 4096];
    let t0 = Instant::now();
    let run = (|| -> Result<(), String> {
        for i in 0..iters {
            // Keep at most 32 connections ahead of the server (the backlog is 128).
            while i > served.load(Ordering::Relaxed) + 32 {
                if let Some(e) = first.get() {
                    return Err(e);
                }
                if t0.elapsed() > Duration::from_secs(300) {
                    return Err(format!("server stuck after {} connections", served.load(Ordering::Relaxed)));
                }
                thread::yield_now();
            }
            let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
            sys::connect_vm(&c, CID_LOCAL, port).map_err(|e| format!("connect #{i}: {}", sys::describe(&e)))?;
            sys::setsockopt(&c, libc::SOL_SOCKET, SO_ZEROCOPY, &1i32.to_ne_bytes()).or_fail("SO_ZEROCOPY")?;
            let n = sys::send(&c, &data, MSG_ZEROCOPY).map_err(|e| format!("send #{i}: {}", sys::describe(&e)))?;
            if n != data.len() {
                return Err(format!("send #{i} returned {n}"));
            }
            drop(c);
        }
        let t1 = Instant::now();
        while served.load(Ordering::Relaxed) < iters {
            if let Some(e) = first.get() {
                return Err(e);
            }
            if t1.elapsed() > Duration::from_secs(30) {
                return Err(format!("the server saw {} of {iters} connections end", served.load(Ordering::Relaxed)));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    run?;
    let elapsed = t0.elapsed();
    // Closed sockets may linger briefly (close handshake): allow 10 s to settle.
    let allow = 256 + iters as u64 / 50;
    let t1 = Instant::now();
    let (mut objs, mut slab);
    loop {
        objs = slab_objs(&CACHES)?.unwrap_or(0);
        slab = slab_bytes()?;
        if objs <= objs0 + allow || t1.elapsed() > Duration::from_secs(10) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    cx.out.info(format!(
        "zerocopy-close-unread: {iters} connections in {:.1}s; skb objects {objs0} -> {objs}, slab {:+.1} MiB",
        elapsed.as_secs_f64(),
        (slab as f64 - slab0 as f64) / MIB as f64
    ));
    if objs > objs0 + allow {
        return Err(format!(
            "{} skb objects ({}) still allocated after {iters} sockets closed with an unread MSG_ZEROCOPY \
             completion (allowed {allow}); slab {:+.1} MiB: the error queue is not purged",
            objs - objs0,
            CACHES.join("+"),
            (slab as f64 - slab0 as f64) / MIB as f64
        ));
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------
// 5a, 7, 8a.

/// The peer shuts a connection down completely while A's fd stays open: A keeps its port
/// (another socket's bind of it fails EADDRINUSE) until A is closed.
fn t_binding_kept_shutdown(port: u32) -> Result<(), String> {
    let l = listen_on(libc::SOCK_STREAM, port, 4)?;
    let (a, s) = pair(&l, libc::SOCK_STREAM, port)?;
    let aport = sys::local_addr(&a).or_fail("getsockname")?.svm_port;
    sys::shutdown(&s, libc::SHUT_RDWR).or_fail("server shutdown")?;
    sys::set_io_timeout(&a, Duration::from_secs(5)).or_fail("timeout")?;
    let mut b = [0u8; 4];
    match sys::recv(&a, &mut b, 0) {
        Ok(0) => {}
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => return Err(format!("A after the peer's SHUTDOWN: recv {r:?}, expected EOF")),
    }
    drop(s);
    thread::sleep(Duration::from_millis(100));
    let bsock = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    let r = sys::bind_vm(&bsock, VMADDR_CID_ANY, aport);
    if !is_errno(&r, libc::EADDRINUSE) {
        return Err(format!(
            "bind(CID_ANY, {aport}) while A (shut down by its peer, fd open) holds that port: {}, expected EADDRINUSE",
            sys::errno_name(sys::errno_of(&r))
        ));
    }
    drop(a);
    let t0 = Instant::now();
    loop {
        let b2 = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
        match sys::bind_vm(&b2, VMADDR_CID_ANY, aport) {
            Ok(()) => break,
            Err(e) if t0.elapsed() < Duration::from_secs(10) && e.raw_os_error() == Some(libc::EADDRINUSE) => {
                thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(format!("bind of A's port after A closed: {}", sys::describe(&e))),
        }
    }
    Ok(())
}

/// A client bound to CID 2 (a local CID with the vhost transport loaded) connects to CID 1:
/// the server must see CID 1 as its peer (loopback packets carry the loopback CID).
fn t_loopback_source_cid(port: u32) -> TestResult {
    let l = listen_on(libc::SOCK_STREAM, port, 4)?;
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    sys::bind_vm(&c, 2, sys::VMADDR_PORT_ANY).or_fail("bind(CID 2, any port) with the vhost transport loaded")?;
    sys::connect_vm(&c, CID_LOCAL, port).or_fail("connect to CID 1")?;
    let ev = sys::poll_one(&l, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
    if ev & libc::POLLIN == 0 {
        return Err("accept timed out".into());
    }
    let s = sys::accept(&l, false).or_fail("accept")?;
    let p = sys::peer_addr(&s).or_fail("getpeername")?;
    let cport = sys::local_addr(&c).or_fail("getsockname")?.svm_port;
    if p.svm_cid != CID_LOCAL {
        return Err(format!(
            "the server sees its loopback peer as CID {}:{} (client bound to CID 2), expected CID 1: \
             a local user can pose as the host",
            p.svm_cid, p.svm_port
        ));
    }
    if p.svm_port != cport {
        return Err(format!("the server sees peer port {}, the client has {cport}", p.svm_port));
    }
    sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
    sys::send(&c, b"k", 0).or_fail("send")?;
    let mut b = [0u8; 4];
    match sys::recv(&s, &mut b, 0) {
        Ok(1) if b[0] == b'k' => Ok(Outcome::Pass),
        r => Err(format!("server recv {r:?}")),
    }
}

/// SO_RCVLOWAT above the socket's buffer size is refused with EINVAL (in-tree
/// `vsock_set_rcvlowat`); at the buffer size it is accepted; also after shrinking the buffer
/// and on a connected socket.
fn t_rcvlowat(port: u32) -> TestResult {
    let set = |fd: &OwnedFd, v: i32| sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, &v.to_ne_bytes());
    let check = |fd: &OwnedFd, what: &str| -> Result<(), String> {
        let buf = buffer_size(fd)? as i32;
        let r = set(fd, buf + 1);
        if !is_errno(&r, libc::EINVAL) {
            return Err(format!(
                "{what}: SO_RCVLOWAT {} above the buffer size {buf}: {}, expected EINVAL",
                buf + 1,
                sys::errno_name(sys::errno_of(&r))
            ));
        }
        set(fd, buf).map_err(|e| format!("{what}: SO_RCVLOWAT = buffer size {buf}: {}", sys::describe(&e)))?;
        set(fd, 1).map_err(|e| format!("{what}: SO_RCVLOWAT 1: {}", sys::describe(&e)))
    };
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    check(&s, "default buffer")?;
    let v = 65536u64.to_ne_bytes();
    sys::setsockopt(&s, SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_BUFFER_SIZE, &v).or_fail("SO_VM_SOCKETS_BUFFER_SIZE")?;
    check(&s, "64 KiB buffer")?;
    let l = listen_on(libc::SOCK_STREAM, port, 4)?;
    let (c, a) = pair(&l, libc::SOCK_STREAM, port)?;
    check(&c, "connected client")?;
    check(&a, "accepted socket")?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------------------
// The runner.

/// Runs `f` on its own thread under a watchdog and prints its result line.
fn run_one<F>(cx: &Arc<Ctx>, name: &str, limit: Duration, f: F)
where
    F: FnOnce(&Ctx) -> TestResult + Send + 'static,
{
    let full = format!("regress.{name}");
    let (tx, rx) = mpsc::channel();
    let c = cx.clone();
    let t0 = Instant::now();
    let spawned = thread::Builder::new().name(name.to_string()).spawn(move || {
        let r = f(&c);
        let _ = tx.send(r);
    });
    let r = match spawned {
        Err(e) => Err(format!("spawn: {e}")),
        Ok(h) => match rx.recv_timeout(limit) {
            Ok(r) => {
                let _ = h.join();
                r
            }
            Err(_) => Err(format!("hung: no result within {}s (a system call never returned?)", limit.as_secs())),
        },
    };
    cx.out.info(format!("{full}: {:.1}s", t0.elapsed().as_secs_f64()));
    cx.out.result(&full, &r);
}

/// A test's name and body.
type Test = (&'static str, Box<dyn FnOnce(&Ctx) -> TestResult + Send>);

pub fn run(a: &Args) -> Result<(), String> {
    let reference = a.flag("reference");
    let env_scale = std::env::var("RVSOCK_REGRESS_SCALE").ok().and_then(|s| s.parse().ok());
    let scale = a.u64_or("scale", env_scale.unwrap_or(100))?.clamp(1, 1000);
    let only = a.str_opt("only").map(str::to_string);
    let cid = a.u32_or("guest-cid", 5)?;
    a.check_unused()?;
    if let Err(e) = sys::install_noop_handler(libc::SIGALRM) {
        return Err(format!("sigaction(SIGALRM): {}", sys::describe(&e)));
    }
    let cx = Arc::new(Ctx { reference, scale, out: Out::default() });
    cx.out.info(format!("regress: {} stack, scale {scale}%", if reference { "reference (in-tree)" } else { "rvsock" }));
    let st = libc::SOCK_STREAM;
    let sp = libc::SOCK_SEQPACKET;
    let tests: Vec<Test> = vec![
        ("child-response-race.stream", Box::new(move |c: &Ctx| t_child_response_race(c, st, 21001))),
        ("child-response-race.seqpacket", Box::new(move |c: &Ctx| t_child_response_race(c, sp, 21002))),
        ("listener-close-race.stream", Box::new(move |c: &Ctx| t_listener_close_race(c, st, 21003))),
        ("listener-close-race.seqpacket", Box::new(move |c: &Ctx| t_listener_close_race(c, sp, 21004))),
        ("small-packets-stream", Box::new(move |c: &Ctx| t_small_packets(c, st, 21005))),
        ("small-packets-seqpacket", Box::new(move |c: &Ctx| c.intree_too(t_small_packets(c, sp, 21006)))),
        ("empty-seqpacket-messages", Box::new(|c: &Ctx| t_empty_seqpacket(c, 21007))),
        ("zerocopy-close-unread", Box::new(|c: &Ctx| t_zerocopy_close_unread(c, 21008))),
        ("connect-signal", Box::new(move |c: &Ctx| regress_guest::t_connect_signal(c, cid))),
        ("binding-kept.shutdown", Box::new(|_: &Ctx| t_binding_kept_shutdown(21009).map(|()| Outcome::Pass))),
        ("binding-kept.reset", Box::new(move |c: &Ctx| regress_guest::t_binding_kept_reset(c, cid + 1, 21010))),
        ("bind-eacces-no-side-effect", Box::new(move |c: &Ctx| regress_guest::t_bind_eacces(c, cid + 2))),
        ("loopback-source-cid", Box::new(|_: &Ctx| t_loopback_source_cid(21011))),
        ("rcvlowat-above-buffer", Box::new(|_: &Ctx| t_rcvlowat(21012))),
        ("seqpacket-not-negotiated", Box::new(move |c: &Ctx| regress_guest::t_seqpacket_not_negotiated(c, cid + 3))),
    ];
    let t0 = Instant::now();
    for (name, f) in tests {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        run_one(&cx, name, Duration::from_secs(240), f);
    }
    cx.out.info(format!("regress: done in {:.1}s", t0.elapsed().as_secs_f64()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsing() {
        let m = "MemTotal:        1000 kB\nSlab:              2048 kB\nSReclaimable:  5 kB\n";
        assert_eq!(meminfo_field(m, "Slab"), Some(2048));
        assert_eq!(meminfo_field(m, "Sla"), None);
        let s = "slabinfo - version: 2.1\n# name <active_objs> <num_objs>\nskbuff_head_cache 100 120 256\n\
                 skbuff_small_head 7 8 640\nAF_VSOCK 3 4 1200\n";
        assert_eq!(slabinfo_active(s, &["skbuff_head_cache", "skbuff_small_head"]), Some(107));
        assert_eq!(slabinfo_active(s, &["nope"]), None);
    }

    #[test]
    fn scaling() {
        let cx = Ctx { reference: false, scale: 35, out: Out::default() };
        assert_eq!(cx.n(2000), 700);
        assert_eq!(cx.n(5), 1);
        assert_eq!(cx.secs(60), Duration::from_secs(21));
        let cx = Ctx { reference: true, scale: 1, out: Out::default() };
        assert_eq!(cx.n(1000), 100);
        assert_eq!(cx.secs(10), Duration::from_secs(1));
        assert!(
            matches!(cx.intree_too(Err("x".into())), Ok(Outcome::Skip(s)) if s.starts_with("in-tree 6.12 has this bug too"))
        );
        let mut r = Rng::new(1);
        assert!((0..100).all(|_| r.below(7) < 7));
    }
}
