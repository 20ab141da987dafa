//! The transfer protocol and the poll(2)-driven client and server engines.
//!
//! Wire format (client -> server):
//!   16-byte header: `len: u64 LE`, `seed: u64 LE`, then the data bytes.
//!   `len == u64::MAX` means "until EOF": the client half-closes (SHUT_WR)
//!   after the data. Otherwise the server reads exactly `len` bytes, which
//!   also works through paths that cannot forward a half-close (the
//!   vhost-device-vsock Unix-socket bridge turns a guest SHUT_WR into
//!   nothing and a host EOF into a full shutdown).
//! Server -> client: `"<fnv1a64-hex> <count>\n"`, then the server closes.
//!
//! Data byte `i` of a stream with seed `s` is byte `i % 8` of `mix(s, i / 8)`,
//! so either side can generate/verify any slice of it without state.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys;

pub const HDR_LEN: usize = 16;
pub const EOF_LEN: u64 = u64::MAX;

/// splitmix64-style xorshift-multiply mix of (seed, word index).
fn mix(seed: u64, idx: u64) -> u64 {
    let mut z = seed ^ idx.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fill `buf` with the data stream of `seed`, starting at byte `offset`.
pub fn fill(seed: u64, mut offset: u64, buf: &mut [u8]) {
    let mut i = 0;
    while i < buf.len() {
        let w = mix(seed, offset / 8).to_le_bytes();
        let start = (offset % 8) as usize;
        let n = (8 - start).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&w[start..start + n]);
        i += n;
        offset += n as u64;
    }
}

/// FNV-1a, 64 bit.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn value(self) -> u64 {
        self.0
    }
}

pub fn reply_line(hash: u64, count: u64) -> String {
    format!("{hash:016x} {count}\n")
}

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

// ---------------------------------------------------------------- client

#[derive(Clone, Copy, Debug, PartialEq)]
enum CState {
    Connecting,
    Sending,
    Reply,
}

/// One client connection: sends header + data, then checks the reply.
pub struct Client {
    fd: OwnedFd,
    state: CState,
    seed: u64,
    len: u64,
    eof: bool,
    hdr: [u8; HDR_LEN],
    /// Bytes of header + data written so far.
    pos: u64,
    hash: Fnv,
    reply: Vec<u8>,
}

impl Client {
    /// `fd` must be non-blocking; `connecting` if a connect() is in progress.
    pub fn new(fd: OwnedFd, connecting: bool, seed: u64, len: u64, eof: bool) -> Self {
        let mut hdr = [0u8; HDR_LEN];
        hdr[..8].copy_from_slice(&(if eof { EOF_LEN } else { len }).to_le_bytes());
        hdr[8..].copy_from_slice(&seed.to_le_bytes());
        let state = if connecting { CState::Connecting } else { CState::Sending };
        Client { fd, state, seed, len, eof, hdr, pos: 0, hash: Fnv::default(), reply: Vec::new() }
    }

    fn events(&self) -> i16 {
        match self.state {
            CState::Connecting | CState::Sending => libc::POLLOUT,
            CState::Reply => libc::POLLIN,
        }
    }

    fn describe(&self) -> String {
        let sent = self.pos.saturating_sub(HDR_LEN as u64);
        format!("state {:?}, sent {sent} of {} bytes", self.state, self.len)
    }

    /// Advance after poll reported `revents`. `Some` when the connection is finished.
    fn step(&mut self, scratch: &mut [u8]) -> Option<Result<(), String>> {
        match self.state {
            CState::Connecting => match sys::so_error(&self.fd) {
                Ok(0) => {
                    self.state = CState::Sending;
                    None
                }
                Ok(e) => Some(Err(format!("connect: {}", sys::describe(&std::io::Error::from_raw_os_error(e))))),
                Err(e) => Some(Err(format!("getsockopt(SO_ERROR): {}", sys::describe(&e)))),
            },
            CState::Sending => self.send_some(scratch),
            CState::Reply => self.read_reply(),
        }
    }

    fn send_some(&mut self, scratch: &mut [u8]) -> Option<Result<(), String>> {
        let total = HDR_LEN as u64 + self.len;
        for _ in 0..16 {
            if self.pos >= total {
                break;
            }
            let r = if self.pos < HDR_LEN as u64 {
                sys::send(&self.fd, &self.hdr[self.pos as usize..], libc::MSG_DONTWAIT)
            } else {
                let off = self.pos - HDR_LEN as u64;
                let n = (self.len - off).min(scratch.len() as u64) as usize;
                fill(self.seed, off, &mut scratch[..n]);
                let r = sys::send(&self.fd, &scratch[..n], libc::MSG_DONTWAIT);
                if let Ok(w) = r {
                    self.hash.update(&scratch[..w]);
                }
                r
            };
            match r {
                Ok(w) => self.pos += w as u64,
                Err(e) if would_block(&e) => return None,
                Err(e) => return Some(Err(format!("send ({}): {}", self.describe(), sys::describe(&e)))),
            }
        }
        if self.pos >= total {
            if self.eof {
                if let Err(e) = sys::shutdown(&self.fd, libc::SHUT_WR) {
                    return Some(Err(format!("shutdown(SHUT_WR): {}", sys::describe(&e))));
                }
            }
            self.state = CState::Reply;
        }
        None
    }

