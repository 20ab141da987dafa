//! Plain blocking sends of 32 KiB or more over loopback (rvsock: `zerocopy::SyncPin`, every
//! other chunk of a send as the sender's pinned pages, which the reader copies out itself).
//! What any stack must do, and rvsock's counters where it pins:
//! - the reader gets what was in the buffer when send(2) was called, never what the sender
//!   writes there after send(2) returned;
//! - a reader blocked in recv(2) takes most pinned chunks itself; one whose buffer faults (fresh
//!   pages) swaps them for copies first instead of faulting while the sender waits;
//! - writers and readers at both ends of one connection do not hold each other up;
//! - a send to a reader that is not reading returns at once, as a copied one would.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::regress::{listen_on, pair, Ctx};
use crate::report::{OrFail, Outcome, TestResult};
use crate::sys;

const CHUNK: usize = 64 * 1024;

/// rvsock's loopback counter `name` (debugfs); None on the in-tree stack.
fn counter(cx: &Ctx, name: &str) -> Result<Option<u64>, String> {
    if cx.reference {
        return Ok(None);
    }
    sys::rvsock_counter("loopback", name).map(Some)
}

/// The byte at `off` of chunk `i`.
fn pat(i: usize, off: usize) -> u8 {
    (i.wrapping_mul(131) ^ off.wrapping_mul(7) ^ (off >> 12)) as u8
}

/// Sends chunk `i` (`CHUNK` bytes); once send(2) returns, overwrites the buffer (a reader that
/// saw those bytes read the buffer after send(2) returned).
fn send_chunk(c: &OwnedFd, i: usize) -> Result<(), String> {
    let mut buf: Vec<u8> = (0..CHUNK).map(|off| pat(i, off)).collect();
    let mut done = 0;
    while done < CHUNK {
        done += sys::send(c, &buf[done..], 0).map_err(|e| format!("send of chunk {i}: {}", sys::describe(&e)))?;
    }
    buf.fill(0xee);
    std::hint::black_box(&buf);
    Ok(())
}

/// Reads `chunks` chunks and checks every byte; `fresh`: each recv(2) into newly mapped,
/// never touched pages (every copy into them faults).
fn recv_chunks(s: &OwnedFd, chunks: usize, fresh: bool) -> Result<(), String> {
    let mut warm = vec![0u8; CHUNK];
    let total = chunks * CHUNK;
    let mut got = 0usize;
    while got < total {
        let want = (total - got).min(CHUNK);
        let map = if fresh { Some(Map::new(CHUNK)?) } else { None };
        let buf: &mut [u8] = match &map {
            // SAFETY: a private anonymous mapping of CHUNK bytes, ours until `Map` drops.
            Some(m) => unsafe { std::slice::from_raw_parts_mut(m.0.cast::<u8>(), CHUNK) },
            None => &mut warm,
        };
        let n = sys::recv(s, &mut buf[..want], 0).map_err(|e| format!("recv at byte {got}: {}", sys::describe(&e)))?;
        if n == 0 {
            return Err(format!("end of stream at byte {got} of {total}"));
        }
        for (k, b) in buf[..n].iter().enumerate() {
            let at = got + k;
            let want = pat(at / CHUNK, at % CHUNK);
            if *b != want {
                return Err(format!("byte {at}: {b:#x}, sent {want:#x} (0xee: the sender's write after send(2) returned)"));
            }
        }
        got += n;
    }
    Ok(())
}

/// A private anonymous mapping, unmapped on drop.
struct Map(*mut libc::c_void, usize);

impl Map {
    fn new(len: usize) -> Result<Map, String> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let m = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if m == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Map(m, len))
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no slice of it outlives this.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

/// Sends `chunks` chunks, each once the reader has had `gap` to block in recv(2) again.
fn send_paced(c: &OwnedFd, chunks: usize, gap: Duration) -> Result<(), String> {
    (0..chunks).try_for_each(|i| {
        std::thread::sleep(gap);
        send_chunk(c, i)
    })
}

/// rvsock's (tx_pinned, tx_pinned_copied) growth over `f`; None on the in-tree stack.
fn pinned_over(cx: &Ctx, f: impl FnOnce() -> Result<(), String>) -> Result<Option<(u64, u64)>, String> {
    let (p0, c0) = (counter(cx, "tx_pinned")?, counter(cx, "tx_pinned_copied")?);
    f()?;
    let (p1, c1) = (counter(cx, "tx_pinned")?, counter(cx, "tx_pinned_copied")?);
    Ok(p0.zip(p1).zip(c0.zip(c1)).map(|((p0, p1), (c0, c1))| (p1 - p0, c1 - c0)))
}

/// One stream: a writer on `c`, a reader on `s` (fresh pages per recv(2) when `fresh`).
fn one_way(c: OwnedFd, s: OwnedFd, chunks: usize, gap: Duration, fresh: bool) -> Result<(), String> {
    sys::set_io_timeout(&s, Duration::from_secs(30)).or_fail("timeout")?;
    sys::set_io_timeout(&c, Duration::from_secs(30)).or_fail("timeout")?;
    let rx = std::thread::spawn(move || recv_chunks(&s, chunks, fresh));
    let tx = send_paced(&c, chunks, gap);
    let rx = rx.join().map_err(|_| "reader panicked".to_string())?;
    tx.and(rx)
}

