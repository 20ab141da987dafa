//! `observe`: what an operator debugs vsock with, over loopback (CID 1): the sock_diag dump
//! (`diag.*`, what `ss` reads), iproute2's `ss --vsock` itself (`ss.*`, run as a program),
//! rvsock's credit extension (`credit.*`) and its debugfs counters (`counters.*`). The
//! in-tree stack (`--reference`) passes the first two groups; it has neither of the others,
//! so those tests report a skip there.

use std::os::fd::OwnedFd;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::diag::{self, DiagSock, ALL_STATES, SHOW_CREDIT, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN};
use crate::report::{OrFail, Out, Outcome, TestResult};
use crate::sys::{self, AF_VSOCK, VMADDR_CID_ANY, VMADDR_PORT_ANY};

const CID_LOCAL: u32 = 1;

fn sock(ty: libc::c_int) -> Result<OwnedFd, String> {
    sys::socket(AF_VSOCK, ty, 0).or_fail("socket")
}

fn listener(ty: libc::c_int, port: u32) -> Result<OwnedFd, String> {
    let l = sock(ty)?;
    sys::bind_vm(&l, VMADDR_CID_ANY, port).or_fail("bind")?;
    sys::listen(&l, 8).or_fail("listen")?;
    Ok(l)
}

/// A connected loopback pair: (client, accepted child).
fn pair(l: &OwnedFd, ty: libc::c_int, port: u32) -> Result<(OwnedFd, OwnedFd), String> {
    let c = sock(ty)?;
    sys::connect_vm(&c, CID_LOCAL, port).or_fail("connect")?;
    let a = sys::accept(l, false).or_fail("accept")?;
    Ok((c, a))
}

fn dump(show: u32) -> Result<Vec<DiagSock>, String> {
    diag::dump(ALL_STATES, show).or_fail("sock_diag dump")
}

/// The dumped socket of `fd`, by inode (as `ss -p` and vsock_diag_test find theirs).
fn find(socks: &[DiagSock], fd: &OwnedFd, what: &str) -> Result<DiagSock, String> {
    let ino = diag::inode(fd).or_fail("fstat")?;
    socks.iter().find(|s| s.ino == ino).cloned().ok_or_else(|| format!("{what} (inode {ino}) not in the dump: {socks:?}"))
}

fn expect(s: &DiagSock, what: &str, state: u8, src: (u32, u32), dst: (u32, u32)) -> Result<(), String> {
    if s.state != state || (s.src_cid, s.src_port) != src || (s.dst_cid, s.dst_port) != dst {
        return Err(format!(
            "{what}: state {} {}:{} -> {}:{}, expected state {state} {}:{} -> {}:{}",
            s.state, s.src_cid, s.src_port, s.dst_cid, s.dst_port, src.0, src.1, dst.0, dst.1
        ));
    }
    Ok(())
}

/// A listener, a client and its accepted child: each once, with its state, addresses,
/// type and a cookie of its own.
fn t_diag_connection(port: u32) -> TestResult {
    let l = listener(libc::SOCK_STREAM, port)?;
    let (c, a) = pair(&l, libc::SOCK_STREAM, port)?;
    let cport = sys::local_addr(&c).or_fail("getsockname")?.svm_port;
    let socks = dump(0)?;
    let (ls, cs, as_) = (find(&socks, &l, "listener")?, find(&socks, &c, "client")?, find(&socks, &a, "child")?);
    expect(&ls, "listener", TCP_LISTEN, (VMADDR_CID_ANY, port), (VMADDR_CID_ANY, VMADDR_PORT_ANY))?;
    // A client keeps the address it was (auto)bound to: CID_ANY (in-tree alike; getsockname
    // says the same).
    expect(&cs, "client", TCP_ESTABLISHED, (VMADDR_CID_ANY, cport), (CID_LOCAL, port))?;
    expect(&as_, "child", TCP_ESTABLISHED, (CID_LOCAL, port), (CID_LOCAL, cport))?;
    for s in [&ls, &cs, &as_] {
        if i32::from(s.ty) != libc::SOCK_STREAM {
            return Err(format!("type {} for a STREAM socket", s.ty));
        }
        if socks.iter().filter(|o| o.ino == s.ino).count() != 1 {
            return Err(format!("inode {} listed more than once: {socks:?}", s.ino));
        }
    }
    if ls.cookie == cs.cookie || cs.cookie == as_.cookie || ls.cookie == as_.cookie {
        return Err(format!("cookies not distinct: {} {} {}", ls.cookie, cs.cookie, as_.cookie));
    }
    // shutdown(SHUT_WR) shows as SEND_SHUTDOWN (2) in vdiag_shutdown.
    sys::shutdown(&c, libc::SHUT_WR).or_fail("shutdown")?;
    let cs = find(&dump(0)?, &c, "client")?;
    if cs.shutdown != 2 {
        return Err(format!("client after shutdown(SHUT_WR): vdiag_shutdown {}, expected 2", cs.shutdown));
    }
    drop((c, a, l));
    Ok(Outcome::Pass)
}

