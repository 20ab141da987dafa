//! `bench` and `bench-serve`: the metrics of the rvsock-vs-C benchmark, measured on whatever
//! vsock stack is loaded. Prints `RVSOCK-BENCH <metric> <value> <unit> <better>` lines; the
//! harness (scripts/bench.sh) runs this on each stack in turn and computes the ratios.
//!
//! Every metric has a server half (a listener on `port + offset` and its handler) and a client
//! half. `bench` alone runs both halves in this process (loopback, peer CID 1). With
//! `--remote`, the server halves run in the peer VM (`bench-serve` there, started first) and
//! `bench` only runs the clients: guest-to-host and host-to-guest.
//!
//! Results the client cannot see itself come back on the connection: a throughput sink answers
//! the byte count it received and the busy CPU ticks of its machine while it received (the
//! host side sees the CPU time of both ends: an L2 guest's vCPUs run in L1's QEMU), a
//! SEQPACKET sink the message count.

use crate::args::Args;
use crate::bench_stats::*;
use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod serve;
pub use serve::serve_cmd;
use serve::start_servers;

const AF_VSOCK: i32 = 40;
const CID_ANY: u32 = u32::MAX;

/// Port offsets of the metrics (from `--port`).
const OFF_STREAM: u32 = 0; // +0, +1, +2: 4 KiB, 64 KiB, 256 KiB writes; +3: sendfile(2); +4: MSG_ZEROCOPY;
                           // +5: 64 KiB writes to an event loop's reader
/// 64 KiB writes to a reader that polls before each read (an event loop: socat, tokio).
const STREAM_POLL: &str = "stream_tput_poll_64k";
const OFF_SEQ: u32 = 10; // +10, +11: 64 B, 64 KiB messages
const OFF_RR: u32 = 20;
const OFF_CONNECT: u32 = 30;
const OFF_IDLE: u32 = 40;
const OFF_SPLICE: u32 = 50; // a stream sink that splice(2)s into a pipe
const OFF_FAIR: u32 = 60; // +0: stream sinks, a thread per connection; +1: echo (SCHED_FIFO)
const OFF_FLOOD: u32 = 70; // +0: holds connections without reading; +1: answers its Slab
/// Bytes the flood queues before `flood_mem` starts counting: a quarter of a default buffer,
/// past the switch an rvsock guest makes to small receive buffers (three rings of small
/// packets: after 2 KiB, with the host merging 1-byte sends into fewer packets, it had not
/// begun, and its guest's Slab then shrank by 1.4-2 MB during the counted part).
const FLOOD_WARMUP: u64 = 65536;
/// How long a flood waits for its peer to free what it queued (the peer's close timeout is
/// 8 s on both stacks).
const FLOOD_FREE_WAIT: Duration = Duration::from_secs(12);
/// Bulk streams of the fairness metric.
const FAIR_STREAMS: usize = 8;
/// The pause between the fairness flow's round trips: a latency probe, not a load (a
/// SCHED_FIFO flow going back to back would take the CPUs from the streams it is measured
/// against: 8 streams made 13-19 MiB/s beside rvsock's flow, 97-148 beside C's slower one).
const FAIR_GAP: Duration = Duration::from_millis(1);
const STREAM_SIZES: [usize; 3] = [4096, 65536, 262144];
const SEQ_SIZES: [usize; 2] = [64, 65536];

fn sock(ty: i32) -> io::Result<OwnedFd> {
    sys::socket(AF_VSOCK, ty, 0)
}

/// Every bench socket times out instead of hanging (a stalled stack is a result too).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn listener(ty: i32, port: u32, backlog: i32) -> io::Result<OwnedFd> {
    let l = sock(ty)?;
    sys::set_io_timeout(&l, IO_TIMEOUT)?;
    sys::bind_vm(&l, CID_ANY, port)?;
    sys::listen(&l, backlog)?;
    Ok(l)
}

fn connect(ty: i32, cid: u32, port: u32) -> io::Result<OwnedFd> {
    let s = sock(ty)?;
    sys::set_io_timeout(&s, IO_TIMEOUT)?;
    sys::connect_vm(&s, cid, port)?;
    Ok(s)
}