/// A reader blocked in recv(2) when each send comes: every byte as sent; rvsock pins and the
/// reader copies most pinned chunks itself (fewer `tx_pinned_copied` than `tx_pinned`).
pub(crate) fn t_sync_prompt(cx: &Ctx, port: u32) -> TestResult {
    let chunks = cx.n(32);
    let l = listen_on(libc::SOCK_STREAM, port, 4)?;
    let (c, s) = pair(&l, libc::SOCK_STREAM, port)?;
    match pinned_over(cx, || one_way(c, s, chunks, Duration::from_millis(10), false))? {
        Some((p, k)) if p == 0 || k * 2 > p => Err(format!("{p} chunks pinned, {k} of them copied by the sender")),
        Some((p, k)) => {
            cx.out.info(format!("sync-send-prompt: {p} chunks pinned, {k} copied by the sender"));
            Ok(Outcome::Pass)
        }
        None => Ok(Outcome::Pass),
    }
}

/// A reader blocked in recv(2) into fresh pages (its copy faults): every byte as sent; rvsock's
/// reader swaps the pinned pages for copies instead of faulting on them while the sender
/// waits (most pinned chunks copied).
pub(crate) fn t_sync_faulting_reader(cx: &Ctx, port: u32) -> TestResult {
    let chunks = cx.n(32);
    let l = listen_on(libc::SOCK_STREAM, port, 4)?;
    let (c, s) = pair(&l, libc::SOCK_STREAM, port)?;
    match pinned_over(cx, || one_way(c, s, chunks, Duration::from_millis(10), true))? {
        Some((p, k)) if p == 0 || k * 2 < p => Err(format!("{p} chunks pinned, only {k} copied for the faulting reader")),
        _ => Ok(Outcome::Pass),
    }
}

/// Both directions of one connection at once, a writer and a reader at each end: every byte
/// as sent, and rvsock's senders do not wait for each other's readers until the 20 ms bound
/// (a sender waiting with its socket lock held kept the other side's reader out: then every
/// pinned chunk was copied after the wait).
pub(crate) fn t_sync_both_ways(cx: &Ctx, port: u32) -> TestResult {
    let chunks = cx.n(64);
    let l = listen_on(libc::SOCK_STREAM, port, 4)?;
    let (c, s) = pair(&l, libc::SOCK_STREAM, port)?;
    let dup = |fd: &OwnedFd| fd.try_clone().or_fail("dup");
    let (c2, s2) = (dup(&c)?, dup(&s)?);
    let r = pinned_over(cx, || {
        let back = std::thread::spawn(move || one_way(s2, c2, chunks, Duration::ZERO, false));
        let there = one_way(c, s, chunks, Duration::ZERO, false);
        let back = back.join().map_err(|_| "writer panicked".to_string())?;
        there.and(back)
    })?;
    match r {
        Some((p, k)) if p > 0 && k == p => Err(format!("all {p} pinned chunks copied by their senders")),
        Some((p, k)) => {
            cx.out.info(format!("sync-send-both-ways: {p} chunks pinned, {k} copied by the sender"));
            Ok(Outcome::Pass)
        }
        None => Ok(Outcome::Pass),
    }
}

