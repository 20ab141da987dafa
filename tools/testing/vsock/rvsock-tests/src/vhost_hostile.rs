//! `vhost-hostile`: drives `/dev/vhost-vsock` directly as a fake, hostile guest.
//!
//! The program is the VMM and the guest at once: it owns the vhost device
//! (`VHOST_SET_OWNER`), gives it a memory table that maps part of its own address space as
//! "guest RAM" (guest physical address == user address), lays out split virtqueues there
//! (RX 0: host to guest, TX 1: guest to host), and then speaks virtio-vsock by writing
//! descriptors and reading the used rings itself. The host end is ordinary AF_VSOCK sockets
//! in the same process. Everything runs on the host kernel under test, so the program also
//! checks what must never happen: spoofed or malformed packets reaching a host socket.
//!
//! Each check prints one `RVSOCK-TEST` line named `vhost-hostile.<check>`. The checks
//! hold for the in-tree C `vhost_vsock` as well (the reference), except where a line says
//! it only reports (`#` lines).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::report::{OrFail, Out, Outcome, TestResult};
use crate::sys::{self, GuestMem, AF_VSOCK, VMADDR_CID_ANY};

// ---------------------------------------------------------------------------------------
// Wire format and constants.

pub(crate) const HDR: usize = 44;
pub(crate) const HOST: u64 = 2;
pub(crate) const OP_REQUEST: u16 = 1;
pub(crate) const OP_RESPONSE: u16 = 2;
pub(crate) const OP_RST: u16 = 3;
pub(crate) const OP_SHUTDOWN: u16 = 4;
pub(crate) const OP_RW: u16 = 5;
pub(crate) const OP_CREDIT_UPDATE: u16 = 6;
pub(crate) const OP_CREDIT_REQUEST: u16 = 7;
pub(crate) const TYPE_STREAM: u16 = 1;
pub(crate) const TYPE_SEQPACKET: u16 = 2;
pub(crate) const SEQ_EOM: u32 = 1;
const MAX_PKT: usize = 64 * 1024;
pub(crate) const GUEST_BUF: u32 = 256 * 1024;

pub(crate) const F_VERSION_1: u64 = 1 << 32;
const F_ACCESS_PLATFORM: u64 = 1 << 33;
pub(crate) const F_SEQPACKET: u64 = 1 << 1;
/// `VHOST_F_LOG_ALL`: the device logs the guest pages it writes (migration).
const F_LOG_ALL: u64 = 1 << 26;

const SET_OWNER: u64 = sys::vhost_ioc(0, 0x01, 0);
const GET_FEATURES: u64 = sys::vhost_ioc(2, 0x00, 8);
const SET_FEATURES: u64 = sys::vhost_ioc(1, 0x00, 8);
const SET_LOG_BASE: u64 = sys::vhost_ioc(1, 0x04, 8);
const SET_VRING_NUM: u64 = sys::vhost_ioc(1, 0x10, 8);
const SET_VRING_ADDR: u64 = sys::vhost_ioc(1, 0x11, 40);
const SET_VRING_BASE: u64 = sys::vhost_ioc(1, 0x12, 8);
const SET_VRING_KICK: u64 = sys::vhost_ioc(1, 0x20, 8);
const SET_VRING_CALL: u64 = sys::vhost_ioc(1, 0x21, 8);
const SET_VRING_ERR: u64 = sys::vhost_ioc(1, 0x22, 8);
const SET_BACKEND_FEATURES: u64 = sys::vhost_ioc(1, 0x25, 8);
const GET_BACKEND_FEATURES: u64 = sys::vhost_ioc(2, 0x26, 8);
const SET_GUEST_CID: u64 = sys::vhost_ioc(1, 0x60, 8);
const SET_RUNNING: u64 = sys::vhost_ioc(1, 0x61, 4);

/// `struct virtio_vsock_hdr`, host-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hdr {
    pub(crate) src_cid: u64,
    pub(crate) dst_cid: u64,
    pub(crate) src_port: u32,
    pub(crate) dst_port: u32,
    pub(crate) len: u32,
    pub(crate) ty: u16,
    pub(crate) op: u16,
    pub(crate) flags: u32,
    pub(crate) buf_alloc: u32,
    pub(crate) fwd_cnt: u32,
}

