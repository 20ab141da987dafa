//! Exercise the Unix-socket subcommands (uds-send / uds-recv) against a fake
//! vhost-device-vsock bridge. Only Unix sockets are used: no AF_VSOCK here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rvsock-tests");

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rvsock-uds-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wait_for_socket(p: &Path) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{} never appeared", p.display());
        thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn lines(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Copy `from` to `to`; on EOF forward the half-close only if asked (the real
/// bridge drops a guest SHUT_WR).
fn pump(mut from: UnixStream, mut to: UnixStream, forward_half_close: bool) {
    let _ = std::io::copy(&mut from, &mut to);
    if forward_half_close {
        let _ = to.shutdown(Shutdown::Write);
    }
}

/// Fake host end of vhost-device-vsock: accepts on `bridge`, answers
/// "CONNECT <port>" by connecting to `<guest_prefix>_<port>` (standing in
/// for the guest's listener) and relays bytes. `reply` overrides the OK line.
fn fake_bridge(bridge: PathBuf, guest_prefix: PathBuf, conns: usize, half_close: bool, reply: Option<&'static str>) {
    let l = UnixListener::bind(&bridge).unwrap();
    thread::spawn(move || {
        let mut relays = Vec::new();
        for _ in 0..conns {
            let (host, _) = l.accept().unwrap();
            let mut rd = BufReader::new(host.try_clone().unwrap());
            let mut line = String::new();
            rd.read_line(&mut line).unwrap();
            let port: u32 = line.trim().strip_prefix("CONNECT ").unwrap().parse().unwrap();
            let mut host = host;
            if let Some(r) = reply {
                host.write_all(r.as_bytes()).unwrap();
                continue;
            }
            let guest = UnixStream::connect(format!("{}_{port}", guest_prefix.display())).unwrap();
            host.write_all(b"OK 1024\n").unwrap();
            let (h2, g2) = (host.try_clone().unwrap(), guest.try_clone().unwrap());
            relays.push(thread::spawn(move || pump(host, guest, half_close)));
            relays.push(thread::spawn(move || pump(g2, h2, half_close)));
        }
        for r in relays {
            let _ = r.join();
        }
    });
}

fn host_to_guest(tag: &str, conns: usize, half_close: bool, extra: &[&str]) {
    let d = tmpdir(tag);
    let guest_prefix = d.join("guest");
    let guest_listen = format!("{}_5000", guest_prefix.display());
    let recv = spawn(&["uds-recv", "--listen", &guest_listen, "--count", &conns.to_string(), "--timeout", "20"]);
    wait_for_socket(Path::new(&guest_listen));
    let bridge = d.join("vm.sock");
    fake_bridge(bridge.clone(), guest_prefix, conns, half_close, None);
    let senders: Vec<Child> = (0..conns)
        .map(|i| {
            let seed = (i + 7).to_string();
            let mut args =
                vec!["uds-send", "--uds", bridge.to_str().unwrap(), "--port", "5000", "--bytes", "3M", "--seed", &seed];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["--timeout", "20", "--name", "h2g"]);
            spawn(&args)
        })
        .collect();
    for s in senders {
        let o = s.wait_with_output().unwrap();
        assert!(o.status.success(), "uds-send: {}", lines(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("RVSOCK-TEST ok h2g\n"), "{}", lines(&o));
    }
    let o = recv.wait_with_output().unwrap();
    assert!(o.status.success(), "uds-recv: {}", lines(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("RVSOCK-TEST ok uds-recv\n"), "{}", lines(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn length_mode_without_half_close() {
    host_to_guest("len", 1, false, &[]);
}

#[test]
fn eof_mode_with_half_close() {
    host_to_guest("eof", 1, true, &["--eof", "--chunk", "1000"]);
}

#[test]
fn several_concurrent_senders() {
    host_to_guest("many", 8, false, &[]);
}

#[test]
fn handshake_refused_is_a_fail_line() {
    let d = tmpdir("refused");
    let bridge = d.join("vm.sock");
    fake_bridge(bridge.clone(), d.join("guest"), 1, false, Some("ERR no listener\n"));
    let o = spawn(&["uds-send", "--uds", bridge.to_str().unwrap(), "--port", "9", "--bytes", "10", "--timeout", "5"])
        .wait_with_output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", lines(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("RVSOCK-TEST fail uds-send\n"), "{}", lines(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn recv_times_out_without_peer() {
    let d = tmpdir("timeout");
    let p = d.join("l");
    let o = spawn(&["uds-recv", "--listen", p.to_str().unwrap(), "--timeout", "1", "--name", "lonely"])
        .wait_with_output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", lines(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("RVSOCK-TEST fail lonely\n"), "{}", lines(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["stream-send", "--cid", "2"][..], &["bogus"], &["uds-recv", "--listen", "x", "--typo", "1"]] {
        let o = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", lines(&o));
    }
    let mut c = Command::new(BIN).arg("help").stdout(Stdio::piped()).spawn().unwrap();
    let mut s = String::new();
    c.stdout.take().unwrap().read_to_string(&mut s).unwrap();
    assert!(c.wait().unwrap().success() && s.contains("selftest"));
}