/// A SEQPACKET listener and a fresh, never bound socket (in-tree lists it as CLOSE *:*).
fn t_diag_seqpacket_unbound(port: u32) -> TestResult {
    let l = listener(libc::SOCK_SEQPACKET, port)?;
    let u = sock(libc::SOCK_STREAM)?;
    let socks = dump(0)?;
    let ls = find(&socks, &l, "SEQPACKET listener")?;
    if i32::from(ls.ty) != libc::SOCK_SEQPACKET || ls.state != TCP_LISTEN {
        return Err(format!("SEQPACKET listener: type {} state {}", ls.ty, ls.state));
    }
    let us = find(&socks, &u, "unbound socket")?;
    expect(&us, "unbound socket", TCP_CLOSE, (VMADDR_CID_ANY, VMADDR_PORT_ANY), (VMADDR_CID_ANY, VMADDR_PORT_ANY))?;
    // Bound now: listed once, with its port.
    sys::bind_vm(&u, VMADDR_CID_ANY, port + 1).or_fail("bind")?;
    let socks = dump(0)?;
    let us = find(&socks, &u, "bound socket")?;
    if us.src_port != port + 1 || socks.iter().filter(|o| o.ino == us.ino).count() != 1 {
        return Err(format!("after bind: {us:?} (listed {} times)", socks.iter().filter(|o| o.ino == us.ino).count()));
    }
    Ok(Outcome::Pass)
}

/// `vdiag_states` filters: a LISTEN-only dump has the listener and not its connections.
fn t_diag_states_filter(port: u32) -> TestResult {
    let l = listener(libc::SOCK_STREAM, port)?;
    let (c, _a) = pair(&l, libc::SOCK_STREAM, port)?;
    let socks = diag::dump(1 << TCP_LISTEN, 0).or_fail("sock_diag dump")?;
    find(&socks, &l, "listener")?;
    if let Some(s) = socks.iter().find(|s| s.state != TCP_LISTEN) {
        return Err(format!("a LISTEN-only dump returned {s:?}"));
    }
    let ino = diag::inode(&c).or_fail("fstat")?;
    if socks.iter().any(|s| s.ino == ino) {
        return Err("the client is in a LISTEN-only dump".into());
    }
    Ok(Outcome::Pass)
}

/// Many sockets: the dump spans several netlink messages (the kernel resumes where the
/// reply buffer filled) and lists each socket exactly once.
fn t_diag_many(port: u32) -> TestResult {
    let l = listener(libc::SOCK_STREAM, port)?;
    let mut fds = Vec::new();
    for _ in 0..200 {
        let (c, a) = pair(&l, libc::SOCK_STREAM, port)?;
        fds.push(c);
        fds.push(a);
    }
    for _ in 0..200 {
        fds.push(sock(libc::SOCK_STREAM)?);
    }
    let socks = dump(SHOW_CREDIT)?;
    for fd in &fds {
        let ino = diag::inode(fd).or_fail("fstat")?;
        let n = socks.iter().filter(|s| s.ino == ino).count();
        if n != 1 {
            return Err(format!("inode {ino} listed {n} times in a dump of {} sockets", socks.len()));
        }
    }
    Ok(Outcome::Pass)
}

