//! The virtio-vsock packet header: wire codec, op/type enums, flag and size constants, and
//! validation of headers received from a peer.
//!
//! The layout is `struct virtio_vsock_hdr` from `include/uapi/linux/virtio_vsock.h`: 44 bytes,
//! packed, every field little-endian. [`Hdr`] is the decoded, host-endian form; it is plain
//! data and says nothing about validity. [`validate`] is the single gate between the wire and
//! the rest of the crate: it returns a [`Valid`] whose `op`, `ty`, `len` and `flags` callers can
//! use without re-checking.
//!
//! # Validation rules
//!
//! Each rule rejects only what would be unsafe or meaningless; unknown *flag bits* are ignored
//! (masked out of [`Valid::flags`]) exactly as upstream ignores them on every op.
//!
//! | rule | error | upstream | answer |
//! |------|-------|----------|--------|
//! | upper 32 bits of `src_cid`/`dst_cid` must be zero (spec: reserved) | [`HdrError::BadSrcCid`]/[`HdrError::BadDstCid`] | host drops wrong src; guest truncates (aliasing) | drop silently |
//! | `src_cid`/`dst_cid` equal the expected CIDs when the context names them | same | vhost drops mis-addressed packets | drop silently |
//! | `len` at most [`ValidateCtx::max_len`] | [`HdrError::LenTooLarge`] | vhost/virtio drop oversized packets | drop silently |
//! | `type` is STREAM, or SEQPACKET when negotiated | [`HdrError::BadType`] | RST (`reset_no_sock`) | RST reply |
//! | `op` is one of REQUEST..CREDIT_REQUEST (`INVALID` = 0 is rejected) | [`HdrError::BadOp`] | RST or ignored, per state | RST reply |
//! | only RW carries payload | [`HdrError::LenNonZeroForControlOp`] | payload ignored | RST reply |
//!
//! "Answer" is [`HdrError::wants_rst`]: the glue replies with [`rst_reply`], which by
//! construction never answers an RST with an RST.

use core::convert::TryFrom;

/// Size of the wire header in bytes.
pub const HDR_LEN: usize = 44;

/// Largest payload one packet carries (upstream `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_BUF_SIZE: u32 = 64 * 1024;
/// Size of one guest receive buffer (upstream `VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE` is one page
/// minus `sk_buff` overhead; a Rust glue without that overhead uses the whole page).
pub const DEFAULT_RX_BUF_SIZE: u32 = 4096;
/// Largest socket buffer (`buf_alloc`) a socket may advertise (`VIRTIO_VSOCK_MAX_BUF_SIZE`).
pub const MAX_BUF_SIZE: u32 = u32::MAX;
/// Default socket buffer size (`VSOCK_DEFAULT_BUFFER_SIZE` in af_vsock.c).
pub const DEFAULT_BUF_SIZE: u32 = 256 * 1024;
/// Default upper bound for `SO_VM_SOCKETS_BUFFER_SIZE` (`VSOCK_DEFAULT_BUFFER_MAX_SIZE`).
pub const DEFAULT_BUF_MAX_SIZE: u32 = 256 * 1024;
/// Default lower bound for `SO_VM_SOCKETS_BUFFER_SIZE` (`VSOCK_DEFAULT_BUFFER_MIN_SIZE`).
pub const DEFAULT_BUF_MIN_SIZE: u32 = 128;
/// How long a closed socket waits for the peer's RST before resetting (`VSOCK_CLOSE_TIMEOUT`).
pub const CLOSE_TIMEOUT_MS: u32 = 8000;
/// Default connect timeout (`VSOCK_DEFAULT_CONNECT_TIMEOUT`).
pub const CONNECT_TIMEOUT_MS: u32 = 2000;

/// Wildcard CID (`VMADDR_CID_ANY`).
pub const VMADDR_CID_ANY: u32 = u32::MAX;
/// CID of the hypervisor (`VMADDR_CID_HYPERVISOR`).
pub const VMADDR_CID_HYPERVISOR: u32 = 0;
/// Loopback CID (`VMADDR_CID_LOCAL`).
pub const VMADDR_CID_LOCAL: u32 = 1;
/// CID of the host (`VMADDR_CID_HOST`).
pub const VMADDR_CID_HOST: u32 = 2;
/// Wildcard port (`VMADDR_PORT_ANY`).
pub const VMADDR_PORT_ANY: u32 = u32::MAX;
/// Ports up to this one need privileges to bind (`LAST_RESERVED_PORT`).
pub const LAST_RESERVED_PORT: u32 = 1023;