fn accept(l: &OwnedFd) -> io::Result<OwnedFd> {
    let c = sys::accept(l, false)?;
    sys::set_io_timeout(&c, IO_TIMEOUT)?;
    Ok(c)
}

fn report(metric: &str, value: f64, unit: &str, better: &str) {
    println!("RVSOCK-BENCH {metric} {value:.3} {unit} {better}");
}

fn io_err(what: &str, e: io::Error) -> String {
    format!("{what}: {}", sys::describe(&e))
}

fn send_all(s: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        off += sys::send(s, &buf[off..], libc::MSG_NOSIGNAL)?;
    }
    Ok(())
}

fn recv_exact(s: &OwnedFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = sys::recv(s, &mut buf[got..], 0)?;
        if n == 0 {
            return Ok(false);
        }
        got += n;
    }
    Ok(true)
}

fn u64s(a: u64, b: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&a.to_le_bytes());
    r[8..].copy_from_slice(&b.to_le_bytes());
    r
}

fn from_u64s(r: &[u8; 16]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&r[..8]);
    b.copy_from_slice(&r[8..]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

/// Runs `f` with the calling thread under SCHED_FIFO (priority 10), then back to SCHED_OTHER:
/// the fairness flow's two ends, so that what delays a round trip under load is the stack
/// (its queues and workers, which keep their normal priority), not the CPU scheduler's tick
/// on two vCPUs busy with 16 bulk threads. Runs `f` as is where the policy is refused.
fn fifo<T>(f: impl FnOnce() -> T) -> T {
    let rt = sys::set_fifo(Some(10)).is_ok();
    let r = f();
    if rt {
        let _ = sys::set_fifo(None);
    }
    r
}

/// `--pin` (loopback): the single-flow metrics' client runs on CPU 0 and their sinks on CPU 1,
/// so that writer and reader never share a vCPU in one round and not in the next.
static PIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Binds the calling thread to `cpu` when `--pin` is on; returns its previous CPU set.
fn pin_to(cpu: usize) -> Option<libc::cpu_set_t> {
    if !PIN.get().copied().unwrap_or(false) {
        return None;
    }
    sys::pin_to_cpu(cpu).ok()
}

/// Undoes [`pin_to`].
fn unpin(old: Option<libc::cpu_set_t>) {
    if let Some(old) = old {
        let _ = sys::restore_affinity(&old);
    }
}

// ---------------------------------------------------------------------------------------
// Client halves.

/// Which machine's CPU time counts for ticks/GiB: the sink's or ours.
#[derive(Clone, Copy, PartialEq)]
enum CpuFrom {
    Sink,
    Sender,
}

/// How a throughput client sends: write(2)s of a buffer, or sendfile(2) of a file.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Write(usize),
    Sendfile,
}

/// A 16 MiB file in memory (memfd) for sendfile(2).
fn sendfile_source() -> io::Result<std::fs::File> {
    // SAFETY: a NUL-terminated name; memfd_create returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"rvsock-bench".as_ptr(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned from here on.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..16 {
        std::io::Write::write_all(&mut f, &chunk)?;
    }
    Ok(f)
}

