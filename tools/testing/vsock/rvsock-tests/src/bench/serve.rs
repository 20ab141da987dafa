//! The server halves of the benchmark's metrics (`bench`'s module documentation): a listener
//! per metric on `port + offset` and its handler, run in this process for a loopback `bench`
//! or in the peer VM by `bench-serve`.

use super::*;

/// Runs `f` on each accepted connection, one at a time, until `stop` is set; on CPU 1 under
/// `--pin` when `single` (a single-flow metric's sink).
fn serve(
    l: OwnedFd,
    stop: Arc<AtomicBool>,
    single: bool,
    f: impl Fn(OwnedFd) -> io::Result<()> + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        if single {
            let _ = pin_to(1);
        }
        while !stop.load(Relaxed) {
            match sys::poll_one(&l, libc::POLLIN, Duration::from_millis(100)) {
                Ok(r) if r & libc::POLLIN != 0 => {
                    if let Ok(c) = accept(&l) {
                        let _ = f(c);
                    }
                }
                _ => {}
            }
        }
    })
}

/// Stream sink: counts bytes until EOF, answers (bytes, busy ticks meanwhile); for a `metric`
/// (one connection at a time) prints where this machine's CPU time went meanwhile
/// (`report_cpu_split`).
fn stream_sink(c: OwnedFd, metric: Option<&str>, poll: bool) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut c0 = None;
    let mut split0 = None;
    loop {
        let n = if poll {
            // An event loop's reader: poll(2) until readable, then a read that does not block.
            sys::poll_one(&c, libc::POLLIN, Duration::from_secs(60))?;
            match sys::recv(&c, &mut buf, libc::MSG_DONTWAIT) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => r?,
            }
        } else {
            sys::recv(&c, &mut buf, 0)?
        };
        if n == 0 {
            break;
        }
        if c0.is_none() {
            split0 = metric.map(|_| cpu_split());
            c0 = Some(busy_ticks());
        }
        total += n as u64;
    }
    let ticks = c0.map_or(0, |c0| busy_ticks().saturating_sub(c0));
    let split1 = metric.map(|_| cpu_split());
    let r = send_all(&c, &u64s(total, ticks));
    if let (Some(m), Some(s0), Some(s1)) = (metric, split0, split1) {
        report_cpu_split(m, "sink", &s0, &s1, mib(total));
    }
    r
}

/// Stream sink through splice(2): socket -> pipe -> /dev/null (no user copy), counts bytes
/// until EOF, answers (bytes, busy ticks meanwhile).
fn splice_sink(c: OwnedFd) -> io::Result<()> {
    let mut p = [0 as libc::c_int; 2];
    // SAFETY: `p` receives two descriptors.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe(2), owned from here on.
    let (pr, pw) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let mut total = 0u64;
    let mut c0 = None;
    loop {
        // SAFETY: live descriptors, no offsets.
        let n = unsafe { libc::splice(c.as_raw_fd(), std::ptr::null_mut(), pw.as_raw_fd(), std::ptr::null_mut(), 1 << 16, libc::SPLICE_F_MOVE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        c0.get_or_insert_with(busy_ticks);
        total += n as u64;
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe { libc::splice(pr.as_raw_fd(), std::ptr::null_mut(), null.as_raw_fd(), std::ptr::null_mut(), left, libc::SPLICE_F_MOVE) };
            if m <= 0 {
                return Err(io::Error::last_os_error());
            }
            left -= m as usize;
        }
    }
    let ticks = c0.map_or(0, |c0| busy_ticks().saturating_sub(c0));
    send_all(&c, &u64s(total, ticks))
}

/// SEQPACKET sink: counts messages until EOF (the sender's SHUT_WR), answers the count;
/// prints where this machine's CPU time went meanwhile (`report_cpu_split`, per thousand
/// messages, as `metric`).
fn seq_sink(c: OwnedFd, size: usize, metric: &str) -> io::Result<()> {
    let mut buf = vec![0u8; size.max(16)];
    let mut msgs = 0u64;
    let mut split0 = None;
    loop {
        let n = sys::recv(&c, &mut buf, 0)?;
        if n == 0 {
            break;
        }
        split0.get_or_insert_with(cpu_split);
        msgs += 1;
    }
    let split1 = cpu_split();
    let r = sys::send(&c, &u64s(msgs, 0), libc::MSG_NOSIGNAL).map(|_| ());
    if let Some(s0) = split0 {
        report_cpu_split(metric, "sink", &s0, &split1, msgs as f64 / 1e3);
    }
    r
}

/// 64-byte echo.
fn echo(c: OwnedFd) -> io::Result<()> {
    let mut buf = [0u8; 64];
    while recv_exact(&c, &mut buf)? {
        sys::send(&c, &buf, libc::MSG_NOSIGNAL)?;
    }
    Ok(())
}

/// Runs `f` on each accepted connection in a thread of its own, until `stop` is set.
fn serve_each(
    l: OwnedFd,
    stop: Arc<AtomicBool>,
    f: impl Fn(OwnedFd) -> io::Result<()> + Send + Sync + Copy + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Relaxed) {
            if let Ok(r) = sys::poll_one(&l, libc::POLLIN, Duration::from_millis(100)) {
                if r & libc::POLLIN != 0 {
                    while let Ok(c) = sys::accept(&l, true) {
                        if sys::set_nonblocking(&c, false).is_ok() && sys::set_io_timeout(&c, IO_TIMEOUT).is_ok() {
                            thread::spawn(move || f(c));
                        }
                    }
                }
            }
        }
    })
}