/// Feature bit number of SEQPACKET support (`VIRTIO_VSOCK_F_SEQPACKET`).
pub const F_SEQPACKET: u32 = 1;

/// SHUTDOWN flag: the sender will receive no more data (`VIRTIO_VSOCK_SHUTDOWN_RCV`).
/// Same value as the kernel's `RCV_SHUTDOWN`.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data (`VIRTIO_VSOCK_SHUTDOWN_SEND`).
/// Same value as the kernel's `SEND_SHUTDOWN`.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both SHUTDOWN flags (`SHUTDOWN_MASK`).
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;
/// RW flag: last packet of a SEQPACKET message (`VIRTIO_VSOCK_SEQ_EOM`).
pub const SEQ_EOM: u32 = 1;
/// RW flag: the message was sent with `MSG_EOR` (`VIRTIO_VSOCK_SEQ_EOR`); only meaningful
/// together with [`SEQ_EOM`].
pub const SEQ_EOR: u32 = 2;

/// Wire value of the DGRAM type. It exists in the virtio spec but neither upstream nor this
/// crate implements it: [`SockType::try_from`] and [`validate`] reject it.
pub const TYPE_DGRAM: u16 = 3;

/// Packet operation (`enum virtio_vsock_op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// `VIRTIO_VSOCK_OP_INVALID`: decodes, but [`validate`] rejects it.
    Invalid = 0,
    /// Connection request.
    Request = 1,
    /// Connection accepted.
    Response = 2,
    /// Connection reset / refused.
    Rst = 3,
    /// Half or full close; flags are [`SHUTDOWN_RCV`] / [`SHUTDOWN_SEND`].
    Shutdown = 4,
    /// Payload; flags are [`SEQ_EOM`] / [`SEQ_EOR`] on SEQPACKET.
    Rw = 5,
    /// Unsolicited credit information.
    CreditUpdate = 6,
    /// Ask the peer to send a [`Op::CreditUpdate`].
    CreditRequest = 7,
}

impl TryFrom<u16> for Op {
    type Error = HdrError;
    fn try_from(v: u16) -> Result<Self, HdrError> {
        Ok(match v {
            0 => Op::Invalid,
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return Err(HdrError::BadOp),
        })
    }
}

/// Socket type carried in the header (`enum virtio_vsock_type`); DGRAM is not supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum SockType {
    /// `VIRTIO_VSOCK_TYPE_STREAM`.
    Stream = 1,
    /// `VIRTIO_VSOCK_TYPE_SEQPACKET` (needs [`F_SEQPACKET`]).
    Seqpacket = 2,
}

impl TryFrom<u16> for SockType {
    type Error = HdrError;
    fn try_from(v: u16) -> Result<Self, HdrError> {
        match v {
            1 => Ok(SockType::Stream),
            2 => Ok(SockType::Seqpacket),
            _ => Err(HdrError::BadType),
        }
    }
}

/// A vsock address: context id and port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr {
    /// Context id (CID).
    pub cid: u32,
    /// Port.
    pub port: u32,
}

/// Decoded `struct virtio_vsock_hdr`, host-endian. Plain data: any bit pattern is representable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hdr {
    /// Source CID (upper 32 bits reserved, zero).
    pub src_cid: u64,
    /// Destination CID (upper 32 bits reserved, zero).
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Socket type, raw (`type` on the wire).
    pub ty: u16,
    /// Operation, raw.
    pub op: u16,
    /// Op-specific flags, raw.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender's reader has consumed so far (wrapping).
    pub fwd_cnt: u32,
}

/// Reads consecutive little-endian fields; yields zeros past the end instead of panicking.
struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        match self.0.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.0 = rest;
                *head
            }
            None => [0; N],
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// Writes consecutive fields; silently stops at the end instead of panicking.
struct Wr<'a>(&'a mut [u8]);

impl Wr<'_> {
    fn put<const N: usize>(&mut self, bytes: [u8; N]) {
        let buf = core::mem::take(&mut self.0);
        if let Some((head, rest)) = buf.split_first_chunk_mut::<N>() {
            *head = bytes;
            self.0 = rest;
        }
    }
}