    fn read_reply(&mut self) -> Option<Result<(), String>> {
        let mut buf = [0u8; 128];
        match sys::recv(&self.fd, &mut buf, libc::MSG_DONTWAIT) {
            Err(e) if would_block(&e) => None,
            Err(e) => Some(Err(format!("recv reply: {}", sys::describe(&e)))),
            Ok(0) => {
                Some(Err(format!("peer closed before a full reply (got {:?})", String::from_utf8_lossy(&self.reply))))
            }
            Ok(n) => {
                self.reply.extend_from_slice(&buf[..n]);
                if self.reply.contains(&b'\n') {
                    let got = String::from_utf8_lossy(&self.reply).trim_end().to_string();
                    let want = reply_line(self.hash.value(), self.len);
                    Some(if got == want.trim_end() {
                        Ok(())
                    } else {
                        Err(format!("reply mismatch: peer says {got:?}, sender computed {:?}", want.trim_end()))
                    })
                } else if self.reply.len() > 100 {
                    Some(Err(format!("reply too long: {:?}", String::from_utf8_lossy(&self.reply))))
                } else {
                    None
                }
            }
        }
    }
}

/// Drive all clients to completion. Results are in input order; a connection
/// that makes no progress for `idle` fails with a timeout.
pub fn run_clients(clients: Vec<Result<Client, String>>, chunk: usize, idle: Duration) -> Vec<Result<(), String>> {
    let mut results: Vec<Option<Result<(), String>>> = Vec::with_capacity(clients.len());
    let mut live: Vec<(usize, Client)> = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        match c {
            Ok(c) => {
                results.push(None);
                live.push((i, c));
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let mut scratch = vec![0u8; chunk.max(1)];
    let mut last_progress = Instant::now();
    while !live.is_empty() {
        let mut pfds: Vec<libc::pollfd> =
            live.iter().map(|(_, c)| libc::pollfd { fd: c.fd.as_raw_fd(), events: c.events(), revents: 0 }).collect();
        let ready = match sys::poll(&mut pfds, Duration::from_millis(200)) {
            Ok(n) => n,
            Err(e) => {
                for (i, _) in live.drain(..) {
                    results[i] = Some(Err(format!("poll: {}", sys::describe(&e))));
                }
                break;
            }
        };
        if ready == 0 {
            if last_progress.elapsed() > idle {
                for (i, c) in live.drain(..) {
                    results[i] = Some(Err(format!("no progress for {}s ({})", idle.as_secs(), c.describe())));
                }
            }
            continue;
        }
        last_progress = Instant::now();
        let mut k = 0;
        live.retain_mut(|(i, c)| {
            let revents = pfds[k].revents;
            k += 1;
            if revents == 0 {
                return true;
            }
            match c.step(&mut scratch) {
                Some(r) => {
                    results[*i] = Some(r);
                    false
                }
                None => true,
            }
        });
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| Err("not run".into()))).collect()
}

/// Create a non-blocking vsock client and start connecting it to cid:port.
/// The connect timeout is raised to `idle` so a loaded peer is not cut short.
pub fn start_vsock_client(
    cid: u32,
    port: u32,
    seed: u64,
    len: u64,
    eof: bool,
    idle: Duration,
) -> Result<Client, String> {
    let fd = sys::socket(sys::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)
        .map_err(|e| format!("socket: {}", sys::describe(&e)))?;
    let tv = sys::timeval_bytes(idle.as_secs() as i64, 0);
    sys::setsockopt(&fd, sys::SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv)
        .map_err(|e| format!("setsockopt(CONNECT_TIMEOUT): {}", sys::describe(&e)))?;
    let connecting = match sys::connect_vm(&fd, cid, port) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) => return Err(format!("connect({cid}:{port}): {}", sys::describe(&e))),
    };
    Ok(Client::new(fd, connecting, seed, len, eof))
}

/// One-line summary of client results: `Ok(())` iff all passed.
pub fn summarize(results: &[Result<(), String>]) -> Result<(), String> {
    let failed: Vec<(usize, &String)> =
        results.iter().enumerate().filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e))).collect();
    match failed.first() {
        None => Ok(()),
        Some((i, e)) => Err(format!("{} of {} connections failed; first: conn {i}: {e}", failed.len(), results.len())),
    }
}