impl Hdr {
    fn encode(&self) -> [u8; HDR] {
        let mut b = [0u8; HDR];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.ty.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Hdr> {
        let b: &[u8; HDR] = b.get(..HDR)?.try_into().ok()?;
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap_or([0; 2]));
        Some(Hdr {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            ty: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The fake guest: split virtqueues in our own memory.

const NUM: u16 = 64;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
/// Guest memory layout (offsets into `GuestMem`).
const RING_BASE: [usize; 2] = [0x0000, 0x2000];
const RX_BUFS: usize = 0x10000;
const TX_AREA: usize = 0x40000;
const MEM_SIZE: usize = 0x100000;

/// One split virtqueue: descriptor table, avail ring, used ring at fixed offsets.
struct Ring {
    base: usize,
    avail_idx: u16,
    last_used: u16,
}

impl Ring {
    fn desc(&self) -> usize {
        self.base
    }
    fn avail(&self) -> usize {
        self.base + 0x400
    }
    fn used(&self) -> usize {
        self.base + 0x800
    }

    fn set_desc(&self, m: &GuestMem, i: u16, addr: u64, len: u32, flags: u16, next: u16) -> Option<()> {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        m.write(self.desc() + 16 * usize::from(i), &d)
    }

    /// Makes chain `head` available (the ring entry first, then the index, release).
    fn publish(&mut self, m: &GuestMem, head: u16) -> Option<()> {
        let slot = self.avail() + 4 + 2 * usize::from(self.avail_idx % NUM);
        m.write(slot, &head.to_le_bytes())?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        m.store16(self.avail() + 2, self.avail_idx)
    }

    /// The next used element (id, len), if the device returned one.
    fn next_used(&mut self, m: &GuestMem) -> Option<(u32, u32)> {
        let idx = m.load16(self.used() + 2)?;
        if idx == self.last_used {
            return None;
        }
        let e = m.read(self.used() + 4 + 8 * usize::from(self.last_used % NUM), 8)?;
        self.last_used = self.last_used.wrapping_add(1);
        let id = u32::from_le_bytes(e[0..4].try_into().ok()?);
        let len = u32::from_le_bytes(e[4..8].try_into().ok()?);
        Some((id, len))
    }
}

/// A received packet.
#[derive(Debug)]
pub(crate) struct Rx {
    pub(crate) h: Hdr,
    pub(crate) data: Vec<u8>,
}

/// What became of a TX chain.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// The device returned it.
    Returned,
    /// Not returned within the wait (the in-tree driver keeps dropped chains).
    Kept,
}

pub(crate) struct Guest {
    // Field order is drop order: close the device before unmapping its memory.
    fd: OwnedFd,
    kick: [OwnedFd; 2],
    call: [OwnedFd; 2],
    err: [OwnedFd; 2],
    mem: GuestMem,
    pub(crate) cid: u32,
    rx: Ring,
    tx: Ring,
    rx_buf: usize,
    pub(crate) inbox: VecDeque<Rx>,
    /// RX buffers whose content was not a valid packet (too short).
    rx_garbage: u32,
}

fn ioctl_u64(fd: &impl AsFd, req: u64, v: u64) -> std::io::Result<i32> {
    let mut b = v.to_ne_bytes();
    sys::ioctl_buf(fd, req, &mut b)
}

fn ioctl_get_u64(fd: &impl AsFd, req: u64) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    sys::ioctl_buf(fd, req, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}

fn ioctl_pair(fd: &impl AsFd, req: u64, a: u32, b: u32) -> std::io::Result<i32> {
    let mut v = [0u8; 8];
    v[0..4].copy_from_slice(&a.to_ne_bytes());
    v[4..8].copy_from_slice(&b.to_ne_bytes());
    sys::ioctl_buf(fd, req, &mut v)
}

fn open_dev() -> std::io::Result<OwnedFd> {
    OpenOptions::new().read(true).write(true).open("/dev/vhost-vsock").map(OwnedFd::from)
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Guest {
    /// Opens a device, sets it up like a VMM would, gives it `cid`, posts receive buffers
    /// of `rx_buf` bytes and starts it.
    pub(crate) fn new(cid: u32, rx_buf: usize) -> Result<Guest, String> {
        Guest::with_features(cid, rx_buf, F_VERSION_1 | F_SEQPACKET)
    }

    /// Like [`Guest::new`], negotiating `want` (which must include VERSION_1) instead of
    /// VERSION_1 | SEQPACKET.
    pub(crate) fn with_features(cid: u32, rx_buf: usize, want: u64) -> Result<Guest, String> {
        Guest::setup(cid, rx_buf, want, None)
    }

    /// Like [`Guest::with_features`], with dirty logging on (`VHOST_F_LOG_ALL`, as a VMM
    /// turns it on to migrate): `log_base(guest memory address)` gives the log base to set.
    fn with_log(cid: u32, rx_buf: usize, log_base: impl Fn(u64) -> u64) -> Result<Guest, String> {
        Guest::setup(cid, rx_buf, F_VERSION_1 | F_SEQPACKET | F_LOG_ALL, Some(&log_base))
    }

    fn setup(cid: u32, rx_buf: usize, want: u64, log_base: Option<&dyn Fn(u64) -> u64>) -> Result<Guest, String> {
        let fd = open_dev().or_fail("open /dev/vhost-vsock")?;
        let mk = || sys::eventfd().or_fail("eventfd");
        let mut g = Guest {
            fd,
            kick: [mk()?, mk()?],
            call: [mk()?, mk()?],
            err: [mk()?, mk()?],
            mem: GuestMem::new(MEM_SIZE).or_fail("mmap guest memory")?,
            cid,
            rx: Ring { base: RING_BASE[0], avail_idx: 0, last_used: 0 },
            tx: Ring { base: RING_BASE[1], avail_idx: 0, last_used: 0 },
            rx_buf: rx_buf.clamp(HDR, (TX_AREA - RX_BUFS) / usize::from(NUM)),
            inbox: VecDeque::new(),
            rx_garbage: 0,
        };
        sys::ioctl_none(&g.fd, SET_OWNER).or_fail("VHOST_SET_OWNER")?;
        if let Some(lb) = log_base {
            ioctl_u64(&g.fd, SET_LOG_BASE, lb(g.mem.addr(0))).or_fail("VHOST_SET_LOG_BASE")?;
        }
        let f = ioctl_get_u64(&g.fd, GET_FEATURES).or_fail("VHOST_GET_FEATURES")?;
        if f & want != want {
            return Err(format!("features {f:#x} lack {want:#x}"));
        }
        ioctl_u64(&g.fd, SET_FEATURES, want).or_fail("VHOST_SET_FEATURES")?;
        let whole = (g.mem.addr(0), g.mem.len() as u64, g.mem.addr(0));
        sys::vhost_set_mem_table(&g.fd, &[whole]).or_fail("VHOST_SET_MEM_TABLE")?;
        for i in 0..2u32 {
            let r = if i == 0 { &g.rx } else { &g.tx };
            ioctl_pair(&g.fd, SET_VRING_NUM, i, u32::from(NUM)).or_fail("VHOST_SET_VRING_NUM")?;
            ioctl_pair(&g.fd, SET_VRING_BASE, i, 0).or_fail("VHOST_SET_VRING_BASE")?;
            // struct vhost_vring_addr: index, flags, desc, used, avail, log (user addresses).
            let mut a = [0u8; 40];
            a[0..4].copy_from_slice(&i.to_ne_bytes());
            a[8..16].copy_from_slice(&g.mem.addr(r.desc()).to_ne_bytes());
            a[16..24].copy_from_slice(&g.mem.addr(r.used()).to_ne_bytes());
            a[24..32].copy_from_slice(&g.mem.addr(r.avail()).to_ne_bytes());
            sys::ioctl_buf(&g.fd, SET_VRING_ADDR, &mut a).or_fail("VHOST_SET_VRING_ADDR")?;
            let ix = i as usize;
            ioctl_pair(&g.fd, SET_VRING_KICK, i, raw_fd(&g.kick[ix])).or_fail("VHOST_SET_VRING_KICK")?;
            ioctl_pair(&g.fd, SET_VRING_CALL, i, raw_fd(&g.call[ix])).or_fail("VHOST_SET_VRING_CALL")?;
            ioctl_pair(&g.fd, SET_VRING_ERR, i, raw_fd(&g.err[ix])).or_fail("VHOST_SET_VRING_ERR")?;
        }
        ioctl_u64(&g.fd, SET_GUEST_CID, u64::from(cid)).or_fail("VHOST_VSOCK_SET_GUEST_CID")?;
        for i in 0..NUM {
            g.post_rx(i)?;
        }
        let mut on = 1i32.to_ne_bytes();
        sys::ioctl_buf(&g.fd, SET_RUNNING, &mut on).or_fail("VHOST_VSOCK_SET_RUNNING")?;
        g.kick(0)?;
        Ok(g)
    }

    fn kick(&self, q: usize) -> Result<(), String> {
        sys::eventfd_write(&self.kick[q], 1).or_fail("kick")
    }

    fn rx_addr(&self, i: u16) -> usize {
        RX_BUFS + usize::from(i) * self.rx_buf
    }

    fn post_rx(&mut self, i: u16) -> Result<(), String> {
        let off = self.rx_addr(i);
        let (a, n) = (self.mem.addr(off), self.rx_buf as u32);
        self.rx.set_desc(&self.mem, i, a, n, VRING_DESC_F_WRITE, 0).ok_or("rx desc")?;
        self.rx.publish(&self.mem, i).ok_or_else(|| "rx publish".to_string())
    }

    /// Harvests every filled receive buffer into the inbox and reposts it.
    pub(crate) fn poll_rx(&mut self) -> Result<(), String> {
        let mut any = false;
        while let Some((id, len)) = self.rx.next_used(&self.mem) {
            let id =
                u16::try_from(id).ok().filter(|i| *i < NUM).ok_or_else(|| format!("rx used id {id} out of range"))?;
            let len = (len as usize).min(self.rx_buf);
            let b = self.mem.read(self.rx_addr(id), len).ok_or("rx read")?;
            match Hdr::decode(&b) {
                Some(h) => {
                    let data = b[HDR..].to_vec();
                    if h.len as usize != data.len() {
                        return Err(format!("rx packet {h:?}: header len {} but buffer holds {}", h.len, data.len()));
                    }
                    self.inbox.push_back(Rx { h, data });
                }
                None => self.rx_garbage += 1,
            }
            self.post_rx(id)?;
            any = true;
        }
        if any {
            self.kick(0)?;
        }
        Ok(())
    }

    /// Sends one descriptor chain made of `segs` (bytes, device-writable?) and waits up to
    /// `wait` for the device to return it, receiving meanwhile.
    fn send_chain(&mut self, segs: &[(&[u8], bool)], wait: Duration) -> Result<Sent, String> {
        let mut off = TX_AREA;
        let n = segs.len();
        if n == 0 || n > usize::from(NUM) {
            return Err("bad chain length".into());
        }
        for (i, (data, write)) in segs.iter().enumerate() {
            self.mem.write(off, data).ok_or("tx area too small")?;
            let mut flags = if *write { VRING_DESC_F_WRITE } else { 0 };
            if i + 1 < n {
                flags |= VRING_DESC_F_NEXT;
            }
            let a = self.mem.addr(off);
            self.tx.set_desc(&self.mem, i as u16, a, data.len() as u32, flags, (i + 1) as u16).ok_or("tx desc")?;
            off += data.len().next_multiple_of(64);
        }
        self.tx.publish(&self.mem, 0).ok_or("tx publish")?;
        self.kick(1)?;
        let t0 = Instant::now();
        loop {
            self.poll_rx()?;
            if let Some((id, _)) = self.tx.next_used(&self.mem) {
                if id != 0 {
                    return Err(format!("tx used id {id}, expected 0"));
                }
                return Ok(Sent::Returned);
            }
            if t0.elapsed() > wait {
                return Ok(Sent::Kept);
            }
            thread::sleep(ms(1));
        }
    }

    /// Sends a packet as header + payload descriptors (as the Linux driver does); it must
    /// come back from the device.
    pub(crate) fn send(&mut self, h: &Hdr, payload: &[u8]) -> Result<(), String> {
        let hb = h.encode();
        let segs: Vec<(&[u8], bool)> =
            if payload.is_empty() { vec![(&hb, false)] } else { vec![(&hb, false), (payload, false)] };
        match self.send_chain(&segs, Duration::from_secs(10))? {
            Sent::Returned => Ok(()),
            Sent::Kept => Err(format!("device did not return the TX buffer of {h:?}")),
        }
    }

    /// Sends header-only packets as one batch: every chain is published before a single
    /// kick, so the device handles them in one pass. All must come back.
    pub(crate) fn send_batch(&mut self, hs: &[Hdr]) -> Result<(), String> {
        if hs.is_empty() || hs.len() > usize::from(NUM) {
            return Err("bad batch length".into());
        }
        for (i, h) in hs.iter().enumerate() {
            let off = TX_AREA + 64 * i;
            self.mem.write(off, &h.encode()).ok_or("tx area too small")?;
            self.tx.set_desc(&self.mem, i as u16, self.mem.addr(off), HDR as u32, 0, 0).ok_or("tx desc")?;
            self.tx.publish(&self.mem, i as u16).ok_or("tx publish")?;
        }
        self.kick(1)?;
        let t0 = Instant::now();
        let mut back = 0;
        while back < hs.len() {
            self.poll_rx()?;
            if self.tx.next_used(&self.mem).is_some() {
                back += 1;
                continue;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("device returned {back} of {} TX buffers", hs.len()));
            }
            thread::sleep(ms(1));
        }
        Ok(())
    }

    /// A header from us to the host.
    pub(crate) fn hdr(&self, op: u16, src_port: u32, dst_port: u32) -> Hdr {
        Hdr {
            src_cid: u64::from(self.cid),
            dst_cid: HOST,
            src_port,
            dst_port,
            ty: TYPE_STREAM,
            op,
            buf_alloc: GUEST_BUF,
            ..Hdr::default()
        }
    }

    /// The next received packet matching `want` (others are kept), within `t`.
    pub(crate) fn recv_where(&mut self, t: Duration, want: impl Fn(&Hdr) -> bool) -> Result<Option<Rx>, String> {
        let t0 = Instant::now();
        loop {
            self.poll_rx()?;
            if let Some(i) = self.inbox.iter().position(|r| want(&r.h)) {
                return Ok(self.inbox.remove(i));
            }
            if t0.elapsed() > t {
                return Ok(None);
            }
            thread::sleep(ms(1));
        }
    }

    /// Drops queued packets that match `f` (e.g. credit updates we do not care about).
    pub(crate) fn discard(&mut self, f: impl Fn(&Hdr) -> bool) {
        self.inbox.retain(|r| !f(&r.h));
    }

    /// Fails if a packet matching `f` arrives within `t`.
    pub(crate) fn expect_none(&mut self, t: Duration, what: &str, f: impl Fn(&Hdr) -> bool) -> Result<(), String> {
        match self.recv_where(t, f)? {
            None => Ok(()),
            Some(r) => Err(format!("{what}: unexpected packet {:?}", r.h)),
        }
    }

    /// Whether the device signalled an error on virtqueue `q` (vq_err).
    fn error_signalled(&self, q: usize) -> bool {
        sys::eventfd_read(&self.err[q]).map(|v| v > 0).unwrap_or(false)
    }
}

fn raw_fd(fd: &OwnedFd) -> u32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd() as u32
}

// ---------------------------------------------------------------------------------------
// Host side helpers.

pub(crate) fn listener(port: u32, backlog: i32) -> Result<OwnedFd, String> {
    let l = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    sys::bind_vm(&l, VMADDR_CID_ANY, port).or_fail("bind")?;
    sys::listen(&l, backlog).or_fail("listen")?;
    Ok(l)
}

pub(crate) fn accept_within(l: &OwnedFd, t: Duration) -> Result<Option<OwnedFd>, String> {
    let ev = sys::poll_one(l, libc::POLLIN, t).or_fail("poll listener")?;
    if ev & libc::POLLIN == 0 {
        return Ok(None);
    }
    let s = sys::accept(l, false).or_fail("accept")?;
    sys::set_io_timeout(&s, Duration::from_secs(10)).or_fail("SO_RCVTIMEO")?;
    Ok(Some(s))
}

/// Reads exactly `n` bytes (the socket has an I/O timeout).
pub(crate) fn read_exact(s: &OwnedFd, n: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match sys::recv(s, &mut v[got..], 0) {
            Ok(0) => return Err(format!("EOF after {got} of {n} bytes")),
            Ok(k) => got += k,
            Err(e) => return Err(format!("recv after {got} of {n} bytes: {}", sys::describe(&e))),
        }
    }
    Ok(v)
}

/// Fails if the socket becomes readable within `t`.
fn expect_no_data(s: &OwnedFd, t: Duration, what: &str) -> Result<(), String> {
    let ev = sys::poll_one(s, libc::POLLIN, t).or_fail("poll")?;
    if ev & libc::POLLIN != 0 {
        let mut b = [0u8; 64];
        let r = sys::recv(s, &mut b, libc::MSG_DONTWAIT);
        return Err(format!("{what}: host socket readable: {r:?}"));
    }
    Ok(())
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Ports used by the checks (host listeners and guest source ports).
const P_LISTEN: u32 = 1100;
const P_STORM: u32 = 1300;
const P_NOBODY: u32 = 1301;
const P_CREDIT: u32 = 1400;
const P_SEQ: u32 = 1500;
const P_SMALL: u32 = 1600;
const G_MAIN: u32 = 40001;
const G_LISTEN: u32 = 7000;

/// A connection set up by the guest: its host socket and the guest's port.
struct Conn {
    host: OwnedFd,
    gport: u32,
    hport: u32,
}

struct Env {
    out: Out,
    g: Guest,
    l: OwnedFd,
    c1: Option<Conn>,
}

fn pass(r: Result<(), String>) -> TestResult {
    r.map(|()| Outcome::Pass)
}

/// Guest connects `gport` -> host `hport` (listener `l`); returns the accepted socket.
fn guest_connect(g: &mut Guest, l: &OwnedFd, gport: u32, hport: u32, buf_alloc: u32) -> Result<OwnedFd, String> {
    let mut h = g.hdr(OP_REQUEST, gport, hport);
    h.buf_alloc = buf_alloc;
    g.send(&h, &[])?;
    let r = g
        .recv_where(Duration::from_secs(5), |x| x.dst_port == gport && x.src_port == hport && x.op != OP_CREDIT_UPDATE)?
        .ok_or("no reply to REQUEST")?;
    let want = Hdr {
        src_cid: HOST,
        dst_cid: u64::from(g.cid),
        src_port: hport,
        dst_port: gport,
        ty: TYPE_STREAM,
        op: OP_RESPONSE,
        ..r.h
    };
    if r.h != want || r.h.len != 0 {
        return Err(format!("reply to REQUEST: got {:?}", r.h));
    }
    accept_within(l, Duration::from_secs(5))?.ok_or_else(|| "host accept timed out after RESPONSE".to_string())
}

fn t_features(g: &Guest) -> TestResult {
    let f = ioctl_get_u64(&g.fd, GET_FEATURES).or_fail("GET_FEATURES")?;
    let want = F_VERSION_1 | F_SEQPACKET | F_ACCESS_PLATFORM;
    if f & want != want {
        return Err(format!("features {f:#x} lack {want:#x}"));
    }
    let e = sys::errno_of(&ioctl_u64(&g.fd, SET_FEATURES, F_VERSION_1 | (1 << 50)));
    if e != libc::EOPNOTSUPP {
        return Err(format!("SET_FEATURES with an unknown bit: {}", sys::errno_name(e)));
    }
    let b = ioctl_get_u64(&g.fd, GET_BACKEND_FEATURES).or_fail("GET_BACKEND_FEATURES")?;
    if b != 1 << 1 {
        return Err(format!("backend features {b:#x}, expected IOTLB_MSG_V2 only"));
    }
    let e = sys::errno_of(&ioctl_u64(&g.fd, SET_BACKEND_FEATURES, 1 << 5));
    if e != libc::EOPNOTSUPP {
        return Err(format!("SET_BACKEND_FEATURES with an unknown bit: {}", sys::errno_name(e)));
    }
    Ok(Outcome::Pass)
}

/// The VHOST_VSOCK_SET_GUEST_CID rules, on devices of their own (`cid` is in use by the
/// main guest).
fn t_cid_rules(out: &Out, cid: u32) -> TestResult {
    let a = open_dev().or_fail("open")?;
    let b = open_dev().or_fail("open")?;
    for bad in [0u64, 1, 2, u64::from(u32::MAX), 1 << 32, u64::MAX] {
        let e = sys::errno_of(&ioctl_u64(&a, SET_GUEST_CID, bad));
        if e != libc::EINVAL {
            return Err(format!("SET_GUEST_CID({bad:#x}): {}, expected EINVAL", sys::errno_name(e)));
        }
    }
    let e = sys::errno_of(&ioctl_u64(&a, SET_GUEST_CID, u64::from(cid)));
    if e != libc::EADDRINUSE {
        return Err(format!("SET_GUEST_CID of a CID in use by another device: {}", sys::errno_name(e)));
    }
    let (x, y) = (cid + 100, cid + 101);
    ioctl_u64(&a, SET_GUEST_CID, u64::from(x)).or_fail("SET_GUEST_CID(free)")?;
    ioctl_u64(&a, SET_GUEST_CID, u64::from(x)).or_fail("SET_GUEST_CID(same again)")?;
    let e = sys::errno_of(&ioctl_u64(&b, SET_GUEST_CID, u64::from(x)));
    if e != libc::EADDRINUSE {
        return Err(format!("second device, same CID: {}", sys::errno_name(e)));
    }
    ioctl_u64(&b, SET_GUEST_CID, u64::from(y)).or_fail("SET_GUEST_CID(other)")?;
    // Moving `a` to a new CID frees the old one.
    ioctl_u64(&a, SET_GUEST_CID, u64::from(cid + 102)).or_fail("SET_GUEST_CID(move)")?;
    ioctl_u64(&b, SET_GUEST_CID, u64::from(x)).or_fail("SET_GUEST_CID(freed by move)")?;
    // Closing a device frees its CID.
    drop(a);
    ioctl_u64(&b, SET_GUEST_CID, u64::from(cid + 102)).or_fail("SET_GUEST_CID(freed by close)")?;
    drop(b);
    // Our own CID as a guest (nested: the G2H transport's CID) is refused.
    let local = OpenOptions::new().read(true).open("/dev/vsock").ok().and_then(|f| {
        let f = OwnedFd::from(f);
        sys::ioctl_int(&f, sys::IOCTL_VM_SOCKETS_GET_LOCAL_CID).ok()
    });
    match local.map(|c| c as u32) {
        Some(c) if c > 2 && c != u32::MAX => {
            let d = open_dev().or_fail("open")?;
            let e = sys::errno_of(&ioctl_u64(&d, SET_GUEST_CID, u64::from(c)));
            if e != libc::EADDRINUSE {
                return Err(format!("SET_GUEST_CID(our own guest CID {c}): {}", sys::errno_name(e)));
            }
        }
        c => out.info(format!("cid_rules: local CID {c:?}: no guest CID of our own to refuse")),
    }
    Ok(Outcome::Pass)
}

fn t_connect(e: &mut Env) -> TestResult {
    let host = guest_connect(&mut e.g, &e.l, G_MAIN, P_LISTEN, GUEST_BUF)?;
    let peer = sys::peer_addr(&host).or_fail("getpeername")?;
    if peer.svm_cid != e.g.cid || peer.svm_port != G_MAIN {
        return Err(format!("host sees peer {}:{}", peer.svm_cid, peer.svm_port));
    }
    e.c1 = Some(Conn { host, gport: G_MAIN, hport: P_LISTEN });
    Ok(Outcome::Pass)
}

fn c1(e: &Env) -> Result<&Conn, String> {
    e.c1.as_ref().ok_or_else(|| "no connection (connect failed)".to_string())
}

/// Guest sends `data` on c1 as one RW packet; the host must read exactly it.
fn rw_roundtrip(e: &mut Env, data: &[u8]) -> Result<(), String> {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.len = data.len() as u32;
    e.g.send(&h, data)?;
    let got = read_exact(&c1(e)?.host, data.len())?;
    if got != data {
        return Err("host read different bytes".into());
    }
    Ok(())
}

fn t_g2h(e: &mut Env) -> TestResult {
    pass(rw_roundtrip(e, &pattern(3000, 1)))
}

/// Host sends more than one receive buffer holds: the device splits it over buffers.
fn t_h2g_split(e: &mut Env) -> TestResult {
    let data = pattern(10000, 2);
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let n = sys::send(&c1(e)?.host, &data, 0).or_fail("host send")?;
    if n != data.len() {
        return Err(format!("host sent {n} of {}", data.len()));
    }
    let mut got = Vec::new();
    let mut pkts = 0;
    while got.len() < data.len() {
        let r =
            e.g.recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == gp)?
                .ok_or_else(|| format!("received {} of {} bytes", got.len(), data.len()))?;
        let want =
            Hdr { src_cid: HOST, dst_cid: u64::from(e.g.cid), src_port: hp, dst_port: gp, ty: TYPE_STREAM, ..r.h };
        if r.h != want {
            return Err(format!("RW header {:?}", r.h));
        }
        if r.data.len() > e.g.rx_buf - HDR {
            return Err(format!("packet of {} bytes in a {}-byte buffer", r.data.len(), e.g.rx_buf));
        }
        got.extend_from_slice(&r.data);
        pkts += 1;
    }
    if got != data {
        return Err(format!("guest received different bytes ({} packets)", pkts));
    }
    e.out.info(format!("h2g_split: 10000 bytes in {pkts} packets of at most {} bytes", e.g.rx_buf - HDR));
    Ok(Outcome::Pass)
}

fn t_credit_request(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    e.g.discard(|h| h.op == OP_CREDIT_UPDATE);
    let h = e.g.hdr(OP_CREDIT_REQUEST, gp, hp);
    e.g.send(&h, &[])?;
    let r = e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gp && h.op == OP_CREDIT_UPDATE)?;
    match r {
        Some(r) if r.h.src_port == hp && r.h.src_cid == HOST && r.h.buf_alloc > 0 => Ok(Outcome::Pass),
        Some(r) => Err(format!("bad CREDIT_UPDATE {:?}", r.h)),
        None => Err("no CREDIT_UPDATE answers CREDIT_REQUEST".into()),
    }
}

