//! The transfer subcommands (vsock and Unix-socket ends) and rmmod-while-open.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::proto::{self, Client};
use crate::report::{OrFail, Out, Outcome, TestResult};
use crate::sys::{self, AF_VSOCK, VMADDR_CID_ANY, VMADDR_PORT_ANY};

/// Options shared by the sending subcommands.
struct SendOpts {
    bytes: u64,
    seed: u64,
    chunk: usize,
    eof: bool,
    timeout: Duration,
    name: String,
    /// `--reset-ok`: a connection reset (ECONNRESET, EPIPE) counts as a pass; wrong bytes,
    /// a short stream without a reset or a timeout still fail (migration: in-flight
    /// connections are reset with the transport).
    reset_ok: Resets,
}

/// What a connection reset counts as.
#[derive(Clone)]
enum Resets {
    /// A failure (the default).
    Fail,
    /// A pass, whatever the reset looked like (`--reset-ok`).
    Any,
    /// A pass only if the error names this errno (`--reset-as ERRNO`: no end of file, no
    /// other errno).
    Only(String),
}

impl Resets {
    fn parse(a: &Args) -> Resets {
        match a.str_opt("reset-as") {
            Some(e) => Resets::Only(e.to_string()),
            None if a.flag("reset-ok") => Resets::Any,
            None => Resets::Fail,
        }
    }
}

impl SendOpts {
    fn parse(a: &Args, default_name: &str) -> Result<SendOpts, String> {
        Ok(SendOpts {
            bytes: a.u64_req("bytes")?,
            seed: a.u64_or("seed", 1)?,
            chunk: a.usize_or("chunk", 64 * 1024)?.max(1),
            eof: a.flag("eof"),
            timeout: a.secs_or("timeout", 60)?,
            name: a.str_or("name", default_name).to_string(),
            reset_ok: Resets::parse(a),
        })
    }
}

fn rate(bytes: u64, t: Duration) -> String {
    format!("{bytes} bytes in {:.2?} ({:.1} MiB/s)", t, bytes as f64 / (1 << 20) as f64 / t.as_secs_f64().max(1e-9))
}

/// Whether an error is a connection reset (what `--reset-ok` allows): ECONNRESET or EPIPE,
/// or, for a reader, the stream ending early (a reset connection reads as EOF on rvsock and
/// as ENOTCONN in-tree). In-tree 7.x vhost also fails a send with EHOSTUNREACH while the
/// guest's device is open with the CID but its rx queue has no backend yet (c-migrate: a
/// snapshot's restoring QEMU before it runs the device).
fn is_reset(e: &str) -> bool {
    e.contains("ECONNRESET")
        || e.contains("EPIPE")
        || e.contains("ENOTCONN")
        || e.contains("EHOSTUNREACH")
        || e.starts_with("unexpected EOF")
}

/// With `reset_ok`, the connections that ended in a reset are taken out of `results` (said
/// as a `#` line), the others stay.
fn drop_resets<T>(out: &Out, name: &str, reset_ok: &Resets, results: Vec<Result<T, String>>) -> Vec<Result<T, String>> {
    let allowed = |e: &str| match reset_ok {
        Resets::Fail => false,
        Resets::Any => is_reset(e),
        Resets::Only(errno) => e.contains(errno.as_str()),
    };
    let (resets, rest): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.as_ref().err().is_some_and(|e| allowed(e)));
    if let Some(Err(e)) = resets.first() {
        out.info(format!("{name}: {} connection(s) reset (allowed): {e}", resets.len()));
    }
    rest
}

/// Run the clients and print one test line for all of them.
fn finish_clients(o: &SendOpts, clients: Vec<Result<Client, String>>, t0: Instant) {
    let out = Out::default();
    let n = clients.len() as u64;
    let results = drop_resets(&out, &o.name, &o.reset_ok, proto::run_clients(clients, o.chunk, o.timeout));
    let r = proto::summarize(&results).map(|()| {
        out.info(format!("{}: {} connection(s), {}", o.name, n, rate(n * o.bytes, t0.elapsed())));
        Outcome::Pass
    });
    out.result(&o.name, &r);
}

/// Serve `count` connections on a non-blocking listener; one test line.
fn finish_server(name: &str, listener: &impl std::os::fd::AsFd, count: usize, timeout: Duration, reset_ok: &Resets) {
    let out = Out::default();
    let t0 = Instant::now();
    let results = drop_resets(&out, name, reset_ok, proto::run_server(listener, count, 64 * 1024, timeout));
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for e in failed.iter().take(10) {
        out.info(format!("{name}: {e}"));
    }
    let r = if failed.is_empty() {
        let total: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
        out.info(format!("{name}: {count} connection(s), {}", rate(total, t0.elapsed())));
        Ok(Outcome::Pass)
    } else {
        Err(format!("{} of {count} connections failed; first: {}", failed.len(), failed[0]))
    };
    out.result(name, &r);
}