// ---------------------------------------------------------------- server

#[derive(Clone, Copy, Debug, PartialEq)]
enum SState {
    Header,
    Data,
    Reply,
}

/// One accepted connection on the receiving side.
struct Served {
    fd: OwnedFd,
    state: SState,
    hdr: [u8; HDR_LEN],
    hdr_got: usize,
    len: u64,
    seed: u64,
    got: u64,
    hash: Fnv,
    mismatch: Option<u64>,
    reply: Vec<u8>,
    reply_sent: usize,
}

impl Served {
    fn new(fd: OwnedFd) -> Self {
        Served {
            fd,
            state: SState::Header,
            hdr: [0; HDR_LEN],
            hdr_got: 0,
            len: 0,
            seed: 0,
            got: 0,
            hash: Fnv::default(),
            mismatch: None,
            reply: Vec::new(),
            reply_sent: 0,
        }
    }

    fn events(&self) -> i16 {
        if self.state == SState::Reply {
            libc::POLLOUT
        } else {
            libc::POLLIN
        }
    }

    fn describe(&self) -> String {
        let len = if self.len == EOF_LEN { "EOF".to_string() } else { self.len.to_string() };
        format!("state {:?}, received {} of {len} bytes", self.state, self.got)
    }

    fn start_reply(&mut self) {
        self.reply = reply_line(self.hash.value(), self.got).into_bytes();
        self.state = SState::Reply;
    }

    /// `Some(Ok(bytes))` when finished successfully.
    fn step(&mut self, scratch: &mut [u8], expect: &mut [u8]) -> Option<Result<u64, String>> {
        for _ in 0..16 {
            let r = match self.state {
                SState::Header => self.read_header(),
                SState::Data => self.read_data(scratch, expect),
                SState::Reply => self.write_reply(),
            };
            let more = match r {
                Ok(more) => more,
                Err(e) => return Some(Err(format!("{e} ({})", self.describe()))),
            };
            if self.state == SState::Reply && self.reply_sent == self.reply.len() {
                return Some(match self.mismatch {
                    None => Ok(self.got),
                    Some(off) => Err(format!("data differs from the seed {:#x} stream at offset {off}", self.seed)),
                });
            }
            if !more {
                return None;
            }
        }
        None
    }

    /// Each reader returns Ok(true) to keep going, Ok(false) on EWOULDBLOCK.
    fn read_header(&mut self) -> Result<bool, String> {
        match sys::recv(&self.fd, &mut self.hdr[self.hdr_got..], libc::MSG_DONTWAIT) {
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(format!("recv header: {}", sys::describe(&e))),
            Ok(0) => Err("EOF inside the 16-byte header".into()),
            Ok(n) => {
                self.hdr_got += n;
                if self.hdr_got == HDR_LEN {
                    self.len = u64::from_le_bytes(self.hdr[..8].try_into().expect("8 bytes"));
                    self.seed = u64::from_le_bytes(self.hdr[8..].try_into().expect("8 bytes"));
                    self.state = SState::Data;
                    if self.len == 0 {
                        self.start_reply();
                    }
                }
                Ok(true)
            }
        }
    }

    fn read_data(&mut self, scratch: &mut [u8], expect: &mut [u8]) -> Result<bool, String> {
        let want =
            if self.len == EOF_LEN { scratch.len() } else { (self.len - self.got).min(scratch.len() as u64) as usize };
        match sys::recv(&self.fd, &mut scratch[..want], libc::MSG_DONTWAIT) {
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(format!("recv data: {}", sys::describe(&e))),
            Ok(0) if self.len == EOF_LEN => {
                self.start_reply();
                Ok(true)
            }
            Ok(0) => Err("unexpected EOF".into()),
            Ok(n) => {
                let data = &scratch[..n];
                self.hash.update(data);
                if self.mismatch.is_none() {
                    fill(self.seed, self.got, &mut expect[..n]);
                    if let Some(i) = data.iter().zip(&expect[..n]).position(|(a, b)| a != b) {
                        self.mismatch = Some(self.got + i as u64);
                    }
                }
                self.got += n as u64;
                if self.got == self.len {
                    self.start_reply();
                }
                Ok(true)
            }
        }
    }

    fn write_reply(&mut self) -> Result<bool, String> {
        match sys::send(&self.fd, &self.reply[self.reply_sent..], libc::MSG_DONTWAIT) {
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(format!("send reply: {}", sys::describe(&e))),
            Ok(n) => {
                self.reply_sent += n;
                Ok(true)
            }
        }
    }
}