/// SEQPACKET: a message larger than a receive buffer arrives split, EOM on the last piece.
fn t_seqpacket_split(e: &mut Env) -> TestResult {
    let l = sys::socket(AF_VSOCK, libc::SOCK_SEQPACKET, 0).or_fail("socket")?;
    sys::bind_vm(&l, VMADDR_CID_ANY, P_SEQ).or_fail("bind")?;
    sys::listen(&l, 4).or_fail("listen")?;
    let gp = G_MAIN + 50;
    let mut h = e.g.hdr(OP_REQUEST, gp, P_SEQ);
    h.ty = TYPE_SEQPACKET;
    e.g.send(&h, &[])?;
    let r = e.g.recv_where(Duration::from_secs(5), |x| x.dst_port == gp)?.ok_or("no reply to SEQPACKET REQUEST")?;
    if r.h.op != OP_RESPONSE || r.h.ty != TYPE_SEQPACKET {
        return Err(format!("reply {:?}", r.h));
    }
    let s = accept_within(&l, Duration::from_secs(5))?.ok_or("accept timed out")?;
    let msg = pattern(3000, 3);
    sys::send(&s, &msg, 0).or_fail("send message")?;
    let mut got = Vec::new();
    loop {
        let r =
            e.g.recv_where(Duration::from_secs(5), |x| x.dst_port == gp && x.op == OP_RW)?
                .ok_or_else(|| format!("message incomplete after {} bytes", got.len()))?;
        got.extend_from_slice(&r.data);
        let last = got.len() >= msg.len();
        if (r.h.flags & SEQ_EOM != 0) != last {
            return Err(format!(
                "EOM {} on a piece ending at {} of {}",
                r.h.flags & SEQ_EOM != 0,
                got.len(),
                msg.len()
            ));
        }
        if last {
            break;
        }
    }
    if got != msg {
        return Err("message bytes differ".into());
    }
    // Guest to host message.
    let mut h = e.g.hdr(OP_RW, gp, P_SEQ);
    h.ty = TYPE_SEQPACKET;
    h.flags = SEQ_EOM;
    h.len = 500;
    e.g.send(&h, &pattern(500, 4))?;
    sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
    let mut b = vec![0u8; 1000];
    let n = sys::recv(&s, &mut b, 0).or_fail("recv message")?;
    if b[..n] != pattern(500, 4)[..] {
        return Err(format!("host received a {n}-byte message"));
    }
    let mut h = e.g.hdr(OP_RST, gp, P_SEQ);
    h.ty = TYPE_SEQPACKET;
    e.g.send(&h, &[])?;
    Ok(Outcome::Pass)
}

