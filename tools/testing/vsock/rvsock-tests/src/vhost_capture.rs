//! `vhost-hostile` capture checks: what a capture device (the kernel's vsockmon driver, the
//! device `tcpdump -i vsockmon0` reads) shows of a guest's traffic. The scenario creates
//! `vsockmon0`; the checks read it through a packet socket.
//!
//! In-tree vhost captures a guest's packet when it reads it from the guest, before its
//! address check (a spoofed packet shows), and a host packet when it copies it into a guest
//! buffer (a packet still waiting for one does not show yet). rvsock's core captured host
//! packets when a socket sent them and guest packets after vhost's address check; its
//! transports capture where in-tree's do now.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::fake_guest::*;
use crate::report::{OrFail, Outcome, TestResult};
use crate::sys::{self, AF_VSOCK};
use crate::vhost_device::fill_guest;
use crate::vhost_hostile::*;

/// `struct af_vsockmon_hdr` (uapi linux/vsockmon.h): before the virtio header in a frame.
const MON_HDR: usize = 32;

/// A packet socket on `vsockmon0`.
struct Capture(OwnedFd);

impl Capture {
    /// Starts capturing; `None` without a `vsockmon0` device.
    fn open() -> Result<Option<Capture>, String> {
        // SAFETY: a NUL-terminated name; no other pointer.
        let idx = unsafe { libc::if_nametoindex(c"vsockmon0".as_ptr()) };
        if idx == 0 {
            return Ok(None);
        }
        // Protocol 0: nothing arrives before the bind below names the device.
        let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0).or_fail("packet socket")?;
        // Room for a stream's worth of 64 KiB frames: a full buffer drops frames silently.
        let room = (16i32 << 20).to_ne_bytes();
        sys::setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &room).or_fail("SO_RCVBUFFORCE")?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // sockaddr_ll: family, protocol (big-endian), ifindex, then fields bind ignores.
        let mut sll = [0u8; 20];
        sll[0..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
        sll[2..4].copy_from_slice(&proto.to_ne_bytes());
        sll[4..8].copy_from_slice(&(idx as i32).to_ne_bytes());
        sys::bind_raw(&fd, &sll).or_fail("bind vsockmon0")?;
        Ok(Some(Capture(fd)))
    }

    /// The virtio headers of the frames captured until `t` has passed.
    fn read_for(&self, t: Duration) -> Result<Vec<Hdr>, String> {
        Ok(self.frames_for(t)?.into_iter().map(|(h, _)| h).collect())
    }

    /// The frames captured until `t` has passed: virtio header and payload.
    fn frames_for(&self, t: Duration) -> Result<Vec<(Hdr, Vec<u8>)>, String> {
        let mut v = Vec::new();
        let mut buf = vec![0u8; 70 * 1024];
        let end = Instant::now() + t;
        loop {
            match sys::recv(&self.0, &mut buf, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    if let Some(h) = buf.get(MON_HDR..n).and_then(Hdr::decode) {
                        let data = buf.get(MON_HDR + HDR..n).unwrap_or_default().to_vec();
                        v.push((h, data));
                    }
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) => return Err(format!("recv on vsockmon0: {}", sys::describe(&e))),
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(v);
            }
            sys::poll_one(&self.0, libc::POLLIN, left).or_fail("poll vsockmon0")?;
        }
    }
}

fn no_device() -> TestResult {
    Ok(Outcome::Skip("no vsockmon0 device (the scenario creates it)".into()))
}

fn count(frames: &[Hdr], f: impl Fn(&Hdr) -> bool) -> usize {
    frames.iter().filter(|h| f(h)).count()
}

/// Guest packets show once each as vhost reads them, those it drops for their addresses
/// (a spoofed source, a destination other than the host) included; the host's answer to
/// a valid one shows once, as it reaches the guest.
pub(crate) fn t_capture_guest(e: &mut Env) -> TestResult {
    let Some(cap) = Capture::open()? else { return no_device() };
    let cid = u64::from(e.g.cid);
    let mut spoofed = e.g.hdr(OP_REQUEST, 43000, P_LISTEN);
    spoofed.src_cid = cid + 1;
    e.g.send(&spoofed, &[])?;
    let mut misaddressed = e.g.hdr(OP_REQUEST, 43001, P_LISTEN);
    misaddressed.dst_cid = 1;
    e.g.send(&misaddressed, &[])?;
    // A valid REQUEST to a port nobody listens on: the host resets it.
    e.g.send(&e.g.hdr(OP_REQUEST, 43002, P_NOBODY), &[])?;
    let rst = e.g.recv_where(ms(2000), |h| h.dst_port == 43002)?;
    let frames = cap.read_for(ms(300))?;
    if accept_within(&e.l, ms(10))?.is_some() {
        return Err("a spoofed or misaddressed REQUEST was accepted".into());
    }
    let got = [
        ("spoofed", count(&frames, |h| h.src_port == 43000 && h.src_cid == cid + 1 && h.op == OP_REQUEST)),
        ("misaddressed", count(&frames, |h| h.src_port == 43001 && h.dst_cid == 1 && h.op == OP_REQUEST)),
        ("valid", count(&frames, |h| h.src_port == 43002 && h.src_cid == cid && h.dst_cid == HOST && h.op == OP_REQUEST)),
        ("reset", count(&frames, |h| h.dst_port == 43002 && h.src_cid == HOST && h.op == OP_RST)),
    ];
    if rst.map(|r| r.h.op) != Some(OP_RST) {
        return Err("the REQUEST to a port nobody listens on got no RST".into());
    }
    e.out.info(format!("capture_guest: {} frames, per packet {got:?}", frames.len()));
    match got.iter().find(|(_, n)| *n != 1) {
        Some((what, n)) => Err(format!("the {what} packet was captured {n} times, expected once")),
        None => Ok(Outcome::Pass),
    }
}