pub fn stream_send(a: &Args) -> Result<(), String> {
    let cid = a.u32_req("cid")?;
    let port = a.u32_req("port")?;
    let o = SendOpts::parse(a, "stream-send")?;
    a.check_unused()?;
    let t0 = Instant::now();
    let c = proto::start_vsock_client(cid, port, o.seed, o.bytes, o.eof, o.timeout);
    finish_clients(&o, vec![c], t0);
    Ok(())
}

pub fn concurrent(a: &Args) -> Result<(), String> {
    let cid = a.u32_req("cid")?;
    let port = a.u32_req("port")?;
    let conns = a.usize_or("conns", 100)?;
    let mut o = SendOpts::parse(a, "concurrent")?;
    o.chunk = o.chunk.min(16 * 1024);
    a.check_unused()?;
    if let Err(e) = sys::raise_nofile(conns as u64 + 64) {
        Out::default().info(format!("setrlimit(RLIMIT_NOFILE): {}", sys::describe(&e)));
    }
    let t0 = Instant::now();
    let clients = (0..conns)
        .map(|i| proto::start_vsock_client(cid, port, o.seed.wrapping_add(i as u64), o.bytes, o.eof, o.timeout))
        .collect();
    finish_clients(&o, clients, t0);
    Ok(())
}

pub fn stream_recv(a: &Args) -> Result<(), String> {
    let port = a.u32_req("port")?;
    let cid = a.u32_or("cid", VMADDR_CID_ANY)?;
    let count = a.usize_or("count", 1)?;
    let timeout = a.secs_or("timeout", 60)?;
    let name = a.str_or("name", "stream-recv").to_string();
    let reset_ok = Resets::parse(a);
    a.check_unused()?;
    let _ = sys::raise_nofile(count as u64 + 64);
    let setup = || -> Result<OwnedFd, String> {
        let l = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
        sys::bind_vm(&l, cid, port).or_fail(&format!("bind {cid}:{port}"))?;
        sys::listen(&l, count.clamp(128, 65535) as i32).or_fail("listen")?;
        Ok(l)
    };
    match setup() {
        Ok(l) => finish_server(&name, &l, count, timeout, &reset_ok),
        Err(e) => {
            Out::default().result(&name, &Err(e));
        }
    }
    Ok(())
}

pub fn uds_recv(a: &Args) -> Result<(), String> {
    let path = a.str_req("listen")?.to_string();
    let count = a.usize_or("count", 1)?;
    let timeout = a.secs_or("timeout", 60)?;
    let name = a.str_or("name", "uds-recv").to_string();
    a.check_unused()?;
    let _ = sys::raise_nofile(count as u64 + 64);
    let setup = || -> Result<UnixListener, String> {
        // Replace a stale socket left by an earlier run, but nothing else.
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if m.file_type().is_socket() {
                std::fs::remove_file(&path).or_fail(&format!("remove stale {path}"))?;
            }
        }
        let l = UnixListener::bind(&path).or_fail(&format!("bind {path}"))?;
        // Re-listen to raise std's default backlog for many concurrent connections.
        sys::listen(&l, count.clamp(128, 65535) as i32).or_fail("listen")?;
        l.set_nonblocking(true).or_fail("set_nonblocking")?;
        Ok(l)
    };
    match setup() {
        Ok(l) => {
            finish_server(&name, &l, count, timeout, &Resets::Fail);
            let _ = std::fs::remove_file(&path);
        }
        Err(e) => {
            Out::default().result(&name, &Err(e));
        }
    }
    Ok(())
}