/// Spoofed source CIDs: nothing may reach a host socket.
fn t_spoofed(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let cid = u64::from(e.g.cid);
    let spoofs = [cid + 1, HOST, 1, 0, u64::from(u32::MAX), cid | 1 << 32, cid + 1000];
    for (i, s) in spoofs.iter().enumerate() {
        let mut h = e.g.hdr(OP_REQUEST, 41000 + i as u32, P_LISTEN);
        h.src_cid = *s;
        e.g.send(&h, &[])?;
        let mut h = e.g.hdr(OP_RW, gp, hp);
        h.src_cid = *s;
        h.len = 8;
        e.g.send(&h, b"spoofed!")?;
    }
    if let Some(s) = accept_within(&e.l, ms(300))? {
        let p = sys::peer_addr(&s).ok();
        return Err(format!("a spoofed REQUEST was accepted (peer {p:?})"));
    }
    expect_no_data(&c1(e)?.host, ms(300), "spoofed RW")?;
    // Whatever the host answered must not have come back to us under our CID/ports.
    e.g.expect_none(ms(200), "spoofed", |h| h.dst_port >= 41000 && h.dst_port < 41000 + spoofs.len() as u32)?;
    pass(rw_roundtrip(e, b"still fine"))
}

/// Packets not addressed to the host: dropped, not answered.
fn t_misaddressed(e: &mut Env) -> TestResult {
    let cid = u64::from(e.g.cid);
    let dsts = [1, 0, 3, cid, u64::from(u32::MAX), HOST | 1 << 32, cid + 1];
    for (i, d) in dsts.iter().enumerate() {
        let mut h = e.g.hdr(OP_REQUEST, 42000 + i as u32, P_LISTEN);
        h.dst_cid = *d;
        e.g.send(&h, &[])?;
    }
    if accept_within(&e.l, ms(300))?.is_some() {
        return Err("a misaddressed REQUEST was accepted".into());
    }
    e.g.expect_none(ms(200), "misaddressed", |h| h.dst_port >= 42000 && h.dst_port < 42000 + dsts.len() as u32)?;
    Ok(Outcome::Pass)
}

/// Truncated chains and headers that claim more than the chain holds: dropped.
fn t_truncated(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let mut kept = 0;
    let mut count = |s: Sent| {
        if s == Sent::Kept {
            kept += 1
        }
    };
    let full = e.g.hdr(OP_RW, gp, hp).encode();
    // Shorter than a header.
    count(e.g.send_chain(&[(&full[..20], false)], ms(300))?);
    count(e.g.send_chain(&[(&full[..0], false)], ms(300))?);
    // Header says 1000 bytes, chain holds 500.
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.len = 1000;
    let hb = h.encode();
    let half = pattern(500, 5);
    count(e.g.send_chain(&[(&hb, false), (&half, false)], ms(300))?);
    // Header says 1 byte, chain holds none.
    h.len = 1;
    let hb1 = h.encode();
    count(e.g.send_chain(&[(&hb1, false)], ms(300))?);
    expect_no_data(&c1(e)?.host, ms(300), "truncated")?;
    // A header split over two descriptors and a payload over three is fine.
    h.len = 300;
    let hb = h.encode();
    let p = pattern(300, 6);
    match e.g.send_chain(
        &[(&hb[..10], false), (&hb[10..], false), (&p[..1], false), (&p[1..200], false), (&p[200..], false)],
        Duration::from_secs(10),
    )? {
        Sent::Returned => {}
        Sent::Kept => return Err("a valid fragmented packet was not returned".into()),
    }
    let got = read_exact(&c1(e)?.host, 300)?;
    if got != p {
        return Err("fragmented packet: host read different bytes".into());
    }
    e.out.info(format!("truncated: {kept} of 4 dropped chains were not returned to the guest"));
    Ok(Outcome::Pass)
}

