//! `bench`: the metrics of the rvsock-vs-C benchmark, measured on whatever vsock stack is
//! loaded. Both ends run in this process (over loopback, peer CID 1) so one run needs no
//! coordination. Prints `RVSOCK-BENCH <metric> <value> <unit> <better>` lines; the harness
//! (scripts/bench.sh) runs this on each stack in turn and computes the ratios.

use crate::args::Args;
use crate::sys;
use std::io;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

const AF_VSOCK: i32 = 40;
const CID_ANY: u32 = u32::MAX;

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

/// Busy CPU time of the whole machine (all CPUs), from /proc/stat, in clock ticks.
fn busy_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// Kernel slab memory in bytes (/proc/meminfo `Slab:`).
fn slab_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Slab:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn report(metric: &str, value: f64, unit: &str, better: &str) {
    println!("RVSOCK-BENCH {metric} {value:.3} {unit} {better}");
}

fn io_err(what: &str, e: io::Error) -> String {
    format!("{what}: {}", sys::describe(&e))
}

/// Sends with `wsize`-byte writes for `dur`; the reader counts. Returns (bytes/s, ticks/GiB).
fn stream_tput(cid: u32, port: u32, wsize: usize, dur: Duration) -> Result<(f64, f64), String> {
    let l = listener(libc::SOCK_STREAM, port, 1).map_err(|e| io_err("listen", e))?;
    let reader = thread::spawn(move || -> io::Result<u64> {
        let c = {
            let c = sys::accept(&l, false)?;
            sys::set_io_timeout(&c, IO_TIMEOUT)?;
            c
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = sys::recv(&c, &mut buf, 0)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let s = connect(libc::SOCK_STREAM, cid, port).map_err(|e| io_err("connect", e))?;
    let buf = vec![0x5au8; wsize];
    let t0 = Instant::now();
    let c0 = busy_ticks();
    while t0.elapsed() < dur {
        let mut off = 0;
        while off < wsize {
            off += sys::send(&s, &buf[off..], libc::MSG_NOSIGNAL).map_err(|e| io_err("send", e))?;
        }
    }
    sys::shutdown(&s, libc::SHUT_WR).map_err(|e| io_err("shutdown", e))?;
    let total = reader.join().map_err(|_| "reader panicked".to_string())?.map_err(|e| io_err("recv", e))?;
    let secs = t0.elapsed().as_secs_f64();
    let ticks = busy_ticks().saturating_sub(c0) as f64;
    let gib = total as f64 / (1u64 << 30) as f64;
    Ok((total as f64 / secs, if gib > 0.0 { ticks / gib } else { 0.0 }))
}

/// SEQPACKET messages of `size` bytes per second.
fn seq_rate(cid: u32, port: u32, size: usize, dur: Duration) -> Result<f64, String> {
    let l = listener(libc::SOCK_SEQPACKET, port, 1).map_err(|e| io_err("listen", e))?;
    let reader = thread::spawn(move || -> io::Result<u64> {
        let c = {
            let c = sys::accept(&l, false)?;
            sys::set_io_timeout(&c, IO_TIMEOUT)?;
            c
        };
        let mut buf = vec![0u8; size.max(1)];
        let mut msgs = 0u64;
        loop {
            let n = sys::recv(&c, &mut buf, 0)?;
            if n == 0 {
                return Ok(msgs);
            }
            msgs += 1;
        }
    });
    let s = connect(libc::SOCK_SEQPACKET, cid, port).map_err(|e| io_err("connect", e))?;
    let buf = vec![0x33u8; size];
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        for _ in 0..64 {
            sys::send(&s, &buf, libc::MSG_NOSIGNAL).map_err(|e| io_err("send", e))?;
        }
    }
    drop(s);
    let msgs = reader.join().map_err(|_| "reader panicked".to_string())?.map_err(|e| io_err("recv", e))?;
    Ok(msgs as f64 / t0.elapsed().as_secs_f64())
}

/// 64-byte request/response round trips per second.
fn rr_rate(cid: u32, port: u32, dur: Duration) -> Result<f64, String> {
    let l = listener(libc::SOCK_STREAM, port, 1).map_err(|e| io_err("listen", e))?;
    let echo = thread::spawn(move || -> io::Result<()> {
        let c = {
            let c = sys::accept(&l, false)?;
            sys::set_io_timeout(&c, IO_TIMEOUT)?;
            c
        };
        let mut buf = [0u8; 64];
        loop {
            let mut got = 0;
            while got < 64 {
                let n = sys::recv(&c, &mut buf[got..], 0)?;
                if n == 0 {
                    return Ok(());
                }
                got += n;
            }
            sys::send(&c, &buf, libc::MSG_NOSIGNAL)?;
        }
    });
    let s = connect(libc::SOCK_STREAM, cid, port).map_err(|e| io_err("connect", e))?;
    let mut buf = [7u8; 64];
    let mut n = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        sys::send(&s, &buf, libc::MSG_NOSIGNAL).map_err(|e| io_err("send", e))?;
        let mut got = 0;
        while got < 64 {
            let r = sys::recv(&s, &mut buf[got..], 0).map_err(|e| io_err("recv", e))?;
            if r == 0 {
                return Err("echo closed".into());
            }
            got += r;
        }
        n += 1;
    }
    drop(s);
    let _ = echo.join();
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// connect + accept + close per second.
fn connect_rate(cid: u32, port: u32, dur: Duration) -> Result<f64, String> {
    let l = listener(libc::SOCK_STREAM, port, 128).map_err(|e| io_err("listen", e))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let acc = thread::spawn(move || {
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            match sys::poll_one(&l, libc::POLLIN, Duration::from_millis(100)) {
                Ok(r) if r & libc::POLLIN != 0 => {
                    // Drain the whole accept queue: a full backlog resets new connects.
                    while let Ok(c) = sys::accept(&l, true) {
                        drop(c);
                    }
                }
                _ => {}
            }
        }
    });
    let mut n = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        match connect(libc::SOCK_STREAM, cid, port) {
            Ok(s) => {
                drop(s);
                n += 1;
            }
            // Backlog full: in-tree vsock answers with a reset (no SYN retry as in TCP);
            // let the acceptor catch up and only count completed connections.
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => thread::yield_now(),
            Err(e) => return Err(io_err("connect", e)),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = acc.join();
    Ok(n as f64 / secs)
}

/// Kernel memory per idle connection (both ends) with `conns` connections open.
fn idle_mem(cid: u32, port: u32, conns: usize) -> Result<f64, String> {
    sys::raise_nofile(2 * conns as u64 + 64).map_err(|e| io_err("rlimit", e))?;
    let l = listener(libc::SOCK_STREAM, port, 4096).map_err(|e| io_err("listen", e))?;
    let before = slab_bytes();
    let mut keep = Vec::with_capacity(2 * conns);
    for _ in 0..conns {
        let s = connect(libc::SOCK_STREAM, cid, port).map_err(|e| io_err("connect", e))?;
        let c = sys::accept(&l, false).map_err(|e| io_err("accept", e))?;
        keep.push(s);
        keep.push(c);
    }
    thread::sleep(Duration::from_millis(200));
    let after = slab_bytes();
    drop(keep);
    Ok(after.saturating_sub(before) as f64 / conns as f64)
}

/// Reports a metric, or a `failed` line (the run goes on with the next metric).
fn emit(metric: &str, r: Result<f64, String>, unit: &str, better: &str) {
    match r {
        Ok(v) => report(metric, v, unit, better),
        Err(e) => println!("# bench {metric} failed: {e}"),
    }
}

/// The `bench` subcommand.
pub fn run(a: &Args) -> Result<(), String> {
    let cid = a.u64_or("peer-cid", 1)? as u32;
    let port = a.u64_or("port", 7000)? as u32;
    let dur = Duration::from_millis(a.u64_or("ms", 2000)?);
    let conns = a.u64_or("idle-conns", 10000)? as usize;
    for (i, w) in [4096usize, 65536, 262144].into_iter().enumerate() {
        let r = stream_tput(cid, port + i as u32, w, dur);
        let name = format!("stream_tput_{}k", w / 1024);
        if w == 65536 {
            emit("cpu_ticks_per_GiB", r.clone().map(|x| x.1), "ticks/GiB", "lower");
        }
        emit(&name, r.map(|x| x.0 / (1u64 << 20) as f64), "MiB/s", "higher");
    }
    emit("seqpacket_rate_64B", seq_rate(cid, port + 10, 64, dur), "msg/s", "higher");
    emit("seqpacket_rate_64KiB", seq_rate(cid, port + 11, 65536, dur), "msg/s", "higher");
    emit("rr_64B", rr_rate(cid, port + 20, dur), "rt/s", "higher");
    emit("connect_rate", connect_rate(cid, port + 30, dur), "conn/s", "higher");
    emit("idle_mem_per_conn", idle_mem(cid, port + 40, conns), "bytes", "lower");
    Ok(())
}