/// Sends for `dur` (write(2)s of `wsize` bytes, or sendfile(2) of a 16 MiB file). Returns
/// (bytes/s, ticks/GiB).
/// Also prints where this machine's CPU time went (`report_cpu_split`, as `metric`).
fn stream_tput(cid: u32, port: u32, metric: &str, src: Source, dur: Duration, cpu: CpuFrom) -> Result<(f64, f64), String> {
    let s = connect(libc::SOCK_STREAM, cid, port).map_err(|e| io_err("connect", e))?;
    let wsize = match src {
        Source::Write(w) => w,
        Source::Sendfile => 0,
    };
    let buf = vec![0x5au8; wsize];
    let file = if src == Source::Sendfile { Some(sendfile_source().map_err(|e| io_err("memfd", e))?) } else { None };
    let split0 = cpu_split();
    let t0 = Instant::now();
    let c0 = busy_ticks();
    while t0.elapsed() < dur {
        match &file {
            None => send_all(&s, &buf).map_err(|e| io_err("send", e))?,
            Some(f) => {
                let mut off: libc::off_t = 0;
                while off < 16 << 20 {
                    // SAFETY: live descriptors; `off` is ours.
                    let n = unsafe { libc::sendfile(s.as_raw_fd(), f.as_raw_fd(), &mut off, (16 << 20) - off as usize) };
                    if n <= 0 {
                        return Err(io_err("sendfile", io::Error::last_os_error()));
                    }
                }
            }
        }
    }
    sys::shutdown(&s, libc::SHUT_WR).map_err(|e| io_err("shutdown", e))?;
    let mut r = [0u8; 16];
    // The sink answers when it has read everything: wait as long as the data needs.
    sys::set_io_timeout(&s, Duration::from_secs(120)).map_err(|e| io_err("timeout", e))?;
    if !recv_exact(&s, &mut r).map_err(|e| io_err("recv count", e))? {
        return Err("sink closed without a count".into());
    }
    let (total, sink_ticks) = from_u64s(&r);
    let secs = t0.elapsed().as_secs_f64();
    report_cpu_split(metric, "client", &split0, &cpu_split(), mib(total));
    let ticks = match cpu {
        CpuFrom::Sink => sink_ticks,
        CpuFrom::Sender => busy_ticks().saturating_sub(c0),
    } as f64;
    let gib = total as f64 / (1u64 << 30) as f64;
    Ok((total as f64 / secs, if gib > 0.0 { ticks / gib } else { 0.0 }))
}

/// SEQPACKET messages of `size` bytes per second (as received).
fn seq_rate(cid: u32, port: u32, size: usize, metric: &str, dur: Duration) -> Result<f64, String> {
    let s = connect(libc::SOCK_SEQPACKET, cid, port).map_err(|e| io_err("connect", e))?;
    let buf = vec![0x33u8; size];
    let split0 = cpu_split();
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        for _ in 0..64 {
            sys::send(&s, &buf, libc::MSG_NOSIGNAL).map_err(|e| io_err("send", e))?;
        }
    }
    sys::shutdown(&s, libc::SHUT_WR).map_err(|e| io_err("shutdown", e))?;
    sys::set_io_timeout(&s, Duration::from_secs(120)).map_err(|e| io_err("timeout", e))?;
    let mut r = [0u8; 16];
    let n = sys::recv(&s, &mut r, 0).map_err(|e| io_err("recv count", e))?;
    if n != 16 {
        return Err(format!("sink answered {n} bytes, not a count"));
    }
    let msgs = from_u64s(&r).0;
    let secs = t0.elapsed().as_secs_f64();
    report_cpu_split(metric, "client", &split0, &cpu_split(), msgs as f64 / 1e3);
    Ok(msgs as f64 / secs)
}

/// The metric name of SEQPACKET messages of `size` bytes.
fn seq_name(size: usize) -> String {
    if size < 1024 { format!("seqpacket_rate_{size}B") } else { format!("seqpacket_rate_{}KiB", size / 1024) }
}

/// Round trips of one 64-byte request/response flow: the rate and every round trip's time.
struct Rr {
    rate: f64,
    lat: Vec<Duration>,
}