/// Lengths above 64 KiB are dropped; exactly 64 KiB is delivered.
fn t_oversized(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let big = pattern(MAX_PKT + 1, 7);
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.len = (MAX_PKT + 1) as u32;
    let hb = h.encode();
    e.g.send_chain(&[(&hb, false), (&big, false)], ms(500))?;
    h.len = u32::MAX;
    let hb = h.encode();
    e.g.send_chain(&[(&hb, false), (&big[..100], false)], ms(300))?;
    expect_no_data(&c1(e)?.host, ms(300), "oversized")?;
    pass(rw_roundtrip(e, &big[..MAX_PKT]))
}

/// Device-writable descriptors in a TX chain: dropped.
fn t_bad_chain(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.len = 4;
    let hb = h.encode();
    // (A readable descriptor after a writable one breaks the ring for good: see bad_ring.)
    e.g.send_chain(&[(&hb, false), (b"evil", true)], ms(300))?;
    e.g.send_chain(&[(&hb, true)], ms(300))?;
    expect_no_data(&c1(e)?.host, ms(300), "writable descriptors")?;
    pass(rw_roundtrip(e, b"after bad chains"))
}

/// Unknown ops and types, control ops with payload: at most an RST comes back, the host
/// socket sees nothing, and the connection keeps working.
fn t_nonsense(e: &mut Env) -> TestResult {
    let (gp, hp) = {
        let c = c1(e)?;
        (c.gport, c.hport)
    };
    let cases: [(u16, u16, u32); 7] = [
        (TYPE_STREAM, 0, 0),
        (TYPE_STREAM, 99, 0),
        (TYPE_STREAM, u16::MAX, 0),
        (3, OP_RW, 4),
        (9, OP_REQUEST, 0),
        (0, OP_RW, 4),
        (TYPE_STREAM, OP_CREDIT_UPDATE, 4),
    ];
    for (ty, op, len) in cases {
        let mut h = e.g.hdr(op, gp, hp);
        h.ty = ty;
        h.len = len;
        e.g.send(&h, &b"junk"[..len as usize])?;
    }
    // Garbage flags on an RW are ignored.
    let mut h = e.g.hdr(OP_RW, gp, hp);
    h.flags = u32::MAX;
    h.len = 3;
    e.g.send(&h, b"abc")?;
    let got = read_exact(&c1(e)?.host, 3)?;
    if got != b"abc" {
        return Err("RW with garbage flags: wrong bytes".into());
    }
    expect_no_data(&c1(e)?.host, ms(200), "nonsense")?;
    // Any answer is an RST to our port.
    e.g.poll_rx()?;
    let mut rsts = 0;
    for r in e.g.inbox.iter().filter(|r| r.h.dst_port == gp && r.h.op != OP_CREDIT_UPDATE) {
        if r.h.op != OP_RST || r.h.src_port != hp || r.h.src_cid != HOST {
            return Err(format!("answer to nonsense: {:?}", r.h));
        }
        rsts += 1;
    }
    e.g.discard(|h| h.dst_port == gp && (h.op == OP_RST || h.op == OP_CREDIT_UPDATE));
    e.out.info(format!("nonsense: {rsts} RST answers to {} nonsense packets", cases.len()));
    pass(rw_roundtrip(e, b"after nonsense"))
}

/// Credit: the host respects a small guest buffer; bogus credit updates and a guest that
/// overruns the host's buffer break nothing.
fn t_credit(e: &mut Env) -> TestResult {
    let l = listener(P_CREDIT, 4)?;
    let gp = G_MAIN + 100;
    let s = guest_connect(&mut e.g, &l, gp, P_CREDIT, 4096)?;
    sys::set_nonblocking(&s, true).or_fail("nonblock")?;
    let data = pattern(20000, 8);
    let mut sent = 0;
    while sent < data.len() {
        match sys::send(&s, &data[sent..], 0) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
        thread::sleep(ms(1));
        if sent >= 4096 {
            break;
        }
    }
    thread::sleep(ms(300));
    let mut got = 0usize;
    while let Some(r) = e.g.recv_where(ms(200), |h| h.dst_port == gp && h.op == OP_RW)? {
        got += r.data.len();
    }
    if got > 4096 {
        return Err(format!("host sent {got} bytes into a 4096-byte guest buffer"));
    }
    // Bogus credit: fwd_cnt far beyond what was sent, maximal buffer.
    for (fwd, alloc) in [(0xFFFF_0000u32, 4096u32), (u32::MAX, u32::MAX), (0x8000_0000, 1)] {
        let mut h = e.g.hdr(OP_CREDIT_UPDATE, gp, P_CREDIT);
        h.fwd_cnt = fwd;
        h.buf_alloc = alloc;
        e.g.send(&h, &[])?;
    }
    while e.g.recv_where(ms(200), |h| h.dst_port == gp && h.op == OP_RW)?.is_some() {}
    // Overrun the host: 5 x 64 KiB without the host reading (its buffer is 256 KiB).
    let chunk = pattern(MAX_PKT, 9);
    for _ in 0..5 {
        let mut h = e.g.hdr(OP_RW, gp, P_CREDIT);
        h.len = MAX_PKT as u32;
        e.g.send(&h, &chunk)?;
    }
    thread::sleep(ms(200));
    let mut total = 0usize;
    let mut b = vec![0u8; MAX_PKT];
    loop {
        match sys::recv(&s, &mut b, libc::MSG_DONTWAIT) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(_) => break,
        }
    }
    let cap = 256 * 1024;
    if total > cap {
        return Err(format!("host socket queued {total} bytes, above its {cap}-byte buffer"));
    }
    e.out.info(format!("credit: host sent {got} bytes with 4096 credit; took {total} of 327680 overrun bytes"));
    let h = e.g.hdr(OP_RST, gp, P_CREDIT);
    e.g.send(&h, &[])?;
    e.g.discard(|h| h.dst_port == gp);
    Ok(Outcome::Pass)
}

/// One-byte writes to a guest that stops taking receive buffers: the packets the host queues
/// for it are charged to the writing socket, so its writes stop (EAGAIN) once about a credit
/// window of packet memory waits in the device, not after a credit window of payload bytes
/// (256 KiB of one-byte packets: 262,144 allocations). Then the guest drains: every byte
/// arrives in order and the writer is woken.
fn t_small_writes(e: &mut Env) -> TestResult {
    // rvsock stops near 2,048 + NUM one-byte packets (128-byte allocations in a 256 KiB
    // window plus the posted buffers); a stack that bounds only payload bytes goes on.
    const LIMIT: usize = 16384;
    let l = listener(P_SMALL, 4)?;
    let gp = G_MAIN + 200;
    let s = guest_connect(&mut e.g, &l, gp, P_SMALL, GUEST_BUF)?;
    sys::set_nonblocking(&s, true).or_fail("nonblock")?;
    let data = pattern(LIMIT, 5);
    let slab0 = crate::regress::slab_bytes()?;
    let mut sent = 0;
    // The guest takes nothing meanwhile: its 64 posted buffers fill, the rest waits.
    let t0 = Instant::now();
    while sent < LIMIT && t0.elapsed() < Duration::from_secs(20) {
        match sys::send(&s, &data[sent..sent + 1], libc::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                // Full, unless the device was still taking packets into posted buffers.
                let ev = sys::poll_one(&s, libc::POLLOUT, ms(200)).or_fail("poll")?;
                if ev & libc::POLLOUT == 0 {
                    break;
                }
            }
            Err(err) => return Err(format!("send {}: {}", sent + 1, sys::describe(&err))),
        }
    }
    let grew = crate::regress::slab_bytes()?.saturating_sub(slab0);
    e.out.info(format!(
        "small writes: {sent} one-byte writes before EAGAIN, Slab +{} KiB",
        grew >> 10
    ));
    let bounded = sent < LIMIT;
    if bounded {
        // Drain: every byte, in order, then the writer is writable again.
        let mut got = Vec::with_capacity(sent);
        let t1 = Instant::now();
        while got.len() < sent && t1.elapsed() < Duration::from_secs(20) {
            if let Some(r) = e.g.recv_where(ms(200), |h| h.dst_port == gp && h.op == OP_RW)? {
                got.extend_from_slice(&r.data);
            }
        }
        if got.len() != sent || got[..] != data[..sent] {
            return Err(format!("guest got {} of {sent} bytes (or out of order)", got.len()));
        }
        let ev = sys::poll_one(&s, libc::POLLOUT, Duration::from_secs(2)).or_fail("poll")?;
        if ev & libc::POLLOUT == 0 {
            return Err("writer not writable after the guest took everything".into());
        }
    }
    let h = e.g.hdr(OP_RST, gp, P_SMALL);
    e.g.send(&h, &[])?;
    thread::sleep(ms(100));
    e.g.discard(|h| h.dst_port == gp);
    if !bounded {
        let why = format!("{sent} one-byte packets queued for a guest that takes none, Slab +{} KiB", grew >> 10);
        // The in-tree stack bounds payload bytes only (an skb per write).
        let intree = std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.lines().any(|l| l.starts_with("vhost_vsock ")));
        return if intree { Ok(Outcome::Skip(format!("in-tree stack: {why}"))) } else { Err(why) };
    }
    Ok(Outcome::Pass)
}