/// Runs iproute2's `ss` with `args`; its standard output.
fn ss(args: &[&str]) -> Result<String, String> {
    let o = Command::new("ss").args(args).output().map_err(|e| format!("ss: {e}"))?;
    if !o.status.success() {
        return Err(format!("ss {}: {} {}", args.join(" "), o.status, String::from_utf8_lossy(&o.stderr)));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `ss --vsock -l -n -p` shows our listener with its port and this process; `ss --vsock
/// -n` shows the connection both ways and no listener.
fn t_ss(out: &Out, port: u32) -> TestResult {
    let l = listener(libc::SOCK_STREAM, port)?;
    let (c, _a) = pair(&l, libc::SOCK_STREAM, port)?;
    let cport = sys::local_addr(&c).or_fail("getsockname")?.svm_port;
    let pid = format!("pid={}", std::process::id());
    let listening = ss(&["--vsock", "-l", "-n", "-p"])?;
    out.info(format!("ss --vsock -l -n -p:\n{}", listening.trim_end()));
    let me = format!("*:{port}");
    if !listening.lines().any(|x| x.contains("LISTEN") && x.contains(&me) && x.contains(&pid)) {
        return Err(format!("ss -l does not show a LISTEN {me} of {pid}"));
    }
    let conns = ss(&["--vsock", "-n"])?;
    out.info(format!("ss --vsock -n:\n{}", conns.trim_end()));
    let (cl, srv) = (format!("*:{cport}"), format!("1:{port}"));
    let ends = |a: &str, b: &str| {
        conns.lines().any(|x| {
            let f: Vec<&str> = x.split_whitespace().collect();
            f.contains(&"ESTAB") && f.windows(2).any(|w| w[0] == a && w[1] == b)
        })
    };
    if !ends(&cl, &srv) || !ends(&srv, &format!("1:{cport}")) {
        return Err(format!("ss does not show ESTAB {cl} -> {srv} and {srv} -> {cl}"));
    }
    if conns.lines().any(|x| x.contains("LISTEN")) {
        return Err("ss without -l/-a shows a listener".into());
    }
    Ok(Outcome::Pass)
}

/// Polls a dump until `ok` holds for the socket of `fd` (credit updates travel as packets).
fn wait_credit(fd: &OwnedFd, what: &str, ok: impl Fn(&DiagSock) -> bool) -> Result<DiagSock, String> {
    let t0 = Instant::now();
    loop {
        let s = find(&dump(SHOW_CREDIT)?, fd, what)?;
        if ok(&s) || t0.elapsed() > Duration::from_secs(5) {
            return Ok(s);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A writer fills a reader that does not read: the writer's credit shows the whole window
/// in flight, the reader's the bytes queued; once the reader drains, both show them read.
fn t_credit(reference: bool, out: &Out, port: u32) -> TestResult {
    let l = listener(libc::SOCK_STREAM, port)?;
    let (w, r) = pair(&l, libc::SOCK_STREAM, port)?;
    let probe = find(&dump(SHOW_CREDIT)?, &w, "writer")?;
    if probe.credit.is_none() {
        return if reference {
            Ok(Outcome::Skip("in-tree sock_diag has no credit attribute (rvsock's extension)".into()))
        } else {
            Err("no credit attribute in a dump that asked for it".into())
        };
    }
    sys::set_nonblocking(&w, true).or_fail("O_NONBLOCK")?;
    let chunk = vec![0x5a; 16 << 10];
    let mut sent = 0u64;
    let t0 = Instant::now();
    loop {
        match sys::send(&w, &chunk, 0) {
            Ok(n) => sent += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if t0.elapsed() > Duration::from_millis(300) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("send: {}", sys::describe(&e))),
        }
    }
    let sent = sent as u32;
    let ws = wait_credit(&w, "writer", |s| s.credit("unsent") == 0)?;
    let rs = find(&dump(SHOW_CREDIT)?, &r, "reader")?;
    out.info(format!("stalled: writer {:?}, reader {:?}", ws.credit, rs.credit));
    let check = |what: &str, got: u32, want: u32| {
        if got == want { Ok(()) } else { Err(format!("{what} = {got}, expected {want}")) }
    };
    check("writer in_flight", ws.credit("in_flight"), sent)?;
    check("writer peer_buf_alloc", ws.credit("peer_buf_alloc"), rs.credit("buf_alloc"))?;
    check("reader rx_bytes", rs.credit("rx_bytes"), sent)?;
    check("reader fwd_cnt", rs.credit("fwd_cnt"), 0)?;
    if rs.credit("rx_pkts") == 0 || rs.credit("rx_mem") < sent || rs.credit("rx_mem") > rs.credit("rx_mem_budget") {
        return Err(format!("reader queue accounting: {:?}", rs.credit));
    }
    if sent < ws.credit("peer_buf_alloc") / 2 {
        return Err(format!("only {sent} bytes went out before EAGAIN (window {})", ws.credit("peer_buf_alloc")));
    }
    // Drain: the reader's fwd_cnt moves, and the writer learns it (a credit update).
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u32;
    sys::set_io_timeout(&r, Duration::from_secs(5)).or_fail("SO_RCVTIMEO")?;
    while got < sent {
        got += sys::recv(&r, &mut buf, 0).or_fail("recv")? as u32;
    }
    let rs = find(&dump(SHOW_CREDIT)?, &r, "reader")?;
    check("reader rx_bytes after draining", rs.credit("rx_bytes"), 0)?;
    check("reader fwd_cnt after draining", rs.credit("fwd_cnt"), sent)?;
    // The writer knows what the reader last told it (rvsock updates credit when the writer
    // could run short, not after every read: the rest travels with the next packet).
    let heard = rs.credit("last_fwd_cnt");
    let ws = wait_credit(&w, "writer", |s| s.credit("peer_fwd_cnt") == heard)?;
    out.info(format!("drained: writer {:?}, reader {:?}", ws.credit, rs.credit));
    check("writer peer_fwd_cnt (the reader's last_fwd_cnt)", ws.credit("peer_fwd_cnt"), heard)?;
    check("writer in_flight", ws.credit("in_flight"), sent - heard)?;
    if heard == 0 || ws.credit("in_flight") >= ws.credit("peer_buf_alloc") {
        return Err(format!("the writer is still out of credit after the reader drained: {:?}", ws.credit));
    }
    // Closed by the peer: the writer sees the peer's SHUTDOWN bits.
    drop(r);
    let ws = wait_credit(&w, "writer", |s| s.credit("flags") & 0b11000 == 0b11000)?;
    if ws.credit("flags") & 0b11000 != 0b11000 {
        return Err(format!("writer flags {:#x} after the peer closed: no peer-shut-send/rcv", ws.credit("flags")));
    }
    Ok(Outcome::Pass)
}

/// One of the core's debugfs counters for the loopback transport.
fn counter(name: &str) -> Result<u64, String> {
    sys::rvsock_counter("loopback", name)
}

/// The core's per-transport counters in debugfs move with the traffic: packets and bytes
/// both ways, and a connect to a port nobody listens on counts as a drop for no socket.
fn t_counters(reference: bool, port: u32) -> TestResult {
    if reference {
        return Ok(Outcome::Skip("the debugfs counters are rvsock's".into()));
    }
    let names = ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drop_no_socket"];
    let before: Vec<u64> = names.iter().map(|n| counter(n)).collect::<Result<_, _>>()?;
    let l = listener(libc::SOCK_STREAM, port)?;
    let (c, a) = pair(&l, libc::SOCK_STREAM, port)?;
    let data = [7u8; 1000];
    sys::send(&c, &data, 0).or_fail("send")?;
    let mut buf = [0u8; 1000];
    let mut got = 0;
    while got < data.len() {
        got += sys::recv(&a, &mut buf[got..], 0).or_fail("recv")?;
    }
    let nobody = sock(libc::SOCK_STREAM)?;
    let r = sys::connect_vm(&nobody, CID_LOCAL, port + 1);
    if sys::errno_of(&r) != libc::ECONNRESET {
        return Err(format!("connect to a port nobody listens on: {r:?}, expected ECONNRESET"));
    }
    let after: Vec<u64> = names.iter().map(|n| counter(n)).collect::<Result<_, _>>()?;
    let d: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.wrapping_sub(*b)).collect();
    // REQUEST, RESPONSE, the payload (loopback: each packet is sent and received once), the
    // refused REQUEST and its RST.
    if d[0] < 5 || d[1] < 1000 || d[2] < 5 || d[3] < 1000 || d[4] < 1 {
        return Err(format!("counter changes {:?} for {names:?}", d));
    }
    Ok(Outcome::Pass)
}

pub fn run(a: &Args) -> Result<(), String> {
    let reference = a.flag("reference");
    a.check_unused()?;
    let out = Out::default();
    out.info(format!("observe: {} stack", if reference { "reference (in-tree)" } else { "rvsock" }));
    let tests: Vec<(&str, Box<dyn FnOnce() -> TestResult>)> = vec![
        ("diag.connection", Box::new(|| t_diag_connection(24001))),
        ("diag.seqpacket-unbound", Box::new(|| t_diag_seqpacket_unbound(24002))),
        ("diag.states-filter", Box::new(|| t_diag_states_filter(24004))),
        ("diag.many-sockets", Box::new(|| t_diag_many(24005))),
        ("ss.listen-and-connections", Box::new(|| t_ss(&out, 24006))),
        ("credit.stall-and-drain", Box::new(|| t_credit(reference, &out, 24007))),
        ("counters.debugfs", Box::new(|| t_counters(reference, 24008))),
    ];
    for (name, f) in tests {
        let r = f();
        out.result(&format!("observe.{name}"), &r);
    }
    Ok(())
}