impl Hdr {
    /// A header with addresses, type and op set and every other field zero
    /// (use [`super::conn::Conn::stamp`] to fill the credit fields).
    pub fn new(ty: SockType, op: Op, src: Addr, dst: Addr) -> Hdr {
        Hdr {
            src_cid: u64::from(src.cid),
            dst_cid: u64::from(dst.cid),
            src_port: src.port,
            dst_port: dst.port,
            ty: ty as u16,
            op: op as u16,
            ..Hdr::default()
        }
    }

    /// Decodes the 44 wire bytes. Never fails: validity is [`validate`]'s job.
    pub fn decode(b: &[u8; HDR_LEN]) -> Hdr {
        let mut r = Rd(b);
        Hdr {
            src_cid: r.u64(),
            dst_cid: r.u64(),
            src_port: r.u32(),
            dst_port: r.u32(),
            len: r.u32(),
            ty: r.u16(),
            op: r.u16(),
            flags: r.u32(),
            buf_alloc: r.u32(),
            fwd_cnt: r.u32(),
        }
    }

    /// Splits a packet buffer into its decoded header and the bytes after it;
    /// `None` if the buffer is shorter than [`HDR_LEN`].
    pub fn parse(buf: &[u8]) -> Option<(Hdr, &[u8])> {
        let (head, rest) = buf.split_first_chunk::<HDR_LEN>()?;
        Some((Hdr::decode(head), rest))
    }

    /// Encodes into the 44 wire bytes.
    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0; HDR_LEN];
        self.encode_into(&mut b);
        b
    }

    /// Encodes into `out`.
    pub fn encode_into(&self, out: &mut [u8; HDR_LEN]) {
        let mut w = Wr(out);
        w.put(self.src_cid.to_le_bytes());
        w.put(self.dst_cid.to_le_bytes());
        w.put(self.src_port.to_le_bytes());
        w.put(self.dst_port.to_le_bytes());
        w.put(self.len.to_le_bytes());
        w.put(self.ty.to_le_bytes());
        w.put(self.op.to_le_bytes());
        w.put(self.flags.to_le_bytes());
        w.put(self.buf_alloc.to_le_bytes());
        w.put(self.fwd_cnt.to_le_bytes());
    }
}

/// Joins STREAM payload `b`, queued right behind `a`, onto `a` for one receive buffer (a
/// transport gathering small sends of one connection, issue 17): `Some` header for both
/// payloads together, `None` if they must travel apart. Only plain STREAM `RW` packets of the
/// same connection without flags join (a SEQPACKET message keeps its own boundaries, every
/// other op its own packet); the joined header has the summed length and `b`'s credit
/// fields, the newer ones.
pub fn join(a: &Hdr, b: &Hdr) -> Option<Hdr> {
    let plain = |h: &Hdr| h.ty == SockType::Stream as u16 && h.op == Op::Rw as u16 && h.flags == 0;
    let same = (a.src_cid, a.dst_cid, a.src_port, a.dst_port) == (b.src_cid, b.dst_cid, b.src_port, b.dst_port);
    if !(plain(a) && plain(b) && same) {
        return None;
    }
    let len = a.len.checked_add(b.len).filter(|&n| n <= MAX_PKT_BUF_SIZE)?;
    Some(Hdr { len, buf_alloc: b.buf_alloc, fwd_cnt: b.fwd_cnt, ..*a })
}

/// The RST that answers packet `h` when no socket (or no valid socket state) handles it
/// (upstream `virtio_transport_reset_no_sock`): addresses swapped, `type` copied, every other
/// field zero. `None` when `h` is itself an RST: an RST is never answered with an RST.
pub fn rst_reply(h: &Hdr) -> Option<Hdr> {
    if h.op == Op::Rst as u16 {
        return None;
    }
    Some(Hdr {
        src_cid: h.dst_cid,
        dst_cid: h.src_cid,
        src_port: h.dst_port,
        dst_port: h.src_port,
        ty: h.ty,
        op: Op::Rst as u16,
        ..Hdr::default()
    })
}