impl Rr {
    /// The `q`-th percentile in microseconds (`lat` sorted).
    fn pct_us(&self, q: usize) -> f64 {
        self.lat.get((self.lat.len() * q / 100).min(self.lat.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    }
}

/// 64-byte request/response round trips for `dur`, back to back or `gap` apart.
fn rr_run(cid: u32, port: u32, dur: Duration, gap: Option<Duration>) -> Result<Rr, String> {
    let s = connect(libc::SOCK_STREAM, cid, port).map_err(|e| io_err("connect", e))?;
    let mut buf = [7u8; 64];
    let mut lat = Vec::with_capacity(1 << 16);
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        let t1 = Instant::now();
        sys::send(&s, &buf, libc::MSG_NOSIGNAL).map_err(|e| io_err("send", e))?;
        if !recv_exact(&s, &mut buf).map_err(|e| io_err("recv", e))? {
            return Err("echo closed".into());
        }
        lat.push(t1.elapsed());
        if let Some(g) = gap {
            thread::sleep(g);
        }
    }
    if lat.is_empty() {
        return Err("no round trip".into());
    }
    let rate = lat.len() as f64 / t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    Ok(Rr { rate, lat })
}

/// Fairness: `FAIR_STREAMS` bulk streams (64 KiB writes, one thread each) and one 64-byte
/// request/response flow at once on one transport, after the same flow alone; the flow's two
/// ends run SCHED_FIFO (`fifo`), a round trip every `FAIR_GAP`. Returns (Jain's
/// index of the streams' received bytes, the flow's p99 under load in microseconds, that p99
/// over the idle one, the streams' aggregate MiB/s).
fn fairness(cid: u32, port: u32, dur: Duration) -> Result<(f64, f64, f64, f64), String> {
    let idle = fifo(|| rr_run(cid, port + OFF_FAIR + 1, dur / 2, Some(FAIR_GAP)))?;
    let go = Arc::new(std::sync::Barrier::new(FAIR_STREAMS + 1));
    let bulk: Vec<_> = (0..FAIR_STREAMS)
        .map(|_| {
            let go = go.clone();
            thread::spawn(move || -> Result<u64, String> {
                let s = connect(libc::SOCK_STREAM, cid, port + OFF_FAIR);
                go.wait();
                let s = s.map_err(|e| io_err("connect", e))?;
                let buf = vec![0x5au8; 65536];
                let t0 = Instant::now();
                while t0.elapsed() < dur {
                    send_all(&s, &buf).map_err(|e| io_err("send", e))?;
                }
                sys::shutdown(&s, libc::SHUT_WR).map_err(|e| io_err("shutdown", e))?;
                let mut r = [0u8; 16];
                sys::set_io_timeout(&s, Duration::from_secs(120)).map_err(|e| io_err("timeout", e))?;
                if !recv_exact(&s, &mut r).map_err(|e| io_err("recv count", e))? {
                    return Err("sink closed without a count".into());
                }
                Ok(from_u64s(&r).0)
            })
        })
        .collect();
    go.wait();
    let t0 = Instant::now();
    // The flow starts once the streams run, and ends with them.
    thread::sleep(Duration::from_millis(100));
    let loaded = fifo(|| rr_run(cid, port + OFF_FAIR + 1, dur.saturating_sub(Duration::from_millis(200)), Some(FAIR_GAP)));
    let mut bytes = Vec::with_capacity(FAIR_STREAMS);
    for t in bulk {
        bytes.push(t.join().map_err(|_| "bulk stream thread panicked".to_string())?? as f64);
    }
    let secs = t0.elapsed().as_secs_f64();
    let loaded = loaded?;
    let (sum, sq): (f64, f64) = bytes.iter().fold((0.0, 0.0), |(a, b), x| (a + x, b + x * x));
    let jain = if sq > 0.0 { sum * sum / (bytes.len() as f64 * sq) } else { 0.0 };
    let p99 = loaded.pct_us(99);
    let idle99 = idle.pct_us(99);
    Ok((jain, p99, if idle99 > 0.0 { p99 / idle99 } else { 0.0 }, sum / secs / (1u64 << 20) as f64))
}

/// Memory under a 1-byte flood: one connection to a peer that never reads, written a byte at
/// a time (non-blocking) until the peer's buffer is full or ten times `dur` has passed (a send
/// per byte is slow under TCG: nested, the 256 KiB of a default buffer take 3-12 s). Filling
/// the buffer measures both stacks over the same bytes, so that what a stack keeps whatever
/// the count (merge buffers, cached slab pages) is divided by the same bytes, not by what a
/// faster or slower flood got through in a fixed time (the first half of a 256 KiB flood
/// varied by 100-200 KB of Slab between rounds of one stack). Returns the growth of the
/// slab objects in use and the large kmallocs (`SlabSnap::live`) of both machines (one over
/// loopback) per byte queued after a warm-up of `FLOOD_WARMUP` bytes: the steady state, not
/// the switch a stack makes when small packets start (an rvsock guest trades its 64 KiB rx
/// buffers for 4 KiB ones, freeing MBs).
fn flood_mem(cid: u32, port: u32, dur: Duration, remote: bool) -> Result<f64, String> {
    let q = connect(libc::SOCK_STREAM, cid, port + OFF_FLOOD + 1).map_err(|e| io_err("connect", e))?;
    let mut here: Option<SlabSnap> = None;
    let mut n = 0;
    // Both machines' slab in use; `report`: also the `# flood slab` lines of this snapshot.
    let mut slab = |report: bool| -> Result<u64, String> {
        let mut r = [0u8; 16];
        sys::send(&q, &[report as u8], libc::MSG_NOSIGNAL).map_err(|e| io_err("send", e))?;
        if !recv_exact(&q, &mut r).map_err(|e| io_err("recv", e))? {
            return Err("slab query closed".into());
        }
        let mut total = from_u64s(&r).0;
        if remote {
            let now = slab_snap();
            total += now.live();
            if report {
                report_flood_slab("here", n, here.as_ref(), &now);
                here = Some(now);
            }
        }
        if report {
            n += 1;
        }
        Ok(total)
    };
    thread::sleep(Duration::from_millis(200));
    slab(true)?;
    let mut before = None;
    let s = connect(libc::SOCK_STREAM, cid, port + OFF_FLOOD).map_err(|e| io_err("connect", e))?;
    let mut queued = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < 10 * dur {
        if before.is_none() && queued >= FLOOD_WARMUP {
            thread::sleep(Duration::from_millis(300));
            before = Some((slab(true)?, queued));
        }
        match sys::send(&s, &[0x46], libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) {
            Ok(n) => queued += n as u64,
            // Full for now: the peer's buffer (then nothing frees up: done), or the packets
            // still in the transport (a stack that bounds them, as rvsock does, frees room as
            // the peer takes them).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let r = sys::poll_one(&s, libc::POLLOUT, Duration::from_millis(500)).map_err(|e| io_err("poll", e))?;
                if r & libc::POLLOUT == 0 {
                    break;
                }
            }
            Err(e) => return Err(io_err("send", e)),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // Let the transport deliver what it has in flight.
    thread::sleep(Duration::from_millis(300));
    let after = slab(true)?;
    drop(s);
    // Wait (at most FLOOD_FREE_WAIT) until the peer has freed what the flood queued, so that
    // the next flood does not count it going: a receiver closing with unread data frees it
    // only once its close completes, which took seconds nested (the h2g flood's 70-odd
    // receive buffers came off the g2h flood's figure of the same run, both stacks).
    let t1 = Instant::now();
    let mut freed = false;
    while !freed && t1.elapsed() < FLOOD_FREE_WAIT {
        thread::sleep(Duration::from_millis(250));
        freed = after.saturating_sub(slab(false)?) >= queued / 2;
    }
    let Some((before, warm)) = before else { return Err(format!("only {queued} bytes queued")) };
    println!(
        "# flood: {queued} bytes queued in {secs:.1} s, slab in use {before} -> {after} after the first {warm}; {} in {:.1} s",
        if freed { "freed" } else { "not freed" },
        t1.elapsed().as_secs_f64()
    );
    Ok(after.saturating_sub(before) as f64 / (queued - warm).max(1) as f64)
}

/// MSG_ZEROCOPY completion latency: 64 KiB sends, each followed by a wait for its completion
/// (POLLERR, then the error-queue read). Microseconds from sendmsg's return: (p50, p99).
fn zc_latency(cid: u32, port: u32, dur: Duration) -> Result<(f64, f64), String> {
    const SO_ZEROCOPY: i32 = 60;
    const MSG_ZEROCOPY: i32 = 0x400_0000;
    let s = connect(libc::SOCK_STREAM, cid, port).map_err(|e| io_err("connect", e))?;
    sys::setsockopt(&s, libc::SOL_SOCKET, SO_ZEROCOPY, &1i32.to_ne_bytes()).map_err(|e| io_err("SO_ZEROCOPY", e))?;
    let buf = vec![0x5au8; 65536];
    let mut lat: Vec<Duration> = Vec::new();
    let mut copied = 0usize;
    let t0 = Instant::now();
    while t0.elapsed() < dur && lat.len() < 100_000 {
        let n = sys::send(&s, &buf, MSG_ZEROCOPY | libc::MSG_NOSIGNAL).map_err(|e| io_err("send", e))?;
        let ts = Instant::now();
        if n == 0 {
            return Err("send returned 0".into());
        }
        let ev = sys::poll_one(&s, 0, Duration::from_secs(5)).map_err(|e| io_err("poll", e))?;
        if ev & libc::POLLERR == 0 {
            return Err(format!("no completion (POLLERR) within 5 s of send #{}", lat.len()));
        }
        lat.push(ts.elapsed());
        let mut ctl = [0u64; 32];
        // SAFETY: all-zero is a valid msghdr; it points at `ctl` only, live for the call.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_control = ctl.as_mut_ptr().cast();
        m.msg_controllen = std::mem::size_of_val(&ctl);
        // SAFETY: live descriptor and msghdr.
        if unsafe { libc::recvmsg(s.as_raw_fd(), &mut m, libc::MSG_ERRQUEUE) } < 0 {
            return Err(io_err("recvmsg(MSG_ERRQUEUE)", io::Error::last_os_error()));
        }
        copied += zc_copied(&m);
    }
    // A completion the stack "copied" (no credit for the whole send, or no zerocopy at all)
    // can come before sendmsg returns; the latency then reads as poll(2) alone.
    println!("# zc_completion: {copied} of {} completions copied (SO_EE_CODE_ZEROCOPY_COPIED)", lat.len());
    sys::shutdown(&s, libc::SHUT_WR).map_err(|e| io_err("shutdown", e))?;
    let mut r = [0u8; 16];
    sys::set_io_timeout(&s, Duration::from_secs(120)).map_err(|e| io_err("timeout", e))?;
    let _ = recv_exact(&s, &mut r);
    if lat.is_empty() {
        return Err("no send completed".into());
    }
    lat.sort_unstable();
    let us = |i: usize| lat[i.min(lat.len() - 1)].as_secs_f64() * 1e6;
    Ok((us(lat.len() / 2), us(lat.len() * 99 / 100)))
}

/// Whether the MSG_ERRQUEUE message `m` (as recvmsg left it) is a zerocopy completion whose
/// data the stack copied after all (`ee_code` has SO_EE_CODE_ZEROCOPY_COPIED).
fn zc_copied(m: &libc::msghdr) -> usize {
    const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
    const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;
    let mut n = 0;
    // SAFETY: `m` was filled by recvmsg: its control buffer (live, owned by the caller) holds
    // `msg_controllen` bytes of well-formed cmsgs, which the CMSG_* walk stays within.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            let len = (*c).cmsg_len as usize;
            if len >= libc::CMSG_LEN(std::mem::size_of::<libc::sock_extended_err>() as u32) as usize {
                let e = libc::CMSG_DATA(c).cast::<libc::sock_extended_err>().read_unaligned();
                if e.ee_origin == SO_EE_ORIGIN_ZEROCOPY && e.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                    n += 1;
                }
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    n
}

/// connect + accept + close per second, and the mean time spent in connect(2) and in
/// close(2) (microseconds). Also prints the scheduler's view per connection (`report_sched`).
fn connect_rate(cid: u32, port: u32, dur: Duration) -> Result<(f64, f64, f64), String> {
    let (mut n, mut resets) = (0u64, 0u64);
    let (mut in_connect, mut in_close) = (Duration::ZERO, Duration::ZERO);
    let sched0 = sched_snap();
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        let t1 = Instant::now();
        match connect(libc::SOCK_STREAM, cid, port) {
            Ok(s) => {
                let t2 = Instant::now();
                drop(s);
                in_connect += t2 - t1;
                in_close += t2.elapsed();
                n += 1;
            }
            // Backlog full: in-tree vsock answers with a reset (no SYN retry as in TCP);
            // let the acceptor catch up and only count completed connections. Sleep rather
            // than yield: under `ICOUNT` (scripts/bench.sh) the vCPUs take turns, and one
            // that never idles keeps the acceptor's vCPU from running for a whole turn
            // (the rate fell to 64 connections per second).
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                resets += 1;
                thread::sleep(Duration::from_micros(50));
            }
            Err(e) => return Err(io_err(&format!("connect {} (after {:?})", n + 1, t0.elapsed()), e)),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if wanted("connect_rate") {
        report_sched("connect_rate", sched0, sched_snap(), n);
        println!("# connect_rate: {resets} resets (backlog full) for {n} connections");
    }
    let per = |d: Duration| if n == 0 { 0.0 } else { d.as_secs_f64() * 1e6 / n as f64 };
    Ok((n as f64 / secs, per(in_connect), per(in_close)))
}

/// Kernel slab memory of this machine per idle connection with `conns` connections open (both
/// ends over loopback; this end and the transport's share of it otherwise).
fn idle_mem(cid: u32, port: u32, conns: usize) -> Result<f64, String> {
    sys::raise_nofile(2 * conns as u64 + 64).map_err(|e| io_err("rlimit", e))?;
    let caches = slab_caches();
    let before = slab_bytes();
    let mut keep = Vec::with_capacity(conns);
    for _ in 0..conns {
        match connect(libc::SOCK_STREAM, cid, port) {
            Ok(s) => keep.push(s),
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(io_err("connect", e)),
        }
    }
    // Let the peer accept everything (the holder drains its queue continuously).
    thread::sleep(Duration::from_millis(500));
    let after = slab_bytes();
    let n = keep.len().max(1);
    report_slab_growth(&caches, &slab_caches(), n);
    drop(keep);
    thread::sleep(Duration::from_millis(200));
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// Reports a metric, or a `failed` line (the run goes on with the next metric).
fn emit(metric: &str, r: Result<f64, String>, unit: &str, better: &str) {
    if !wanted(metric) {
        return;
    }
    match r {
        Ok(v) => report(metric, v, unit, better),
        Err(e) => println!("# bench {metric} failed: {e}"),
    }
}

/// `--only` filter (comma-separated substrings of metric names; empty: all).
static ONLY: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn wanted(metric: &str) -> bool {
    ONLY.get().map_or(true, |o| o.is_empty() || o.iter().any(|w| metric.contains(w.as_str())))
}

/// A metric that runs only when `--only` names it (the two-guests phase of the nested bench).
fn wanted_explicit(metric: &str) -> bool {
    ONLY.get().is_some_and(|o| o.iter().any(|w| metric.contains(w.as_str())))
}

fn wanted_any(metrics: &[&str]) -> bool {
    metrics.iter().any(|m| wanted(m))
}

/// The `bench` subcommand.
pub fn run(a: &Args) -> Result<(), String> {
    let cid = a.u32_or("peer-cid", 1)?;
    let port = a.u32_or("port", 7000)?;
    let dur = Duration::from_millis(a.u64_or("ms", 2000)?);
    let conns = a.usize_or("idle-conns", 10000)?;
    let remote = a.flag("remote");
    // Over loopback the sender's machine is the sink's; against a peer VM the host side
    // (this end when `--cpu-here`, else the sink) sees the CPU time of both ends.
    let cpu = if !remote || a.flag("cpu-here") { CpuFrom::Sender } else { CpuFrom::Sink };
    let only = a.str_or("only", "").split(',').filter(|w| !w.is_empty()).map(str::to_string).collect();
    let _ = PIN.set(a.flag("pin") && !remote);
    a.check_unused()?;
    let _ = ONLY.set(only);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = if remote { Vec::new() } else { start_servers(port, &stop)? };
    let pinned = pin_to(0);
    for (i, w) in STREAM_SIZES.into_iter().enumerate() {
        if !wanted(&format!("stream_tput_{}k", w / 1024)) && !(w == 65536 && wanted("cpu_ticks_per_GiB")) {
            continue;
        }
        let name = format!("stream_tput_{}k", w / 1024);
        let r = stream_tput(cid, port + OFF_STREAM + i as u32, &name, Source::Write(w), dur, cpu);
        if w == 65536 {
            emit("cpu_ticks_per_GiB", r.clone().map(|x| x.1), "ticks/GiB", "lower");
        }
        emit(&name, r.map(|x| x.0 / (1u64 << 20) as f64), "MiB/s", "higher");
    }
    if wanted(STREAM_POLL) {
        let r = stream_tput(cid, port + OFF_STREAM + 5, STREAM_POLL, Source::Write(65536), dur, cpu);
        emit(STREAM_POLL, r.map(|x| x.0 / (1u64 << 20) as f64), "MiB/s", "higher");
    }
    // Zero-copy paths against stream_tput_64k (write(2), read(2)): sendfile(2) into the socket
    // (plain reads at the sink), and 64 KiB writes into a sink that splice(2)s to /dev/null.
    if wanted("sendfile_tput") {
        let r = stream_tput(cid, port + OFF_STREAM + 3, "sendfile_tput", Source::Sendfile, dur, cpu);
        emit("sendfile_tput", r.map(|x| x.0 / (1u64 << 20) as f64), "MiB/s", "higher");
    }
    if wanted("splice_recv_tput") {
        let r = stream_tput(cid, port + OFF_SPLICE, "splice_recv_tput", Source::Write(65536), dur, cpu);
        emit("splice_recv_tput", r.map(|x| x.0 / (1u64 << 20) as f64), "MiB/s", "higher");
    }
    // One of several guests streaming to the host at once (scenarios/bench-nested.sh sums
    // them): 64 KiB writes into a sink that serves each connection in a thread of its own.
    if wanted_explicit("guests_tput_64k") {
        let r = stream_tput(cid, port + OFF_FAIR, "guests_tput_64k", Source::Write(65536), dur, cpu);
        emit("guests_tput_64k", r.map(|x| x.0 / (1u64 << 20) as f64), "MiB/s", "higher");
    }
    if wanted("zc_completion_us") {
        let r = zc_latency(cid, port + OFF_STREAM + 4, dur);
        emit("zc_completion_us_p50", r.clone().map(|x| x.0), "us", "lower");
        emit("zc_completion_us_p99", r.map(|x| x.1), "us", "lower");
    }
    for (i, size) in SEQ_SIZES.into_iter().enumerate() {
        let name = seq_name(size);
        if wanted(&name) {
            emit(&name, seq_rate(cid, port + OFF_SEQ + i as u32, size, &name, dur), "msg/s", "higher");
        }
    }
    if wanted_any(&["rr_64B", "rr_64B_p50_us", "rr_64B_p99_us"]) {
        let r = rr_run(cid, port + OFF_RR, dur, None);
        emit("rr_64B_p50_us", r.as_ref().map(|r| r.pct_us(50)).map_err(String::clone), "us", "lower");
        emit("rr_64B_p99_us", r.as_ref().map(|r| r.pct_us(99)).map_err(String::clone), "us", "lower");
        emit("rr_64B", r.map(|r| r.rate), "rt/s", "higher");
    }
    // The rest has many threads of its own (fairness) or is not about one flow.
    unpin(pinned);
    if wanted_any(&["fair_jain_8x64k", "fair_rr_p99_us", "fair_rr_p99_vs_idle", "fair_bulk_tput"]) {
        let r = fairness(cid, port, dur);
        emit("fair_jain_8x64k", r.clone().map(|x| x.0), "index", "higher");
        emit("fair_rr_p99_us", r.clone().map(|x| x.1), "us", "lower");
        emit("fair_rr_p99_vs_idle", r.clone().map(|x| x.2), "x", "lower");
        emit("fair_bulk_tput", r.map(|x| x.3), "MiB/s", "higher");
    }
    if wanted("flood_mem_per_byte") {
        emit("flood_mem_per_byte", flood_mem(cid, port, dur, remote), "bytes", "lower");
    }
    if wanted("connect_rate") || wanted("connect_time_us") || wanted("close_time_us") {
        let r = connect_rate(cid, port + OFF_CONNECT, dur);
        emit("connect_time_us", r.clone().map(|x| x.1), "us", "lower");
        emit("close_time_us", r.clone().map(|x| x.2), "us", "lower");
        emit("connect_rate", r.map(|x| x.0), "conn/s", "higher");
    }
    if wanted("idle_mem_per_conn") {
        emit("idle_mem_per_conn", idle_mem(cid, port + OFF_IDLE, conns), "bytes", "lower");
    }
    stop.store(true, Relaxed);
    for t in servers {
        let _ = t.join();
    }
    Ok(())
}
