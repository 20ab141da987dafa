//! `soak`'s randomness and data plans: the seeded generator of a cycle, what each side sends
//! (sizes, bytes, SEQPACKET message lengths), and the checked send, receive and close steps.

use std::io;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use libc::{c_int, ECONNRESET, EPIPE};

use crate::proto::{self, Fnv};
use crate::soak::{Ty, MAX_MSG, MAX_WRITE};
use crate::sys;

// ------------------------------------------------------------ randomness

/// splitmix64: a tiny deterministic generator, one per cycle (seeded from `--seed` and the
/// cycle number, so a failing cycle can be replayed with `--only` and the same seed).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, cycle: u64) -> Rng {
        let mut r = Rng(seed ^ cycle.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub(crate) fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    /// A size in `0..=max`, log-uniform: every power of two is as likely as any other, so
    /// tiny and large transfers both occur often.
    pub(crate) fn size(&mut self, max: usize) -> usize {
        let bits = 64 - (max as u64).leading_zeros();
        let b = self.below(u64::from(bits) + 1);
        let cap = ((1u64 << b) - 1).min(max as u64);
        self.below(cap + 1) as usize
    }
}

// ------------------------------------------------------------ data plans

/// What one side sends: a seeded byte stream cut into send() calls (STREAM) or messages
/// (SEQPACKET, never empty: a 0-byte read means EOF).
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    seed: u64,
    chunks: Vec<usize>,
}

impl Plan {
    pub(crate) fn new(rng: &mut Rng, ty: Ty, max_total: usize) -> Plan {
        let seed = rng.next();
        let mut chunks = Vec::new();
        match ty {
            Ty::Stream => {
                let mut left = rng.size(max_total);
                while left > 0 {
                    let n = rng.size(MAX_WRITE.min(left)).max(1);
                    chunks.push(n);
                    left -= n;
                }
            }
            Ty::Seqpacket => {
                let max_msg = MAX_MSG.min(max_total).max(1);
                let mut total = 0;
                for _ in 0..1 + rng.below(6) {
                    let n = rng.size(max_msg - 1) + 1;
                    if !chunks.is_empty() && total + n > max_total {
                        break;
                    }
                    chunks.push(n);
                    total += n;
                }
            }
        }
        Plan { seed, chunks }
    }

    pub(crate) fn total(&self) -> usize {
        self.chunks.iter().sum()
    }

    /// Units of the plan: bytes (STREAM) or messages (SEQPACKET).
    pub(crate) fn units(&self, ty: Ty) -> usize {
        match ty {
            Ty::Stream => self.total(),
            Ty::Seqpacket => self.chunks.len(),
        }
    }

    pub(crate) fn describe(&self, ty: Ty) -> String {
        match ty {
            Ty::Stream => format!("{} bytes", self.total()),
            Ty::Seqpacket => format!("{} messages / {} bytes", self.chunks.len(), self.total()),
        }
    }
}

pub(crate) fn io_fail(what: &str, e: &io::Error, t: Duration) -> String {
    if e.kind() == io::ErrorKind::WouldBlock {
        format!("{what}: {} (no progress for {}s)", sys::describe(e), t.as_secs())
    } else {
        format!("{what}: {}", sys::describe(e))
    }
}

/// Sends `p`; returns the hash of what was sent.
pub(crate) fn send_plan(fd: &OwnedFd, ty: Ty, p: &Plan, t: Duration) -> Result<u64, String> {
    let mut buf = vec![0u8; p.chunks.iter().copied().max().unwrap_or(0)];
    let mut h = Fnv::default();
    let mut off = 0usize;
    for (i, &n) in p.chunks.iter().enumerate() {
        let b = &mut buf[..n];
        proto::fill(p.seed, off as u64, b);
        let mut sent = 0;
        while sent < n {
            match sys::send(fd, &b[sent..], 0) {
                Ok(0) => return Err(format!("send at byte {} of {}: returned 0", off + sent, p.total())),
                Ok(k) if ty == Ty::Seqpacket && k != n => {
                    return Err(format!("SEQPACKET send of message {i} ({n} bytes) returned {k}"))
                }
                Ok(k) => sent += k,
                Err(e) => return Err(io_fail(&format!("send at byte {} of {}", off + sent, p.describe(ty)), &e, t)),
            }
        }
        h.update(b);
        off += n;
    }
    Ok(h.value())
}