/// Connect and reset storms: every REQUEST is answered (RESPONSE or RST), RSTs are never
/// answered, and the device keeps up when replies outnumber receive buffers.
fn t_storm(e: &mut Env) -> TestResult {
    const N: u32 = 200;
    let base = 50000;
    let l = listener(P_STORM, 8)?;
    for i in 0..N {
        let h = e.g.hdr(OP_REQUEST, base + i, P_STORM);
        e.g.send(&h, &[])?;
    }
    let (mut resp, mut rst) = (0, 0);
    for _ in 0..N {
        let r =
            e.g.recv_where(Duration::from_secs(10), |h| {
                h.dst_port >= base && h.dst_port < base + N && h.src_port == P_STORM && h.op != OP_CREDIT_UPDATE
            })?
            .ok_or_else(|| format!("only {} of {N} REQUESTs answered", resp + rst))?;
        match r.h.op {
            OP_RESPONSE => resp += 1,
            OP_RST => rst += 1,
            op => return Err(format!("REQUEST answered with op {op}")),
        }
    }
    e.out.info(format!("storm: {resp} RESPONSE, {rst} RST for {N} REQUESTs to a backlog-8 listener"));
    for i in 0..N {
        let h = e.g.hdr(OP_RST, base + i, P_STORM);
        e.g.send(&h, &[])?;
    }
    // Nobody listens here: one RST each.
    for i in 0..N {
        let h = e.g.hdr(OP_REQUEST, base + N + i, P_NOBODY);
        e.g.send(&h, &[])?;
    }
    for k in 0..N {
        let r =
            e.g.recv_where(Duration::from_secs(10), |h| h.src_port == P_NOBODY)?
                .ok_or_else(|| format!("only {k} of {N} REQUESTs to a closed port answered"))?;
        if r.h.op != OP_RST || r.h.dst_port < base + N || r.h.dst_port >= base + 2 * N {
            return Err(format!("answer from a closed port: {:?}", r.h));
        }
    }
    // RSTs to nothing are never answered.
    for i in 0..N {
        let h = e.g.hdr(OP_RST, base + 2 * N + i, 2000 + i);
        e.g.send(&h, &[])?;
    }
    e.g.expect_none(ms(300), "RST storm", |h| h.dst_port >= base + 2 * N && h.dst_port < base + 3 * N)?;
    // The children that were queued are dead now; accepting them must not hang.
    let mut accepted = 0;
    while let Some(c) = accept_within(&l, ms(100))? {
        accepted += 1;
        let mut b = [0u8; 8];
        sys::set_io_timeout(&c, ms(500)).or_fail("timeout")?;
        if let Ok(n) = sys::recv(&c, &mut b, 0) {
            if n > 0 {
                return Err("a reset connection delivered data".into());
            }
        }
    }
    e.g.discard(|h| h.dst_port >= base && h.dst_port < base + 3 * N);
    e.out.info(format!("storm: accepted {accepted} reset children"));
    pass(rw_roundtrip(e, b"after storm"))
}

/// The host connects to the guest: REQUEST arrives on the right device, RESPONSE
/// completes the connect, data flows both ways.
pub(crate) fn host_connect_to(g: &mut Guest, gport: u32) -> Result<(OwnedFd, u32), String> {
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    match sys::connect_vm(&s, g.cid, gport) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(format!("connect: {}", sys::describe(&e))),
    }
    let r = g
        .recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
        .ok_or("no REQUEST reached the guest")?;
    if r.h.src_cid != HOST || r.h.dst_cid != u64::from(g.cid) || r.h.ty != TYPE_STREAM {
        return Err(format!("REQUEST {:?}", r.h));
    }
    let hport = r.h.src_port;
    let h = g.hdr(OP_RESPONSE, gport, hport);
    g.send(&h, &[])?;
    let ev = sys::poll_one(&s, libc::POLLOUT, Duration::from_secs(5)).or_fail("poll")?;
    let err = sys::so_error(&s).or_fail("SO_ERROR")?;
    if ev & libc::POLLOUT == 0 || err != 0 {
        return Err(format!("connect did not complete (revents {ev:#x}, SO_ERROR {})", sys::errno_name(err)));
    }
    sys::set_nonblocking(&s, false).or_fail("blocking")?;
    sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
    Ok((s, hport))
}

fn t_host_connect(e: &mut Env) -> TestResult {
    let (s, hport) = host_connect_to(&mut e.g, G_LISTEN)?;
    sys::send(&s, b"hello", 0).or_fail("send")?;
    let r = e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == G_LISTEN && h.op == OP_RW)?.ok_or("no data")?;
    if r.data != b"hello" {
        return Err(format!("guest got {:?}", r.data));
    }
    let mut h = e.g.hdr(OP_RW, G_LISTEN, hport);
    h.len = 5;
    e.g.send(&h, b"world")?;
    if read_exact(&s, 5)? != b"world" {
        return Err("host got different bytes".into());
    }
    // Orderly close from the guest: the host reads EOF.
    let mut h = e.g.hdr(OP_SHUTDOWN, G_LISTEN, hport);
    h.flags = 3;
    e.g.send(&h, &[])?;
    let mut b = [0u8; 8];
    match sys::recv(&s, &mut b, 0) {
        Ok(0) => {}
        r => return Err(format!("after SHUTDOWN the host read {r:?}")),
    }
    drop(s);
    let _ = e.g.recv_where(Duration::from_secs(2), |h| h.dst_port == G_LISTEN && h.op == OP_RST)?;
    e.g.discard(|h| h.dst_port == G_LISTEN);
    Ok(Outcome::Pass)
}

/// The guest answers a host's blocking connect with RESPONSE and, in the same batch, a full
/// SHUTDOWN (a server that accepts and closes at once). Both are delivered before the
/// connecting task runs again: connect() must still succeed and the host then reads EOF.
/// (In-tree, connect then waits for an ESTABLISHED state that is gone and fails with
/// ETIMEDOUT: reported as a skip on the C reference.)
fn t_connect_then_close(e: &mut Env) -> TestResult {
    let gport = G_LISTEN + 20;
    let mut last = String::new();
    for round in 0..3 {
        let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
        let cid = e.g.cid;
        let t = thread::spawn(move || {
            let r = sys::connect_vm(&s, cid, gport);
            (s, r)
        });
        let r =
            e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
                .ok_or("no REQUEST reached the guest")?;
        let hport = r.h.src_port;
        let mut sh = e.g.hdr(OP_SHUTDOWN, gport, hport);
        sh.flags = 3;
        e.g.send_batch(&[e.g.hdr(OP_RESPONSE, gport, hport), sh])?;
        let (s, r) = t.join().map_err(|_| "connect thread panicked".to_string())?;
        let _ = e.g.recv_where(Duration::from_secs(2), |h| h.dst_port == gport && h.op == OP_RST)?;
        e.g.discard(|h| h.dst_port == gport);
        match r {
            Ok(()) => {
                sys::set_io_timeout(&s, Duration::from_secs(5)).or_fail("timeout")?;
                let mut b = [0u8; 8];
                match sys::recv(&s, &mut b, 0) {
                    Ok(0) => {}
                    r => return Err(format!("round {round}: after connect + SHUTDOWN the host read {r:?}")),
                }
            }
            Err(err) => last = format!("round {round}: connect: {}", sys::describe(&err)),
        }
    }
    if last.is_empty() {
        Ok(Outcome::Pass)
    } else if std::fs::read_to_string("/proc/modules").unwrap_or_default().contains("rvsock_vhost ") {
        Err(last)
    } else {
        Ok(Outcome::Skip(format!("in-tree stack: {last}")))
    }
}

/// The host closes a connection whose (fake) guest never answers the SHUTDOWN with an RST,
/// so the closed socket lingers holding its port; binding that port again must work at once,
/// and the lingering connection is reset towards the guest. (In-tree answers EADDRINUSE for
/// up to 8 s: reported as a skip on the C reference.)
fn t_rebind_lingering(e: &mut Env) -> TestResult {
    let gport = G_LISTEN + 30;
    let hport = 0x7e57_0001;
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    sys::bind_vm(&s, VMADDR_CID_ANY, hport).or_fail("bind")?;
    match sys::connect_vm(&s, e.g.cid, gport) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(format!("connect: {}", sys::describe(&err))),
    }
    e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_REQUEST)?
        .ok_or("no REQUEST reached the guest")?;
    e.g.send(&e.g.hdr(OP_RESPONSE, gport, hport), &[])?;
    let ev = sys::poll_one(&s, libc::POLLOUT, Duration::from_secs(5)).or_fail("poll")?;
    if ev & libc::POLLOUT == 0 {
        return Err("connect did not complete".into());
    }
    drop(s);
    e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.op == OP_SHUTDOWN)?
        .ok_or("close sent no SHUTDOWN")?;
    // No RST from the guest: the closed socket waits for it, holding the port.
    let s2 = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    let r = match sys::bind_vm(&s2, VMADDR_CID_ANY, hport) {
        Ok(()) => {
            e.g.recv_where(Duration::from_secs(5), |h| h.dst_port == gport && h.src_port == hport && h.op == OP_RST)?
                .ok_or("the lingering connection was not reset towards the guest")?;
            Ok(Outcome::Pass)
        }
        Err(err) if std::fs::read_to_string("/proc/modules").unwrap_or_default().contains("rvsock ") => {
            Err(format!("bind of the lingering socket's port: {}", sys::describe(&err)))
        }
        Err(err) => Ok(Outcome::Skip(format!("in-tree stack: bind: {}", sys::describe(&err)))),
    };
    e.g.discard(|h| h.dst_port == gport);
    r
}