/// Holds every accepted connection, never reading, until its peer closes it (the flood
/// metric: what the stack keeps for bytes a reader does not take).
fn hoarder(l: OwnedFd, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut held: Vec<OwnedFd> = Vec::new();
        while !stop.load(Relaxed) {
            // The listener wants POLLIN; a held connection only its peer's close.
            let mut fds: Vec<libc::pollfd> = std::iter::once((&l, libc::POLLIN))
                .chain(held.iter().map(|c| (c, libc::POLLRDHUP)))
                .map(|(c, events)| libc::pollfd { fd: c.as_raw_fd(), events, revents: 0 })
                .collect();
            if sys::poll(&mut fds, Duration::from_millis(100)).is_err() {
                continue;
            }
            let gone: Vec<bool> =
                fds[1..].iter().map(|p| p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0).collect();
            let mut i = 0;
            held.retain(|_| {
                i += 1;
                !gone[i - 1]
            });
            if fds[0].revents & libc::POLLIN != 0 {
                while let Ok(c) = sys::accept(&l, true) {
                    held.push(c);
                }
            }
        }
    })
}

/// Answers each byte received with (this machine's `SlabSnap::live` bytes, 0); for a 1, also
/// prints the caches that moved since the 1 before (`report_flood_slab`), a 0 only asks. The
/// client's queries are a whole flood apart: longer than `IO_TIMEOUT` on a slow stack.
fn slab_query(c: OwnedFd) -> io::Result<()> {
    sys::set_io_timeout(&c, Duration::from_secs(120))?;
    let mut b = [0u8; 1];
    let mut last: Option<SlabSnap> = None;
    let mut n = 0;
    while recv_exact(&c, &mut b)? {
        let now = slab_snap();
        send_all(&c, &u64s(now.live(), 0))?;
        if b[0] != 0 {
            report_flood_slab("peer", n, last.as_ref(), &now);
            last = Some(now);
            n += 1;
        }
    }
    Ok(())
}

/// Accepts and closes as fast as connections come (drains the whole queue each wakeup: a
/// full backlog resets new connects).
fn acceptor(l: OwnedFd, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Relaxed) {
            if let Ok(r) = sys::poll_one(&l, libc::POLLIN, Duration::from_millis(100)) {
                if r & libc::POLLIN != 0 {
                    while let Ok(c) = sys::accept(&l, true) {
                        drop(c);
                    }
                }
            }
        }
    })
}