/// Accept `count` connections on the non-blocking `listener` and serve them
/// all concurrently. Returns one result (bytes received) per connection,
/// failing the missing ones if nothing happens for `idle`.
pub fn run_server(listener: &impl AsFd, count: usize, chunk: usize, idle: Duration) -> Vec<Result<u64, String>> {
    let mut results = Vec::with_capacity(count);
    let mut live: Vec<Served> = Vec::new();
    let mut accepted = 0;
    let mut scratch = vec![0u8; chunk.max(1)];
    let mut expect = vec![0u8; chunk.max(1)];
    let mut last_progress = Instant::now();
    while results.len() < count {
        let lfd = listener.as_fd().as_raw_fd();
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(live.len() + 1);
        pfds.push(libc::pollfd { fd: if accepted < count { lfd } else { -1 }, events: libc::POLLIN, revents: 0 });
        pfds.extend(live.iter().map(|s| libc::pollfd { fd: s.fd.as_raw_fd(), events: s.events(), revents: 0 }));
        let ready = match sys::poll(&mut pfds, Duration::from_millis(200)) {
            Ok(n) => n,
            Err(e) => {
                results.push(Err(format!("poll: {}", sys::describe(&e))));
                continue;
            }
        };
        if ready == 0 {
            if last_progress.elapsed() > idle {
                let secs = idle.as_secs();
                results.extend(live.drain(..).map(|s| Err(format!("no progress for {secs}s ({})", s.describe()))));
                let missing = count.saturating_sub(accepted);
                results.extend((0..missing).map(|_| Err(format!("no connection arrived within {secs}s"))));
                accepted = count;
            }
            continue;
        }
        last_progress = Instant::now();
        if pfds[0].revents != 0 {
            while accepted < count {
                match sys::accept(listener, true) {
                    Ok(fd) => {
                        accepted += 1;
                        live.push(Served::new(fd));
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) => {
                        accepted += 1;
                        results.push(Err(format!("accept: {}", sys::describe(&e))));
                    }
                }
            }
        }
        // Only the connections that were polled have a pfds entry (index + 1).
        let polled = pfds.len() - 1;
        let mut idx = 0;
        live.retain_mut(|s| {
            let i = idx;
            idx += 1;
            if i >= polled || pfds[i + 1].revents == 0 {
                return true;
            }
            match s.step(&mut scratch, &mut expect) {
                Some(r) => {
                    results.push(r);
                    false
                }
                None => true,
            }
        });
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn fill_is_position_addressable() {
        let mut whole = vec![0u8; 1000];
        fill(7, 0, &mut whole);
        let mut part = vec![0u8; 333];
        fill(7, 401, &mut part);
        assert_eq!(&whole[401..734], &part[..]);
        let mut other = vec![0u8; 1000];
        fill(8, 0, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn fnv_known_value() {
        let mut h = Fnv::default();
        h.update(b"a");
        assert_eq!(h.value(), 0xaf63dc4c8601ec8c);
    }

    fn unix_roundtrip(conns: usize, len: u64, eof: bool) {
        let dir = std::env::temp_dir().join(format!("rvsock-proto-{}-{conns}-{eof}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l");
        let l = UnixListener::bind(&path).unwrap();
        l.set_nonblocking(true).unwrap();
        let server = std::thread::spawn(move || run_server(&l, conns, 4096, Duration::from_secs(10)));
        let clients = (0..conns)
            .map(|i| {
                let s = UnixStream::connect(&path).map_err(|e| e.to_string())?;
                s.set_nonblocking(true).unwrap();
                Ok(Client::new(s.into(), false, i as u64, len + i as u64, eof))
            })
            .collect();
        let r = run_clients(clients, 1000, Duration::from_secs(10));
        assert_eq!(summarize(&r), Ok(()));
        let s = server.join().unwrap();
        assert_eq!(s.len(), conns);
        assert!(s.iter().all(|r| r.is_ok()), "{s:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unix_length_mode() {
        unix_roundtrip(50, 100_000, false);
    }

    #[test]
    fn unix_eof_mode_and_empty() {
        unix_roundtrip(3, 0, true);
        unix_roundtrip(1, 0, false);
    }

    #[test]
    fn wrong_reply_is_detected() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let fake = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut b = b;
            let mut buf = vec![0u8; HDR_LEN + 10];
            b.read_exact(&mut buf).unwrap();
            b.write_all(b"0000000000000000 10\n").unwrap();
        });
        let r = run_clients(vec![Ok(Client::new(a.into(), false, 1, 10, false))], 64, Duration::from_secs(5));
        fake.join().unwrap();
        assert!(r[0].as_ref().unwrap_err().contains("reply mismatch"));
    }
}
