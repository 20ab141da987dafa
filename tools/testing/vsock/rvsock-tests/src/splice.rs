//! splice-send / splice-recv: a stream whose bytes never pass through a user buffer on the
//! socket side. The sender sendfile(2)s a file into a vsock socket (the socket gets the file's
//! pages with MSG_SPLICE_PAGES); the receiver splice(2)s the socket into a pipe (the socket
//! layer's splice_read). The receiver reads the pipe only to hash what arrived and compares it
//! with the seeded stream both sides know (proto::fill).

use crate::args::Args;
use crate::proto::{self, Fnv};
use crate::report::{OrFail, Out, Outcome, TestResult};
use crate::sys::{self, AF_VSOCK};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const VMADDR_CID_ANY: u32 = u32::MAX;

/// The seeded stream of `bytes` bytes in a file under /tmp (tmpfs in the test VMs).
fn make_file(seed: u64, bytes: u64) -> Result<std::fs::File, String> {
    let path = format!("/tmp/rvsock-splice-{}-{seed}", std::process::id());
    let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).or_fail("create file")?;
    let _ = std::fs::remove_file(&path);
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < bytes {
        let n = (bytes - off).min(buf.len() as u64) as usize;
        proto::fill(seed, off, &mut buf[..n]);
        f.write_all(&buf[..n]).or_fail("write file")?;
        off += n as u64;
    }
    Ok(f)
}

fn send(cid: u32, port: u32, seed: u64, bytes: u64, timeout: Duration, by_ref: Option<&str>) -> TestResult {
    let f = make_file(seed, bytes)?;
    let ref0 = by_ref.map(sys::read_counter).transpose()?;
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    sys::set_io_timeout(&s, timeout).or_fail("SO_SNDTIMEO")?;
    sys::connect_vm(&s, cid, port).or_fail(&format!("connect {cid}:{port}"))?;
    let t0 = Instant::now();
    let mut off: libc::off_t = 0;
    while (off as u64) < bytes {
        let left = (bytes - off as u64).min(1 << 30) as usize;
        // SAFETY: both descriptors are live; `off` is ours.
        let r = unsafe { libc::sendfile(s.as_raw_fd(), f.as_raw_fd(), &mut off, left) };
        if r < 0 {
            return Err(format!("sendfile at byte {off}: {}", sys::describe(&std::io::Error::last_os_error())));
        }
        if r == 0 {
            return Err(format!("sendfile returned 0 at byte {off}"));
        }
    }
    sys::shutdown(&s, libc::SHUT_WR).or_fail("shutdown")?;
    // Wait for the receiver's close, so the whole stream left before we exit.
    let mut b = [0u8; 1];
    let _ = sys::recv(&s, &mut b, 0);
    let secs = t0.elapsed().as_secs_f64();
    Out::default().info(format!("sendfile: {bytes} bytes in {secs:.2} s ({:.0} MB/s)", bytes as f64 / secs.max(1e-9) / 1e6));
    // rvsock: the file's pages went by reference (`tx_spliced`), at least half the 64 KiB
    // packets' worth.
    if let (Some(path), Some(a)) = (by_ref, ref0) {
        let b = sys::read_counter(path)?;
        let want = bytes / (64 * 1024) / 2;
        Out::default().info(format!("{path}: +{}", b.saturating_sub(a)));
        if b.saturating_sub(a) < want {
            return Err(format!("{path} went from {a} to {b}: the file's pages were copied (want +{want})"));
        }
    }
    Ok(Outcome::Pass)
}

fn recv(port: u32, seed: u64, bytes: u64, timeout: Duration) -> TestResult {
    let l = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    sys::bind_vm(&l, VMADDR_CID_ANY, port).or_fail(&format!("bind port {port}"))?;
    sys::listen(&l, 1).or_fail("listen")?;
    sys::set_io_timeout(&l, timeout).or_fail("SO_RCVTIMEO")?;
    println!("RVSOCK-SPLICE-LISTENING {port}");
    let s = sys::accept(&l, false).or_fail("accept")?;
    sys::set_io_timeout(&s, timeout).or_fail("SO_RCVTIMEO")?;
    let mut p = [0 as libc::c_int; 2];
    // SAFETY: `p` receives two descriptors.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        return Err("pipe failed".into());
    }
    // SAFETY: fresh descriptors from pipe(2), owned from here on.
    let (pr, pw) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    let mut got = 0u64;
    let mut h = Fnv::default();
    let mut want = Fnv::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut exp = vec![0u8; 1 << 16];
    let t0 = Instant::now();
    loop {
        // SAFETY: live descriptors; no offsets (socket and pipe).
        let n = unsafe {
            libc::splice(s.as_raw_fd(), std::ptr::null_mut(), pw.as_raw_fd(), std::ptr::null_mut(), buf.len(), libc::SPLICE_F_MOVE)
        };
        if n < 0 {
            return Err(format!("splice at byte {got}: {}", sys::describe(&std::io::Error::last_os_error())));
        }
        if n == 0 {
            break;
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: reads into our buffer from the pipe we own.
            let r = unsafe { libc::read(pr.as_raw_fd(), buf.as_mut_ptr().cast(), left.min(buf.len())) };
            if r <= 0 {
                return Err("read from the pipe failed".into());
            }
            let r = r as usize;
            h.update(&buf[..r]);
            let k = r.min(bytes.saturating_sub(got) as usize);
            proto::fill(seed, got, &mut exp[..k]);
            want.update(&exp[..k]);
            got += r as u64;
            left -= r;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(s);
    if got != bytes {
        return Err(format!("{got} bytes arrived, {bytes} were sent"));
    }
    if h.value() != want.value() {
        return Err(format!("hash {:016x}, the stream's is {:016x}", h.value(), want.value()));
    }
    Out::default().info(format!("splice: {bytes} bytes in {secs:.2} s ({:.0} MB/s), hash equal", bytes as f64 / secs.max(1e-9) / 1e6));
    Ok(Outcome::Pass)
}

/// `splice-send --cid C --port P --bytes N [--seed S] [--name NAME] [--timeout SECS]
/// [--by-ref COUNTER]`: with `--by-ref`, the debugfs counter of packets that carried the
/// file's pages by reference must grow by at least half the transfer's 64 KiB packets.
pub fn send_cmd(a: &Args) -> Result<(), String> {
    let cid = a.u32_req("cid")?;
    let port = a.u32_req("port")?;
    let bytes = a.u64_req("bytes")?;
    let seed = a.u64_or("seed", 1)?;
    let timeout = a.secs_or("timeout", 120)?;
    let name = a.str_or("name", "splice-send").to_string();
    let by_ref = a.str_or("by-ref", "").to_string();
    a.check_unused()?;
    let by_ref = Some(by_ref.as_str()).filter(|p| !p.is_empty());
    Out::default().result(&name, &send(cid, port, seed, bytes, timeout, by_ref));
    Ok(())
}

/// `splice-recv --port P --bytes N [--seed S] [--name NAME] [--timeout SECS]`
pub fn recv_cmd(a: &Args) -> Result<(), String> {
    let port = a.u32_req("port")?;
    let bytes = a.u64_req("bytes")?;
    let seed = a.u64_or("seed", 1)?;
    let timeout = a.secs_or("timeout", 120)?;
    let name = a.str_or("name", "splice-recv").to_string();
    a.check_unused()?;
    Out::default().result(&name, &recv(port, seed, bytes, timeout));
    Ok(())
}