/// Host side of vhost-device-vsock: connect to the Unix socket and ask it to
/// connect us to guest port `port` ("CONNECT <port>\n" -> "OK <hostport>\n").
fn uds_handshake(path: &str, port: u32, timeout: Duration, out: &Out) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(path).or_fail(&format!("connect {path}"))?;
    s.set_read_timeout(Some(timeout)).or_fail("set_read_timeout")?;
    s.set_write_timeout(Some(timeout)).or_fail("set_write_timeout")?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).or_fail("write CONNECT")?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    // Byte by byte so that nothing after the newline is consumed.
    while line.len() < 64 {
        match s.read(&mut b).or_fail("read handshake reply")? {
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    if !line.starts_with("OK ") {
        return Err(format!("handshake: expected \"OK <port>\", got {line:?}"));
    }
    out.info(format!("CONNECT {port}: {line}"));
    s.set_nonblocking(true).or_fail("set_nonblocking")?;
    Ok(s)
}

pub fn uds_send(a: &Args) -> Result<(), String> {
    let path = a.str_req("uds")?.to_string();
    let port = a.u32_req("port")?;
    let o = SendOpts::parse(a, "uds-send")?;
    a.check_unused()?;
    let t0 = Instant::now();
    let c = uds_handshake(&path, port, o.timeout, &Out::default())
        .map(|s| Client::new(s.into(), false, o.seed, o.bytes, o.eof));
    finish_clients(&o, vec![c], t0);
    Ok(())
}

// ---------------------------------------------------------------- rmmod-while-open

const IO_TIMEOUT: Duration = Duration::from_secs(5);
const RMMOD_LIMIT: Duration = Duration::from_secs(30);

/// Run `rmmod MODULE`; `Ok((succeeded, message))`, or `Err` if it could not
/// run or hung for more than `RMMOD_LIMIT`.
fn rmmod(module: &str) -> Result<(bool, String), String> {
    let mut child = Command::new("rmmod")
        .arg(module)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .or_fail("running rmmod")?;
    let t0 = Instant::now();
    while child.try_wait().or_fail("waiting for rmmod")?.is_none() {
        if t0.elapsed() > RMMOD_LIMIT {
            // No wait(): a child stuck in the kernel would block us too.
            let _ = child.kill();
            return Err(format!("rmmod {module} did not return within {}s", RMMOD_LIMIT.as_secs()));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().or_fail("collecting rmmod output")?;
    let msg = format!("{} {}", String::from_utf8_lossy(&o.stdout).trim(), String::from_utf8_lossy(&o.stderr).trim());
    Ok((o.status.success(), format!("exit {:?}: {}", o.status.code(), msg.trim())))
}

/// Sockets kept open while trying to unload the modules.
struct Held {
    listener: OwnedFd,
    port: u32,
    client: OwnedFd,
    server: OwnedFd,
    /// Data sent by `client` that `server` has not read yet.
    unread: Vec<u8>,
}

fn open_held(cid: u32) -> Result<Held, String> {
    let sock = || -> Result<OwnedFd, String> {
        let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
        sys::set_io_timeout(&s, IO_TIMEOUT).or_fail("set timeouts")?;
        Ok(s)
    };
    let listener = sock()?;
    sys::bind_vm(&listener, VMADDR_CID_ANY, VMADDR_PORT_ANY).or_fail("bind")?;
    sys::listen(&listener, 16).or_fail("listen")?;
    let port = sys::local_addr(&listener).or_fail("getsockname")?.svm_port;
    let client = sock()?;
    sys::connect_vm(&client, cid, port).or_fail(&format!("connect {cid}:{port}"))?;
    let server = sys::accept(&listener, false).or_fail("accept")?;
    sys::set_io_timeout(&server, IO_TIMEOUT).or_fail("set timeouts")?;
    let mut unread = vec![0u8; 4096];
    proto::fill(42, 0, &mut unread);
    exchange(&client, None, &unread)?;
    Ok(Held { listener, port, client, server, unread })
}

/// Send `data` on `from`; if `to` is given, read it back there and compare.
fn exchange(from: &OwnedFd, to: Option<&OwnedFd>, data: &[u8]) -> Result<(), String> {
    let mut sent = 0;
    while sent < data.len() {
        sent += sys::send(from, &data[sent..], 0).or_fail("send")?;
    }
    let Some(to) = to else { return Ok(()) };
    let mut got = vec![0u8; data.len()];
    let mut n = 0;
    while n < got.len() {
        match sys::recv(to, &mut got[n..], 0).or_fail("recv")? {
            0 => return Err(format!("EOF after {n} of {} bytes", data.len())),
            k => n += k,
        }
    }
    if got == data {
        Ok(())
    } else {
        Err("received data differs from what was sent".into())
    }
}

fn sockets_still_work(h: &Held, cid: u32) -> TestResult {
    // The data queued before the rmmod attempts is intact...
    let mut got = vec![0u8; h.unread.len()];
    let mut n = 0;
    while n < got.len() {
        match sys::recv(&h.server, &mut got[n..], 0).or_fail("recv queued data")? {
            0 => return Err(format!("EOF after {n} bytes of queued data")),
            k => n += k,
        }
    }
    if got != h.unread {
        return Err("queued data was corrupted".into());
    }
    // ...the connection works both ways...
    exchange(&h.server, Some(&h.client), b"pong")?;
    exchange(&h.client, Some(&h.server), b"ping")?;
    // ...and the listener still accepts.
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    sys::set_io_timeout(&c, IO_TIMEOUT).or_fail("set timeouts")?;
    sys::connect_vm(&c, cid, h.port).or_fail("new connect to the listener")?;
    let s = sys::accept(&h.listener, false).or_fail("accept")?;
    sys::set_io_timeout(&s, IO_TIMEOUT).or_fail("set timeouts")?;
    exchange(&c, Some(&s), b"new")?;
    Ok(Outcome::Pass)
}

pub fn rmmod_while_open(a: &Args) -> Result<(), String> {
    let modules: Vec<String> = a.str_req("modules")?.split(',').filter(|m| !m.is_empty()).map(str::to_string).collect();
    let cid = a.u32_or("cid", 1)?;
    let unload_wait = a.secs_or("timeout", 20)?;
    a.check_unused()?;
    let out = Out::default();
    let name = |what: &str, m: &str| format!("rmmod-while-open.{what}.{m}");
    let held = match open_held(cid) {
        Ok(h) => h,
        Err(e) => {
            out.result("rmmod-while-open.setup", &Err(e));
            return Ok(());
        }
    };
    for m in &modules {
        let r = rmmod(m).and_then(|(ok, msg)| {
            out.info(format!("rmmod {m} with sockets open: {msg}"));
            if ok {
                Err("rmmod succeeded although sockets are open".into())
            } else {
                Ok(Outcome::Pass)
            }
        });
        out.result(&name("busy", m), &r);
    }
    out.result("rmmod-while-open.sockets_work", &sockets_still_work(&held, cid));
    drop(held);
    // Closing sockets may finish asynchronously (virtio close timeout), so retry.
    for m in &modules {
        let t0 = Instant::now();
        let r = loop {
            match rmmod(m) {
                Ok((true, _)) => break Ok(Outcome::Pass),
                Ok((false, msg)) if t0.elapsed() > unload_wait => {
                    break Err(format!("rmmod still fails {}s after closing all sockets: {msg}", unload_wait.as_secs()))
                }
                Ok(_) => thread::sleep(Duration::from_millis(250)),
                Err(e) => break Err(e),
            }
        };
        out.result(&name("unload", m), &r);
    }
    Ok(())
}

/// `local-cid [--expect C] [--name NAME]`: this machine's CID as /dev/vsock reports it
/// (IOCTL_VM_SOCKETS_GET_LOCAL_CID), printed as `# local cid N`; with `--expect`, a test line.
pub fn local_cid(a: &Args) -> Result<(), String> {
    let expect = a.str_opt("expect").map(|s| s.parse::<u32>().map_err(|e| format!("--expect: {e}"))).transpose()?;
    let name = a.str_or("name", "local-cid").to_string();
    a.check_unused()?;
    let out = Out::default();
    let r = std::fs::File::open("/dev/vsock")
        .or_fail("open /dev/vsock")
        .and_then(|f| sys::ioctl_int(&f, sys::IOCTL_VM_SOCKETS_GET_LOCAL_CID).or_fail("IOCTL_VM_SOCKETS_GET_LOCAL_CID"));
    match (r, expect) {
        (Ok(cid), None) => out.info(format!("local cid {cid}")),
        (Ok(cid), Some(want)) if cid as u32 == want => {
            out.info(format!("local cid {cid}"));
            out.result(&name, &Ok(Outcome::Pass));
        }
        (Ok(cid), Some(want)) => {
            out.result(&name, &Err(format!("local cid {cid}, expected {want}")));
        }
        (Err(e), _) => {
            out.result(&name, &Err(e));
        }
    }
    Ok(())
}

/// `bind-any [--count N]`: binds N fresh stream sockets to <VMADDR_CID_ANY, VMADDR_PORT_ANY>
/// one after another (each closed before the next) and prints the last port as `# port P`:
/// the ephemeral-port cursor of the caller's namespace, for the netns scenario.
pub fn bind_any(a: &Args) -> Result<(), String> {
    let count = a.u64_or("count", 1)?.max(1);
    a.check_unused()?;
    let mut port = 0;
    for _ in 0..count {
        let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
        sys::bind_vm(&s, VMADDR_CID_ANY, VMADDR_PORT_ANY).or_fail("bind")?;
        port = sys::local_addr(&s).or_fail("getsockname")?.svm_port;
    }
    Out::default().info(format!("port {port}"));
    Ok(())
}