/// A reader blocked in recv(2) for 64 KiB while a 192 KiB send arrives, which then stops
/// reading for a while: the send takes no longer than one to a reader not in recv(2) at all
/// (rvsock: the send's chunks are pinned, copied, pinned, copied; the reader takes the first
/// and leaves a pinned one between two copied ones, which recvmsg's exit must hurry, not leave
/// its sender waiting up to 20 ms). The sender runs SCHED_FIFO on the reader's CPU, so the
/// whole send is queued before the reader runs. Then the reader gets every byte. The fastest
/// of three tries each way counts.
pub(crate) fn t_sync_partial_reader(cx: &Ctx, port: u32) -> TestResult {
    const LEN: usize = 3 * CHUNK;
    let l = listen_on(libc::SOCK_STREAM, port, 4)?;
    let (c, s) = pair(&l, libc::SOCK_STREAM, port)?;
    sys::set_io_timeout(&c, Duration::from_secs(10)).or_fail("timeout")?;
    sys::set_io_timeout(&s, Duration::from_secs(10)).or_fail("timeout")?;
    let s = std::sync::Arc::new(s);
    let c = std::sync::Arc::new(c);
    // One send of `LEN` bytes from a thread on CPU 0, under SCHED_FIFO when `fifo`.
    let send = |fifo: bool| -> Result<Duration, String> {
        let c = c.clone();
        std::thread::spawn(move || -> Result<Duration, String> {
            let buf: Vec<u8> = (0..LEN).map(|at| pat(at / CHUNK, at % CHUNK)).collect();
            on_cpu0()?;
            if fifo {
                sys::set_fifo(Some(10)).map_err(|e| format!("SCHED_FIFO: {e}"))?;
            }
            let t0 = Instant::now();
            let mut done = 0;
            while done < LEN {
                done += sys::send(&*c, &buf[done..], 0).map_err(|e| format!("send: {}", sys::describe(&e)))?;
            }
            Ok(t0.elapsed())
        })
        .join()
        .map_err(|_| "sender panicked".to_string())?
    };
    // A reader on CPU 0: `first` bytes in one recv(2), then a pause, then the rest.
    let reader = |first: usize| {
        let s = s.clone();
        std::thread::spawn(move || -> Result<(), String> {
            on_cpu0()?;
            let mut got_all = vec![0u8; LEN];
            let mut got = 0;
            if first > 0 {
                got = sys::recv(&*s, &mut got_all[..first], 0).map_err(|e| format!("first recv: {}", sys::describe(&e)))?;
            }
            std::thread::sleep(Duration::from_millis(200));
            while got < LEN {
                let k = sys::recv(&*s, &mut got_all[got..], 0).map_err(|e| format!("recv at {got}: {}", sys::describe(&e)))?;
                if k == 0 {
                    return Err(format!("end of stream at byte {got}"));
                }
                got += k;
            }
            match got_all.iter().enumerate().find(|(at, b)| **b != pat(at / CHUNK, at % CHUNK)) {
                Some((at, b)) => Err(format!("byte {at}: {b:#x}")),
                None => Ok(()),
            }
        })
    };
    // Without SCHED_FIFO (no CAP_SYS_NICE, no real-time budget) the reader would run first.
    let fifo_ok = std::thread::spawn(|| sys::set_fifo(Some(10)).is_ok())
    .join()
    .map_err(|_| "probe panicked".to_string())?;
    if !fifo_ok {
        return Ok(Outcome::Skip("SCHED_FIFO refused (needs CAP_SYS_NICE and a real-time budget)".into()));
    }
    // The fastest of three tries each way (a vCPU preempted by the host in one is not the
    // stack; one left waiting waits in every try).
    let (mut idle, mut partial) = (Duration::MAX, Duration::MAX);
    let mut all = Vec::new();
    for _ in 0..3 {
        // To a reader that is not in recv(2): the baseline.
        let rx = reader(0);
        let i = send(false)?;
        rx.join().map_err(|_| "reader panicked".to_string())??;
        let rx = reader(CHUNK);
        // The reader blocks in recv(2) well before the send starts.
        std::thread::sleep(Duration::from_millis(50));
        let mut p = Duration::ZERO;
        let pinned = pinned_over(cx, || {
            p = send(true)?;
            rx.join().map_err(|_| "reader panicked".to_string())?
        })?;
        // rvsock pins the first and third chunk: else this tests nothing.
        if let Some((pinned, _)) = pinned.filter(|(n, _)| *n < 2) {
            return Err(format!("a 192 KiB send pinned {pinned} chunks, not 2"));
        }
        all.push((p, i));
        idle = idle.min(i);
        partial = partial.min(p);
    }
    // The 20 ms wait is counted in ticks (250 per second here): 16 ms at least.
    if partial > idle + Duration::from_millis(12) {
        return Err(format!(
            "192 KiB sends to a reader that took 64 KiB and stopped took at least {partial:?}, to one not reading {idle:?} (each try: {all:?})"
        ));
    }
    cx.out.info(format!("sync-send-partial-reader: (to a partial reader, to one not reading) {all:?}"));
    Ok(Outcome::Pass)
}

/// Binds the calling thread to CPU 0.
fn on_cpu0() -> Result<(), String> {
    sys::pin_to_cpu(0).map(drop).map_err(|e| format!("sched_setaffinity: {e}"))
}

/// A reader that does not read: four 64 KiB sends (the default 256 KiB buffer) return at once
/// (rvsock waits up to 20 ms per send for a reader that takes the pages, not for one that is
/// not reading), then the reader gets every byte. A copied send of 64 KiB takes well under a
/// millisecond here: a send that took 15 ms or more waited; one may have been preempted.
pub(crate) fn t_sync_idle_reader(cx: &Ctx, port: u32) -> TestResult {
    const CHUNKS: usize = 4;
    let l = listen_on(libc::SOCK_STREAM, port, 4)?;
    let (c, s) = pair(&l, libc::SOCK_STREAM, port)?;
    sys::set_io_timeout(&c, Duration::from_secs(10)).or_fail("timeout")?;
    let mut took = Vec::new();
    for i in 0..CHUNKS {
        let t0 = Instant::now();
        send_chunk(&c, i)?;
        took.push(t0.elapsed());
    }
    sys::set_io_timeout(&s, Duration::from_secs(10)).or_fail("timeout")?;
    recv_chunks(&s, CHUNKS, false)?;
    let slow = took.iter().filter(|t| **t >= Duration::from_millis(15)).count();
    if slow >= 3 {
        return Err(format!("sends of 64 KiB to a reader that does not read waited: {took:?}"));
    }
    cx.out.info(format!("sync-send-idle-reader: {CHUNKS} sends, {took:?}"));
    Ok(Outcome::Pass)
}