/// A host REQUEST that waits for a guest buffer (the guest's ring full of a stream's data)
/// does not show while it waits; it shows once, when the guest takes it. And each buffer
/// the guest gets shows as one frame with the header and bytes it holds (in-tree 7.x
/// captures each buffer it fills): the stream's 64 KiB packets go in pieces, and the small
/// writes queued behind them go joined (rvsock) or one per buffer (in-tree).
pub(crate) fn t_capture_at_delivery(e: &mut Env) -> TestResult {
    const LEN: usize = 128 * 1024;
    const SMALL: usize = 20;
    let gp = G_MAIN + 320;
    let cport = G_LISTEN + 70;
    let (_l, s, _) = fill_guest(e, gp, P_SMALL + 3, LEN, 11)?;
    let Some(cap) = Capture::open()? else { return no_device() };
    for i in 0..SMALL {
        sys::send(&s, &pattern(5, i as u8), 0).or_fail("small send")?;
    }
    let total = LEN + 5 * SMALL;
    let c = sys::socket(AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0).or_fail("socket")?;
    // Long enough for a slow (sanitizer) kernel: the REQUEST must not time out meanwhile.
    let tv = sys::timeval_bytes(30, 0);
    sys::setsockopt(&c, sys::SOL_VSOCK_OPTS, sys::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW, &tv).or_fail("connect timeout")?;
    let r = sys::errno_of(&sys::connect_vm(&c, e.g.cid, cport));
    if r != libc::EINPROGRESS {
        return Err(format!("non-blocking connect to a guest taking no buffers: {}", sys::errno_name(r)));
    }
    let ours = |h: &Hdr| h.dst_port == cport && h.op == OP_REQUEST;
    let waiting = count(&cap.read_for(ms(300))?, ours);
    // The guest takes its buffers' contents, then the rest of the stream and the REQUEST.
    let (mut got, mut request, mut hport) = (0, false, 0);
    let mut packets = Vec::new();
    let t0 = Instant::now();
    while (got < total || !request) && t0.elapsed() < Duration::from_secs(20) {
        if let Some(x) = e.g.recv_where(ms(100), |h| h.dst_port == gp || h.dst_port == cport)? {
            if x.h.dst_port == cport {
                request |= x.h.op == OP_REQUEST;
                hport = x.h.src_port;
            } else if x.h.op == OP_RW {
                got += x.data.len();
                packets.push((x.h, x.data));
            }
        }
    }
    let frames = cap.frames_for(ms(300))?;
    let delivered = frames.iter().filter(|(h, _)| ours(h)).count();
    // The stream's frames: those of the buffers filled since the capture started, the last
    // ones the guest got.
    let stream: Vec<&(Hdr, Vec<u8>)> = frames.iter().filter(|(h, _)| h.dst_port == gp && h.op == OP_RW).collect();
    e.g.send(&e.g.hdr(OP_RST, gp, P_SMALL + 3), &[])?;
    if request {
        e.g.send(&e.g.hdr(OP_RST, cport, hport), &[])?;
    }
    drop((s, c));
    std::thread::sleep(ms(50));
    e.g.discard(|h| h.dst_port == gp || h.dst_port == cport);
    if !request || got != total {
        return Err(format!("the guest got {got} of {total} bytes, the REQUEST: {request}"));
    }
    // The buffers that hold bytes of the small writes (the stream's last bytes).
    let mut off = 0;
    let mut small = 0;
    for (_, d) in &packets {
        off += d.len();
        small += usize::from(off > LEN);
    }
    let tail = packets.get(packets.len().saturating_sub(stream.len())..).unwrap_or_default();
    e.out.info(format!(
        "capture_at_delivery: the guest got {} stream packets, the last {} captured after the capture started; \
         the {SMALL} small writes in {small} buffers",
        packets.len(),
        stream.len()
    ));
    if small >= SMALL && crate::vhost_device::rvsock_host() {
        return Err(format!("the {SMALL} small writes queued behind the stream took {small} buffers: not joined"));
    }
    if stream.is_empty() || stream.len() > packets.len() {
        return Err(format!("{} stream frames captured for {} packets the guest got", stream.len(), packets.len()));
    }
    for (i, ((fh, fd), (gh, gd))) in stream.iter().map(|x| (&x.0, &x.1)).zip(tail.iter().map(|x| (&x.0, &x.1))).enumerate() {
        if fh != gh || fd != gd {
            return Err(format!(
                "stream frame {i}: header {fh:?} with {} bytes, the guest's buffer {gh:?} with {} bytes",
                fd.len(),
                gd.len()
            ));
        }
    }
    if waiting != 0 {
        return Err(format!("the REQUEST was captured {waiting} times while it waited for a guest buffer"));
    }
    if delivered != 1 {
        return Err(format!("the REQUEST was captured {delivered} times once the guest took it, expected once"));
    }
    Ok(Outcome::Pass)
}