/// Reads the first `units` units of the peer's plan `p`, checking every byte (and every
/// SEQPACKET message length); returns the hash of what arrived.
pub(crate) fn recv_plan(fd: &OwnedFd, ty: Ty, p: &Plan, units: usize, t: Duration) -> Result<u64, String> {
    let mut h = Fnv::default();
    match ty {
        Ty::Stream => {
            let total = units.min(p.total());
            let mut buf = vec![0u8; total.min(64 * 1024)];
            let mut want = vec![0u8; buf.len()];
            let mut got = 0;
            while got < total {
                let k = (total - got).min(buf.len());
                let n = match sys::recv(fd, &mut buf[..k], 0) {
                    Ok(0) => return Err(format!("EOF after {got} of {total} bytes")),
                    Ok(n) => n,
                    Err(e) => return Err(io_fail(&format!("recv at byte {got} of {total}"), &e, t)),
                };
                proto::fill(p.seed, got as u64, &mut want[..n]);
                if let Some(i) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
                    return Err(format!("data differs from what was sent at byte {} of {total}", got + i));
                }
                h.update(&buf[..n]);
                got += n;
            }
        }
        Ty::Seqpacket => {
            let mut buf = vec![0u8; MAX_MSG + 1];
            let mut want = vec![0u8; MAX_MSG];
            let mut off = 0usize;
            for (i, &m) in p.chunks.iter().take(units).enumerate() {
                let n = match sys::recv(fd, &mut buf, 0) {
                    Ok(0) => return Err(format!("EOF before message {i} of {}", p.chunks.len())),
                    Ok(n) => n,
                    Err(e) => return Err(io_fail(&format!("recv of message {i} of {}", p.chunks.len()), &e, t)),
                };
                if n != m {
                    return Err(format!("message {i} has {n} bytes, {m} were sent (boundaries lost?)"));
                }
                proto::fill(p.seed, off as u64, &mut want[..n]);
                if let Some(j) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
                    return Err(format!("message {i} differs from what was sent at byte {j}"));
                }
                h.update(&buf[..n]);
                off += n;
            }
        }
    }
    Ok(h.value())
}

/// The next read must report end of file (`allow_reset`: or ECONNRESET).
pub(crate) fn expect_eof(fd: &OwnedFd, allow_reset: bool, t: Duration) -> Result<(), String> {
    let mut b = [0u8; 16];
    match sys::recv(fd, &mut b, 0) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("expected EOF, read {n} more bytes")),
        Err(e) if allow_reset && e.raw_os_error() == Some(ECONNRESET) => Ok(()),
        Err(e) => Err(io_fail("expected EOF", &e, t)),
    }
}

/// A send must fail with EPIPE (now, or within `t` if the peer's SHUTDOWN is still on its
/// way): the peer shut down its receive side.
pub(crate) fn expect_epipe(fd: &OwnedFd, t: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    let mut accepted = 0;
    loop {
        match sys::send(fd, b"x", libc::MSG_DONTWAIT) {
            Err(e) if e.raw_os_error() == Some(EPIPE) => return Ok(()),
            Ok(_) => accepted += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("send after the peer's shutdown: {}, expected EPIPE", sys::describe(&e))),
        }
        if t0.elapsed() > t {
            return Err(format!("send still works {}s after the peer's shutdown ({accepted} accepted)", t.as_secs()));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn shutdown(fd: &OwnedFd, how: c_int) -> Result<(), String> {
    let name = match how {
        libc::SHUT_RD => "SHUT_RD",
        libc::SHUT_WR => "SHUT_WR",
        _ => "SHUT_RDWR",
    };
    sys::shutdown(fd, how).map_err(|e| format!("shutdown({name}): {}", sys::describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::MAX_UNREAD;

    #[test]
    fn plans_respect_limits() {
        for i in 0..2000 {
            let mut r = Rng::new(7, i);
            let s = Plan::new(&mut r, Ty::Stream, 100_000);
            assert!(s.total() <= 100_000 && s.chunks.iter().all(|&c| c > 0 && c <= MAX_WRITE));
            let q = Plan::new(&mut r, Ty::Seqpacket, MAX_UNREAD);
            assert!(!q.chunks.is_empty() && q.chunks.iter().all(|&c| c > 0 && c <= MAX_MSG));
            assert!(q.total() <= MAX_UNREAD || q.chunks.len() == 1);
        }
    }

    #[test]
    fn corruption_and_lost_bytes_are_detected() {
        use std::os::unix::net::UnixStream;
        let t = Duration::from_secs(5);
        let mut r = Rng::new(1, 1);
        let mut p = Plan::new(&mut r, Ty::Stream, 10_000);
        while p.total() < 100 {
            p = Plan::new(&mut r, Ty::Stream, 10_000);
        }
        // Right data: hashes agree.
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b): (OwnedFd, OwnedFd) = (a.into(), b.into());
        let sent = send_plan(&a, Ty::Stream, &p, t).unwrap();
        drop(a);
        assert_eq!(recv_plan(&b, Ty::Stream, &p, usize::MAX, t).unwrap(), sent);
        expect_eof(&b, false, t).unwrap();
        // Another seed: the first differing byte is reported.
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b): (OwnedFd, OwnedFd) = (a.into(), b.into());
        send_plan(&a, Ty::Stream, &Plan { seed: p.seed ^ 1, chunks: p.chunks.clone() }, t).unwrap();
        let e = recv_plan(&b, Ty::Stream, &p, usize::MAX, t).unwrap_err();
        assert!(e.contains("differs"), "{e}");
        // Missing bytes: EOF is reported with the count.
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b): (OwnedFd, OwnedFd) = (a.into(), b.into());
        let mut head = [0u8; 10];
        proto::fill(p.seed, 0, &mut head);
        sys::send(&a, &head, 0).unwrap();
        drop(a);
        let e = recv_plan(&b, Ty::Stream, &p, usize::MAX, t).unwrap_err();
        assert!(e.contains("EOF after"), "{e}");
    }
}
