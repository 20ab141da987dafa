//! The fake guest of `vhost-hostile` and `regress` (guest side): the program is the VMM and
//! the guest at once. It owns a `/dev/vhost-vsock` device (`VHOST_SET_OWNER`), gives it a
//! memory table that maps part of its own address space as "guest RAM" (guest physical
//! address == user address), lays out split virtqueues there (RX 0: host to guest, TX 1:
//! guest to host), and speaks virtio-vsock by writing descriptors and reading the used rings
//! itself.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use crate::report::OrFail;
use crate::sys::{self, GuestMem};

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
pub(crate) const MAX_PKT: usize = 64 * 1024;
pub(crate) const GUEST_BUF: u32 = 256 * 1024;

pub(crate) const F_VERSION_1: u64 = 1 << 32;
pub(crate) const F_ACCESS_PLATFORM: u64 = 1 << 33;
pub(crate) const F_SEQPACKET: u64 = 1 << 1;
/// `VHOST_F_LOG_ALL`: the device logs the guest pages it writes (migration).
const F_LOG_ALL: u64 = 1 << 26;

const SET_OWNER: u64 = sys::vhost_ioc(0, 0x01, 0);
pub(crate) const GET_FEATURES: u64 = sys::vhost_ioc(2, 0x00, 8);
pub(crate) const SET_FEATURES: u64 = sys::vhost_ioc(1, 0x00, 8);
const SET_LOG_BASE: u64 = sys::vhost_ioc(1, 0x04, 8);
const SET_VRING_NUM: u64 = sys::vhost_ioc(1, 0x10, 8);
const SET_VRING_ADDR: u64 = sys::vhost_ioc(1, 0x11, 40);
const SET_VRING_BASE: u64 = sys::vhost_ioc(1, 0x12, 8);
const SET_VRING_KICK: u64 = sys::vhost_ioc(1, 0x20, 8);
const SET_VRING_CALL: u64 = sys::vhost_ioc(1, 0x21, 8);
const SET_VRING_ERR: u64 = sys::vhost_ioc(1, 0x22, 8);
pub(crate) const SET_BACKEND_FEATURES: u64 = sys::vhost_ioc(1, 0x25, 8);
pub(crate) const GET_BACKEND_FEATURES: u64 = sys::vhost_ioc(2, 0x26, 8);
pub(crate) const SET_GUEST_CID: u64 = sys::vhost_ioc(1, 0x60, 8);
pub(crate) const SET_RUNNING: u64 = sys::vhost_ioc(1, 0x61, 4);

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
    pub(crate) fn encode(&self) -> [u8; HDR] {
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

    pub(crate) fn decode(b: &[u8]) -> Option<Hdr> {
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

pub(crate) const NUM: u16 = 64;
pub(crate) const VRING_DESC_F_NEXT: u16 = 1;
pub(crate) const VRING_DESC_F_WRITE: u16 = 2;
/// Guest memory layout (offsets into `GuestMem`).
const RING_BASE: [usize; 2] = [0x0000, 0x2000];
pub(crate) const RX_BUFS: usize = 0x10000;
const TX_AREA: usize = 0x40000;
/// Large payloads go from slots of their own (`send_held`): a device may keep such a chain
/// until the host application has read it (rvsock takes the guest's pages by reference), so
/// its memory must stay untouched until it comes back. Slot `i` is chain `HELD_HEAD0 + 2i`
/// (header, payload) at `HELD_AREA + i * HELD_STRIDE`.
pub(crate) const HELD_MIN: usize = 32 * 1024;
pub(crate) const HELD_SLOTS: usize = 8;
const HELD_HEAD0: u16 = 48;
const HELD_AREA: usize = 0x60000;
const HELD_STRIDE: usize = 0x10100;
const MEM_SIZE: usize = 0x100000;

/// One split virtqueue: descriptor table, avail ring, used ring at fixed offsets.
pub(crate) struct Ring {
    pub(crate) base: usize,
    avail_idx: u16,
    last_used: u16,
}

impl Ring {
    pub(crate) fn desc(&self) -> usize {
        self.base
    }
    fn avail(&self) -> usize {
        self.base + 0x400
    }
    pub(crate) fn used(&self) -> usize {
        self.base + 0x800
    }

    pub(crate) fn set_desc(&self, m: &GuestMem, i: u16, addr: u64, len: u32, flags: u16, next: u16) -> Option<()> {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        m.write(self.desc() + 16 * usize::from(i), &d)
    }

    /// Makes chain `head` available (the ring entry first, then the index, release).
    pub(crate) fn publish(&mut self, m: &GuestMem, head: u16) -> Option<()> {
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
pub(crate) enum Sent {
    /// The device returned it.
    Returned,
    /// Not returned within the wait (the in-tree driver keeps dropped chains).
    Kept,
}

pub(crate) struct Guest {
    // Field order is drop order: close the device before unmapping its memory.
    pub(crate) fd: OwnedFd,
    pub(crate) kick: [OwnedFd; 2],
    pub(crate) call: [OwnedFd; 2],
    pub(crate) err: [OwnedFd; 2],
    pub(crate) mem: GuestMem,
    pub(crate) cid: u32,
    pub(crate) rx: Ring,
    pub(crate) tx: Ring,
    pub(crate) rx_buf: usize,
    pub(crate) inbox: VecDeque<Rx>,
    /// RX buffers whose content was not a valid packet (too short).
    pub(crate) rx_garbage: u32,
    /// Held slots whose chain the device has not returned yet.
    pub(crate) held: [bool; HELD_SLOTS],
}

pub(crate) fn ioctl_u64(fd: &impl AsFd, req: u64, v: u64) -> std::io::Result<i32> {
    let mut b = v.to_ne_bytes();
    sys::ioctl_buf(fd, req, &mut b)
}

pub(crate) fn ioctl_get_u64(fd: &impl AsFd, req: u64) -> std::io::Result<u64> {
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

pub(crate) fn open_dev() -> std::io::Result<OwnedFd> {
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
    pub(crate) fn with_log(cid: u32, rx_buf: usize, log_base: impl Fn(u64) -> u64) -> Result<Guest, String> {
        Guest::setup(cid, rx_buf, F_VERSION_1 | F_SEQPACKET | F_LOG_ALL, Some(&log_base))
    }

    pub(crate) fn setup(cid: u32, rx_buf: usize, want: u64, log_base: Option<&dyn Fn(u64) -> u64>) -> Result<Guest, String> {
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
            held: [false; HELD_SLOTS],
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

    pub(crate) fn kick(&self, q: usize) -> Result<(), String> {
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
    pub(crate) fn send_chain(&mut self, segs: &[(&[u8], bool)], wait: Duration) -> Result<Sent, String> {
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
            if let Some(id) = self.reap_tx().first() {
                if *id != 0 {
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

    /// Takes the TX used ring's entries: held slots come back (`held`); returns the others'
    /// ids.
    fn reap_tx(&mut self) -> Vec<u32> {
        let mut other = Vec::new();
        while let Some((id, _)) = self.tx.next_used(&self.mem) {
            let slot = id.checked_sub(u32::from(HELD_HEAD0)).filter(|d| d % 2 == 0).map(|d| (d / 2) as usize);
            match slot.and_then(|i| self.held.get_mut(i)) {
                Some(b) => *b = false,
                None => other.push(id),
            }
        }
        other
    }

    /// Held slots whose chain has not come back (after taking the used ring's entries).
    pub(crate) fn held_out(&mut self) -> Result<usize, String> {
        self.poll_rx()?;
        // Other chains coming back late (ones a device kept) are not ours to count.
        let _ = self.reap_tx();
        Ok(self.held.iter().filter(|b| **b).count())
    }

    /// Sends a packet with a large payload from a held slot (a free one, waiting up to 10 s
    /// for one to come back): the device may keep it until the host has read it. Returns the
    /// slot.
    pub(crate) fn send_held(&mut self, h: &Hdr, payload: &[u8]) -> Result<usize, String> {
        if payload.len() + 64 > HELD_STRIDE {
            return Err("payload too large for a held slot".into());
        }
        let t0 = Instant::now();
        let slot = loop {
            self.held_out()?;
            if let Some(i) = self.held.iter().position(|b| !*b) {
                break i;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("none of {HELD_SLOTS} held TX chains came back in 10 s"));
            }
            thread::sleep(ms(1));
        };
        let off = HELD_AREA + slot * HELD_STRIDE;
        self.mem.write(off, &h.encode()).ok_or("held slot")?;
        self.mem.write(off + 64, payload).ok_or("held slot")?;
        let head = HELD_HEAD0 + 2 * slot as u16;
        self.tx.set_desc(&self.mem, head, self.mem.addr(off), HDR as u32, VRING_DESC_F_NEXT, head + 1).ok_or("tx desc")?;
        self.tx.set_desc(&self.mem, head + 1, self.mem.addr(off + 64), payload.len() as u32, 0, 0).ok_or("tx desc")?;
        self.tx.publish(&self.mem, head).ok_or("tx publish")?;
        self.held[slot] = true;
        self.kick(1)?;
        Ok(slot)
    }

    /// Overwrites the payload of held slot `slot` with `data` (a guest reusing its memory).
    pub(crate) fn scribble_held(&self, slot: usize, data: &[u8]) -> Result<(), String> {
        self.mem.write(HELD_AREA + slot * HELD_STRIDE + 64, data).ok_or_else(|| "held slot".to_string())
    }

    /// Waits up to `t` for every held chain to come back.
    pub(crate) fn wait_held(&mut self, t: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let n = self.held_out()?;
            if n == 0 {
                return Ok(());
            }
            if t0.elapsed() > t {
                return Err(format!("{n} held TX chains not back after {t:?}"));
            }
            thread::sleep(ms(1));
        }
    }

    /// Sends a packet as header + payload descriptors (as the Linux driver does); it must
    /// come back from the device, but for a large payload, which goes from a held slot
    /// (`send_held`) and may come back later.
    pub(crate) fn send(&mut self, h: &Hdr, payload: &[u8]) -> Result<(), String> {
        if payload.len() >= HELD_MIN {
            return self.send_held(h, payload).map(|_| ());
        }
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
        if hs.is_empty() || hs.len() > usize::from(HELD_HEAD0) {
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
            let n = self.reap_tx().len();
            if n > 0 {
                back += n;
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
    pub(crate) fn error_signalled(&self, q: usize) -> bool {
        sys::eventfd_read(&self.err[q]).map(|v| v > 0).unwrap_or(false)
    }
}

fn raw_fd(fd: &OwnedFd) -> u32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd() as u32
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