/// Holds every accepted connection open until its peer closes it (idle-memory metric).
fn holder(l: OwnedFd, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut held: Vec<OwnedFd> = Vec::new();
        while !stop.load(Relaxed) {
            if let Ok(r) = sys::poll_one(&l, libc::POLLIN, Duration::from_millis(50)) {
                if r & libc::POLLIN != 0 {
                    while let Ok(c) = sys::accept(&l, true) {
                        held.push(c);
                    }
                    continue;
                }
            }
            // Quiet: drop the connections whose peer has gone.
            if held.is_empty() {
                continue;
            }
            let mut fds: Vec<libc::pollfd> = held
                .iter()
                .map(|c| libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(c), events: libc::POLLIN, revents: 0 })
                .collect();
            if sys::poll(&mut fds, Duration::ZERO).is_ok() {
                let gone: Vec<bool> =
                    fds.iter().map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0).collect();
                let mut i = 0;
                held.retain(|_| {
                    i += 1;
                    !gone[i - 1]
                });
            }
        }
    })
}

/// Every server half, listening on `port + offset`; they run until `stop`.
pub(super) fn start_servers(port: u32, stop: &Arc<AtomicBool>) -> Result<Vec<thread::JoinHandle<()>>, String> {
    let mut t = Vec::new();
    let names = STREAM_SIZES.map(|w| format!("stream_tput_{}k", w / 1024));
    let extra = ["sendfile_tput", "zc_completion_us", STREAM_POLL].map(String::from);
    for (i, name) in names.into_iter().chain(extra).enumerate() {
        let l = listener(libc::SOCK_STREAM, port + OFF_STREAM + i as u32, 1).map_err(|e| io_err("listen", e))?;
        let poll = name == STREAM_POLL;
        t.push(serve(l, stop.clone(), true, move |c| stream_sink(c, Some(&name), poll)));
    }
    for (i, size) in SEQ_SIZES.into_iter().enumerate() {
        let l = listener(libc::SOCK_SEQPACKET, port + OFF_SEQ + i as u32, 1).map_err(|e| io_err("listen", e))?;
        let name = seq_name(size);
        t.push(serve(l, stop.clone(), true, move |c| seq_sink(c, size, &name)));
    }
    let l = listener(libc::SOCK_STREAM, port + OFF_RR, 1).map_err(|e| io_err("listen", e))?;
    t.push(serve(l, stop.clone(), true, echo));
    let l = listener(libc::SOCK_STREAM, port + OFF_CONNECT, 128).map_err(|e| io_err("listen", e))?;
    t.push(acceptor(l, stop.clone()));
    let l = listener(libc::SOCK_STREAM, port + OFF_IDLE, 4096).map_err(|e| io_err("listen", e))?;
    t.push(holder(l, stop.clone()));
    let l = listener(libc::SOCK_STREAM, port + OFF_SPLICE, 1).map_err(|e| io_err("listen", e))?;
    t.push(serve(l, stop.clone(), true, splice_sink));
    let l = listener(libc::SOCK_STREAM, port + OFF_FAIR, 2 * FAIR_STREAMS as i32).map_err(|e| io_err("listen", e))?;
    t.push(serve_each(l, stop.clone(), |c| stream_sink(c, None, false)));
    let l = listener(libc::SOCK_STREAM, port + OFF_FAIR + 1, 1).map_err(|e| io_err("listen", e))?;
    t.push(serve(l, stop.clone(), false, |c| fifo(|| echo(c))));
    let l = listener(libc::SOCK_STREAM, port + OFF_FLOOD, 16).map_err(|e| io_err("listen", e))?;
    t.push(hoarder(l, stop.clone()));
    let l = listener(libc::SOCK_STREAM, port + OFF_FLOOD + 1, 1).map_err(|e| io_err("listen", e))?;
    t.push(serve(l, stop.clone(), false, slab_query));
    Ok(t)
}

/// The `bench-serve` subcommand: the server halves for a `bench --remote` in the peer VM,
/// for `--secs` seconds (or until killed). Prints `RVSOCK-BENCH-SERVING` once listening.
pub fn serve_cmd(a: &Args) -> Result<(), String> {
    let port = a.u32_or("port", 7000)?;
    let secs = a.u64_or("secs", 3600)?;
    a.check_unused()?;
    // The idle-memory holder keeps every connection of the peer's run open.
    let _ = sys::raise_nofile(65536);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = start_servers(port, &stop)?;
    println!("RVSOCK-BENCH-SERVING {port}");
    thread::sleep(Duration::from_secs(secs));
    stop.store(true, Relaxed);
    for t in servers {
        let _ = t.join();
    }
    Ok(())
}