/// Two guests at once: packets go to the device of their destination CID only; another
/// guest cannot inject into (or reset) a connection, not even with its own valid CID;
/// closing a device resets the host's connections to it.
fn t_multi_guest(e: &mut Env) -> TestResult {
    let mut b = Guest::new(e.g.cid + 1, 4096)?;
    let bport = G_LISTEN + 10;
    let (s, hport) = host_connect_to(&mut b, bport)?;
    e.g.expect_none(ms(200), "routing", |h| h.dst_port == bport || h.src_port == hport)?;
    // Guest A (correctly addressed, its own CID) targets the host's connection to guest B,
    // once from B's port and once from another.
    for sport in [bport, bport + 1] {
        let mut h = e.g.hdr(OP_RW, sport, hport);
        h.len = 8;
        e.g.send(&h, b"injected")?;
        let h = e.g.hdr(OP_RST, sport, hport);
        e.g.send(&h, &[])?;
    }
    expect_no_data(&s, ms(300), "injection from another guest")?;
    // The connection to B is intact.
    let mut h = b.hdr(OP_RW, bport, hport);
    h.len = 2;
    b.send(&h, b"ok")?;
    if read_exact(&s, 2)? != b"ok" {
        return Err("the connection to guest B lost its data".into());
    }
    e.g.discard(|h| h.src_port == hport);
    drop(b);
    let ev = sys::poll_one(&s, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
    if ev & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
        return Err("closing the device did not wake its host socket".into());
    }
    let mut buf = [0u8; 8];
    match sys::recv(&s, &mut buf, libc::MSG_DONTWAIT) {
        Ok(0) => {}
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => return Err(format!("host socket after the device closed: recv {r:?}")),
    }
    // No device for that CID any more: connecting fails at once with ENODEV (in-tree).
    connect_enodev(e.g.cid + 1)?;
    Ok(Outcome::Pass)
}

/// `net.vsock.g2h_fallback` (Linux 7.x; rvsock on every kernel line): 1 (the default) sends a
/// connect to a CID that no local vhost device has to the host over the guest's own transport.
const G2H_FALLBACK: &str = "/proc/sys/net/vsock/g2h_fallback";

/// A connect from a nested host (a guest that runs guests) to `cid`, which none of its vhost
/// devices has. Without the g2h_fallback setting (the 6.12 in-tree stack), and with it 0, it
/// fails at once with ENODEV; with it 1, the request goes to the host over the guest's
/// transport (in-tree 7.x), which has no such CID either: not ENODEV, and nothing connects.
fn connect_no_device(cid: u32) -> Result<(), String> {
    let Ok(saved) = std::fs::read_to_string(G2H_FALLBACK) else { return connect_enodev(cid) };
    let set = |v: &str| std::fs::write(G2H_FALLBACK, v).map_err(|e| format!("write {G2H_FALLBACK} = {v}: {e}"));
    let r = set("0").and_then(|()| connect_enodev(cid)).map_err(|e| format!("g2h_fallback 0: {e}"));
    let r = r.and_then(|()| set("1")).and_then(|()| connect_to_host_fallback(cid));
    set(saved.trim())?;
    r
}

fn connect_to_host_fallback(cid: u32) -> Result<(), String> {
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    match sys::connect_vm(&c, cid, G_LISTEN) {
        Ok(()) => Err(format!("g2h_fallback 1: connected to CID {cid}, which nobody has")),
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {
            Err(format!("g2h_fallback 1: connect to CID {cid}: ENODEV, expected the request to go to the host"))
        }
        Err(_) => Ok(()),
    }
}

/// A connect to `cid`, which has no vhost device, fails at once with ENODEV, as in-tree
/// (the transport refuses the REQUEST), and the socket can connect again afterwards.
fn connect_enodev(cid: u32) -> Result<(), String> {
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    for attempt in 0..2 {
        let t0 = Instant::now();
        match sys::connect_vm(&c, cid, G_LISTEN) {
            Ok(()) => return Err(format!("connected to CID {cid}, which has no device")),
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) && t0.elapsed() < Duration::from_secs(1) => {}
            Err(err) => {
                return Err(format!(
                    "connect {attempt} to CID {cid} without a device: {} after {:?}, expected ENODEV at once",
                    sys::describe(&err),
                    t0.elapsed()
                ))
            }
        }
    }
    Ok(())
}

/// `vhost-cid --cid C --own G`: the CID rules on a host that is itself a guest with CID `G`
/// (its G2H transport is up): `G` is refused with EADDRINUSE like a CID of another guest,
/// `C` is taken, and a connect to a CID without a device fails with ENODEV.
pub fn run_cid(a: &Args) -> Result<(), String> {
    let cid = a.u32_req("cid")?;
    let own = a.u32_req("own")?;
    a.check_unused()?;
    let out = Out::default();
    let r = (|| -> TestResult {
        let local = OpenOptions::new().read(true).open("/dev/vsock").or_fail("open /dev/vsock")?;
        let local = sys::ioctl_int(&OwnedFd::from(local), sys::IOCTL_VM_SOCKETS_GET_LOCAL_CID)
            .or_fail("IOCTL_VM_SOCKETS_GET_LOCAL_CID")? as u32;
        if local != own {
            return Err(format!("local CID is {local}, expected our guest CID {own}"));
        }
        let a = open_dev().or_fail("open")?;
        let e = sys::errno_of(&ioctl_u64(&a, SET_GUEST_CID, u64::from(own)));
        if e != libc::EADDRINUSE {
            return Err(format!("SET_GUEST_CID(our own guest CID {own}): {}, expected EADDRINUSE", sys::errno_name(e)));
        }
        ioctl_u64(&a, SET_GUEST_CID, u64::from(cid)).or_fail("SET_GUEST_CID(free)")?;
        let b = open_dev().or_fail("open")?;
        let e = sys::errno_of(&ioctl_u64(&b, SET_GUEST_CID, u64::from(cid)));
        if e != libc::EADDRINUSE {
            return Err(format!("second device, same CID: {}, expected EADDRINUSE", sys::errno_name(e)));
        }
        Ok(Outcome::Pass)
    })();
    out.result("vhost-cid.own_guest_cid", &r);
    out.result("vhost-cid.connect_enodev", &connect_no_device(cid + 1).map(|()| Outcome::Pass));
    Ok(())
}

/// Broken rings (descriptors outside guest memory, loops) on a throwaway device: the
/// device reports the error and nothing else happens.
/// Dirty logging (migration): with `VHOST_F_LOG_ALL` on, the device marks every guest page
/// it writes in the VMM's log (one bit per 4 KiB page of guest memory), so a page written
/// while the VMM copies memory is copied again. A second guest (CID `cid`) connects, the host
/// sends it data, and the pages of its receive buffers must be marked. (In-tree vhost_vsock
/// passes a NULL log for the buffers it fills, so only rvsock passes; a skip on the C
/// reference.)
fn t_dirty_log(e: &mut Env, cid: u32) -> TestResult {
    const PAGE: u64 = 4096;
    let bitmap = GuestMem::new(4096).or_fail("mmap log")?;
    // Guest addresses are our own addresses (the memory table maps them 1:1): bias the base
    // so that the bits of our guest memory's pages land in `bitmap`.
    let bm = bitmap.addr(0);
    let mut g = Guest::with_log(cid, 1024, |mem| bm.wrapping_sub(mem / PAGE / 8))?;
    let base_page = g.mem.addr(0) / PAGE;
    let host = guest_connect(&mut g, &e.l, 7001, P_LISTEN, GUEST_BUF)?;
    bitmap.write(0, &[0u8; 4096]).ok_or("clear log")?;
    let data = pattern(3000, 9);
    sys::send(&host, &data, 0).or_fail("host send")?;
    let mut got = Vec::new();
    while got.len() < data.len() {
        let r = g
            .recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == 7001)?
            .ok_or_else(|| format!("guest received {} of {} bytes", got.len(), data.len()))?;
        got.extend_from_slice(&r.data);
    }
    let log = bitmap.read(0, 4096).ok_or("read log")?;
    let marked = |page: u64| {
        let i = page - base_page + base_page % 8;
        log.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0)
    };
    let first = (g.mem.addr(RX_BUFS) / PAGE) as u64;
    let last = (g.mem.addr(RX_BUFS + usize::from(NUM) * g.rx_buf - 1) / PAGE) as u64;
    let n = (first..=last).filter(|p| marked(*p)).count();
    e.out.info(format!("dirty_log: {n} of {} receive-buffer pages marked after 3000 bytes host to guest", last - first + 1));
    if n > 0 {
        return Ok(Outcome::Pass);
    }
    let intree = std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.lines().any(|l| l.starts_with("vhost_vsock ")));
    if intree {
        return Ok(Outcome::Skip("in-tree vhost_vsock logs no page it writes into guest buffers (NULL log)".into()));
    }
    Err("no receive-buffer page marked dirty: a migration would lose the data written there".into())
}