/// Why a received header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HdrError {
    /// `op` is `INVALID` or unknown.
    BadOp,
    /// `type` is not STREAM, or SEQPACKET without the negotiated feature.
    BadType,
    /// `len` exceeds [`ValidateCtx::max_len`].
    LenTooLarge,
    /// A control op (anything but RW) carries payload.
    LenNonZeroForControlOp,
    /// `src_cid` has reserved bits set or is not the expected peer CID.
    BadSrcCid,
    /// `dst_cid` has reserved bits set or is not the expected local CID.
    BadDstCid,
}

impl HdrError {
    /// Whether the glue should answer the rejected packet with [`rst_reply`] (a peer speaking
    /// a protocol we do not understand is told so, as upstream does for unknown types) rather
    /// than drop it silently (framing and addressing errors: the sender may be spoofed).
    pub fn wants_rst(self) -> bool {
        matches!(
            self,
            HdrError::BadOp | HdrError::BadType | HdrError::LenNonZeroForControlOp
        )
    }
}

/// What [`validate`] checks a header against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidateCtx {
    /// Largest payload accepted: at most the receive buffer the packet arrived in, and
    /// normally at most [`MAX_PKT_BUF_SIZE`].
    pub max_len: u32,
    /// Whether [`F_SEQPACKET`] was negotiated with this peer.
    pub seqpacket: bool,
    /// If set, `src_cid` must equal it (host side: the guest's own CID).
    pub src_cid: Option<u32>,
    /// If set, `dst_cid` must equal it (host side: [`VMADDR_CID_HOST`]).
    pub dst_cid: Option<u32>,
}

impl Default for ValidateCtx {
    /// Full-size packets, no SEQPACKET, no address checks.
    fn default() -> Self {
        ValidateCtx {
            max_len: MAX_PKT_BUF_SIZE,
            seqpacket: false,
            src_cid: None,
            dst_cid: None,
        }
    }
}

/// A header that passed [`validate`]: typed fields callers never need to re-check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Valid {
    /// The operation (never [`Op::Invalid`]).
    pub op: Op,
    /// The socket type (SEQPACKET only if negotiated).
    pub ty: SockType,
    /// Payload length; zero unless `op` is [`Op::Rw`]; at most [`ValidateCtx::max_len`].
    pub len: u32,
    /// Only the flag bits meaningful for `op`/`ty`: [`SHUTDOWN_BOTH`] bits on SHUTDOWN,
    /// [`SEQ_EOM`]/[`SEQ_EOR`] on SEQPACKET RW, zero otherwise.
    pub flags: u32,
    /// Sender address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
}

fn cid32(cid: u64, expect: Option<u32>, err: HdrError) -> Result<u32, HdrError> {
    let c = u32::try_from(cid).map_err(|_| err)?;
    match expect {
        Some(e) if e != c => Err(err),
        _ => Ok(c),
    }
}

/// Checks a received header against `ctx`; see the module docs for every rule.
pub fn validate(h: &Hdr, ctx: &ValidateCtx) -> Result<Valid, HdrError> {
    let src_cid = cid32(h.src_cid, ctx.src_cid, HdrError::BadSrcCid)?;
    let dst_cid = cid32(h.dst_cid, ctx.dst_cid, HdrError::BadDstCid)?;
    if h.len > ctx.max_len {
        return Err(HdrError::LenTooLarge);
    }
    let ty = SockType::try_from(h.ty)?;
    if ty == SockType::Seqpacket && !ctx.seqpacket {
        return Err(HdrError::BadType);
    }
    let op = Op::try_from(h.op)?;
    let flags = match (op, ty) {
        (Op::Invalid, _) => return Err(HdrError::BadOp),
        (Op::Rw, SockType::Seqpacket) => h.flags & (SEQ_EOM | SEQ_EOR),
        (Op::Rw, SockType::Stream) => 0,
        (_, _) if h.len != 0 => return Err(HdrError::LenNonZeroForControlOp),
        (Op::Shutdown, _) => h.flags & SHUTDOWN_BOTH,
        _ => 0,
    };
    Ok(Valid {
        op,
        ty,
        len: h.len,
        flags,
        src: Addr {
            cid: src_cid,
            port: h.src_port,
        },
        dst: Addr {
            cid: dst_cid,
            port: h.dst_port,
        },
    })
}

#[cfg(test)]
#[path = "hdr_tests.rs"]
mod tests;