fn t_bad_ring(e: &mut Env) -> TestResult {
    let mut b = Guest::new(e.g.cid + 2, 4096)?;
    // TX descriptor pointing outside the memory table.
    b.tx.set_desc(&b.mem, 0, 0x1000, 64, 0, 0).ok_or("desc")?;
    b.tx.publish(&b.mem, 0).ok_or("publish")?;
    b.kick(1)?;
    let t0 = Instant::now();
    while !b.error_signalled(1) {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err("no error signalled for a descriptor outside guest memory".into());
        }
        thread::sleep(ms(5));
    }
    // RX side: a descriptor loop while the host has something to send.
    let mut c = Guest::new(e.g.cid + 3, 4096)?;
    for i in 0..NUM {
        let _ = c.rx.set_desc(&c.mem, i, c.mem.addr(RX_BUFS), 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, i);
    }
    let s = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    let _ = sys::connect_vm(&s, c.cid, G_LISTEN);
    c.kick(0)?;
    // TX: a readable descriptor after a writable one (vhost refuses the chain).
    let hb = c.hdr(OP_RW, 1, 2).encode();
    c.send_chain(&[(&hb, true), (b"evil", false)], ms(300))?;
    thread::sleep(ms(500));
    e.out.info(format!(
        "bad_ring: rx error signalled: {}, tx error signalled: {}",
        c.error_signalled(0),
        c.error_signalled(1)
    ));
    drop(c);
    drop(b);
    drop(s);
    pass(rw_roundtrip(e, b"after bad rings"))
}

/// A VMM moves a running device to another CID, as a migration destination would (stop,
/// VHOST_VSOCK_SET_GUEST_CID, start): the host's connections to the old CID are reset
/// (ECONNRESET, not an end of file), a packet the guest still sends from the old CID is
/// dropped unanswered, the old CID is unreachable, the new one takes connections.
fn t_cid_change(e: &mut Env) -> TestResult {
    let (old, new) = (e.g.cid + 60, e.g.cid + 61);
    let mut g = Guest::new(old, 4096)?;
    let (s, hport) = host_connect_to(&mut g, G_LISTEN)?;
    sys::send(&s, b"before", 0).or_fail("send")?;
    g.recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == G_LISTEN)?.ok_or("no data before the move")?;
    // Data the host has queued for reading when the move comes is not delivered after it.
    let mut h = g.hdr(OP_RW, G_LISTEN, hport);
    h.len = 4;
    g.send(&h, b"lost")?;
    let ev = sys::poll_one(&s, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
    if ev & libc::POLLIN == 0 {
        return Err("the guest's data did not reach the host".into());
    }
    let mut off = 0i32.to_ne_bytes();
    sys::ioctl_buf(&g.fd, SET_RUNNING, &mut off).or_fail("SET_RUNNING 0")?;
    ioctl_u64(&g.fd, SET_GUEST_CID, u64::from(new)).or_fail("SET_GUEST_CID(new)")?;
    let mut on = 1i32.to_ne_bytes();
    sys::ioctl_buf(&g.fd, SET_RUNNING, &mut on).or_fail("SET_RUNNING 1")?;
    let mut b = [0u8; 8];
    match sys::recv(&s, &mut b, libc::MSG_DONTWAIT) {
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => {
            let intree = std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.lines().any(|l| l.starts_with("vhost_vsock ")));
            if intree {
                return Ok(Outcome::Skip(format!(
                    "in-tree vhost_vsock keeps the host's connections to the old CID (recv: {r:?})"
                )));
            }
            return Err(format!("host recv after the device moved to another CID: {r:?}, expected ECONNRESET"));
        }
    }
    match sys::send(&s, b"x", 0) {
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => return Err(format!("host send after the move: {r:?}, expected ECONNRESET")),
    }
    // The guest still talks from the old CID (it has not seen its TRANSPORT_RESET yet).
    let mut h = g.hdr(OP_RW, G_LISTEN, hport);
    h.src_cid = u64::from(old);
    h.len = 5;
    g.send(&h, b"stale")?;
    let mut h = g.hdr(OP_REQUEST, 42000, P_LISTEN);
    h.src_cid = u64::from(old);
    g.send(&h, &[])?;
    if let Some(a) = accept_within(&e.l, ms(300))? {
        let p = sys::peer_addr(&a).ok();
        return Err(format!("a REQUEST from the old CID was accepted (peer {p:?})"));
    }
    g.expect_none(ms(200), "after the move", |h| h.dst_port == G_LISTEN || h.dst_port == 42000)?;
    let t = sys::socket(AF_VSOCK, libc::SOCK_STREAM, 0).or_fail("socket")?;
    match sys::connect_vm(&t, old, G_LISTEN) {
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {}
        r => return Err(format!("connect to the old CID {old}: {r:?}, expected ENODEV")),
    }
    g.cid = new;
    let (s2, _) = host_connect_to(&mut g, G_LISTEN)?;
    sys::send(&s2, b"after", 0).or_fail("send after")?;
    let r = g.recv_where(Duration::from_secs(5), |h| h.op == OP_RW && h.dst_port == G_LISTEN)?.ok_or("no data at the new CID")?;
    if r.h.dst_cid != u64::from(new) || r.data != b"after" {
        return Err(format!("at the new CID the guest got {:?} {:?}", r.h, r.data));
    }
    Ok(Outcome::Pass)
}

/// Closing the device resets the host's connections to the guest.
fn t_release(e: Env) -> TestResult {
    let Env { g, c1, .. } = e;
    let c = c1.ok_or("no connection")?;
    drop(g);
    let ev = sys::poll_one(&c.host, libc::POLLIN, Duration::from_secs(5)).or_fail("poll")?;
    if ev & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
        return Err("host socket not woken when the device closed".into());
    }
    let mut b = [0u8; 8];
    match sys::recv(&c.host, &mut b, libc::MSG_DONTWAIT) {
        Ok(0) => {}
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => {}
        r => return Err(format!("recv after the device closed: {r:?}")),
    }
    match sys::send(&c.host, b"x", 0) {
        Err(err) if matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)) => {
            Ok(Outcome::Pass)
        }
        r => Err(format!("send after the device closed: {r:?}")),
    }
}

/// One check on the main guest.
type Check = fn(&mut Env) -> TestResult;

pub fn run(a: &Args) -> Result<(), String> {
    let cid = a.u32_or("cid", 3)?;
    let rx_buf = a.usize_or("rx-buf", 1024)?;
    a.check_unused()?;
    if !(3..u32::MAX - 200).contains(&cid) {
        return Err("--cid must be between 3 and 2^32-200".into());
    }
    let out = Out::default();
    let name = |t: &str| format!("vhost-hostile.{t}");
    let g = match Guest::new(cid, rx_buf) {
        Ok(g) => g,
        Err(err) => {
            out.result(&name("setup"), &Err(err));
            return Ok(());
        }
    };
    out.result(&name("setup"), &Ok(Outcome::Pass));
    out.result(&name("features"), &t_features(&g));
    out.result(&name("cid_rules"), &t_cid_rules(&out, cid));
    let l = match listener(P_LISTEN, 16) {
        Ok(l) => l,
        Err(err) => {
            out.result(&name("listener"), &Err(err));
            return Ok(());
        }
    };
    let mut e = Env { out: out.clone(), g, l, c1: None };
    let checks: [(&str, Check); 17] = [
        ("connect", t_connect),
        ("g2h_data", t_g2h),
        ("h2g_split", t_h2g_split),
        ("credit_request", t_credit_request),
        ("seqpacket_split", t_seqpacket_split),
        ("spoofed_src", t_spoofed),
        ("misaddressed_dst", t_misaddressed),
        ("truncated", t_truncated),
        ("oversized", t_oversized),
        ("bad_chain", t_bad_chain),
        ("nonsense", t_nonsense),
        ("credit", t_credit),
        ("small_writes", t_small_writes),
        ("storm", t_storm),
        ("host_connect", t_host_connect),
        ("connect_then_close", t_connect_then_close),
        ("rebind_lingering", t_rebind_lingering),
    ];
    for (n, f) in checks {
        let r = f(&mut e);
        out.result(&name(n), &r);
    }
    out.result(&name("multi_guest"), &t_multi_guest(&mut e));
    out.result(&name("dirty_log"), &t_dirty_log(&mut e, cid + 50));
    out.result(&name("cid_change"), &t_cid_change(&mut e));
    out.result(&name("bad_ring"), &t_bad_ring(&mut e));
    if e.g.rx_garbage > 0 {
        out.info(format!("{} receive buffers came back without a valid header", e.g.rx_garbage));
    }
    out.result(&name("release_resets"), &t_release(e));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_uapi() {
        assert_eq!(SET_OWNER, 0xAF01);
        assert_eq!(GET_FEATURES, 0x8008_AF00);
        assert_eq!(SET_FEATURES, 0x4008_AF00);
        assert_eq!(sys::vhost_ioc(1, 0x03, 8), 0x4008_AF03);
        assert_eq!(SET_VRING_NUM, 0x4008_AF10);
        assert_eq!(SET_VRING_ADDR, 0x4028_AF11);
        assert_eq!(SET_VRING_KICK, 0x4008_AF20);
        assert_eq!(GET_BACKEND_FEATURES, 0x8008_AF26);
        assert_eq!(SET_GUEST_CID, 0x4008_AF60);
        assert_eq!(SET_RUNNING, 0x4004_AF61);
    }

    #[test]
    fn header_roundtrip() {
        let h = Hdr {
            src_cid: 3,
            dst_cid: 2,
            src_port: 5,
            dst_port: 6,
            len: 7,
            ty: 1,
            op: 5,
            flags: 8,
            buf_alloc: 9,
            fwd_cnt: 10,
        };
        let b = h.encode();
        assert_eq!(b[0], 3);
        assert_eq!(b[28], 1);
        assert_eq!(Hdr::decode(&b), Some(h));
        assert_eq!(Hdr::decode(&b[..43]), None);
    }
}
