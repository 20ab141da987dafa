// SPDX-License-Identifier: GPL-2.0
//! The ABI between the rvsock core (`rvsock.ko`) and its transport modules: the packet buffer
//! and the transport descriptor, both `#[repr(C)]`, and the functions the core exports.
//! Included by path into every module, so both sides compile the same definitions.

use core::ffi::c_void;
use kernel::ffi::{c_char, c_int};

/// Length of the virtio-vsock header on the wire.
pub const HDR_LEN: usize = 44;

/// A hold (opaque; see `rvsock_hold_new`).
#[repr(C)]
pub struct RawHold {
    _private: [u8; 0],
}

/// A packet: the wire-format header followed in the same allocation by `cap` payload bytes,
/// so a virtio rx buffer is one contiguous descriptor (`hdr` then payload).
///
/// Ownership: whoever holds the pointer owns the packet; every function that takes one
/// (`send_pkt`, `rvsock_recv_pkt`, `rvsock_pkt_free`) consumes it.
#[repr(C)]
pub struct RawPkt {
    /// Queue link while the packet sits in a queue of its owner.
    pub next: *mut RawPkt,
    /// Payload bytes present.
    pub len: u32,
    /// Payload bytes already consumed by a reader (rx) or sent (tx).
    pub off: u32,
    /// Payload capacity.
    pub cap: u32,
    /// Transport-private word: the transport that holds the packet may use it as it likes
    /// (vhost marks the replies it queued); zero when the core allocates, never read by the
    /// core. Also keeps `hdr` 8-byte aligned.
    pub xmark: u32,
    /// Core-private page payload, null for inline payloads: a MSG_ZEROCOPY send's pinned user
    /// pages, or pages of the packet's own (a copied payload larger than an inline one can
    /// be). Only transports with `TRANSPORT_F_ZEROCOPY` ever see it set.
    pub ext: *mut c_void,
    /// The vsock namespace the packet belongs to (`NS_*`, see [`ns_reach`]): the core sets
    /// it to its socket's tag before `send_pkt`; a host transport sets it on received
    /// packets to its device's tag (the namespace of the `/dev/vhost-vsock` opener); zero
    /// (`NS_GLOBAL`) from `rvsock_pkt_alloc`, which is what a guest transport delivers.
    /// Loopback hands a packet back unchanged, so it stays in its sender's namespace.
    pub ns: u64,
    /// Core-private: the socket (`struct sock`) a data packet is charged to while a queueing
    /// transport holds it (`alloc_size(cap)` bytes of its `sk_wmem_alloc`, released by
    /// `rvsock_pkt_free`); null for every other packet. Transports only compare it (`cancel_pkt`).
    pub owner: *mut c_void,
    /// Header in virtio wire format (little endian).
    pub hdr: [u8; HDR_LEN],
    // `cap` payload bytes follow.
}

/// Namespace tag of packets and devices that belong to no network namespace (a guest
/// transport's: the guest side of vsock is global, as in-tree 7.x).
pub const NS_GLOBAL: u64 = 0;
/// Bit of a namespace tag set for a namespace in `local` vsock mode (the rest of the tag is
/// the namespace's number, never reused while rvsock is loaded).
pub const NS_LOCAL: u64 = 1;
/// "Every namespace", for `rvsock_transport_reset`.
pub const NS_ANY: u64 = u64::MAX;

/// Whether something in namespace `a` may reach something in namespace `b` (in-tree 7.x
/// `vsock_net_check_mode`): the same namespace always; two different ones only when both
/// are in `global` mode.
#[inline]
pub const fn ns_reach(a: u64, b: u64) -> bool {
    a == b || (a & NS_LOCAL == 0 && b & NS_LOCAL == 0)
}

/// Transport kinds, as the core chooses them per socket.
pub const TRANSPORT_LOCAL: u32 = 1;
/// Guest-to-host transport (virtio guest driver).
pub const TRANSPORT_G2H: u32 = 2;
/// Host-to-guest transport (vhost).
pub const TRANSPORT_H2G: u32 = 4;

/// Transport feature: SOCK_SEQPACKET supported.
pub const TRANSPORT_F_SEQPACKET: u32 = 1;
/// Transport feature: accepts packets whose payload is pages (`RawPkt::ext`: MSG_ZEROCOPY's
/// pinned user pages, or a large copied payload). Without it the core only ever hands the
/// transport inline payloads.
pub const TRANSPORT_F_ZEROCOPY: u32 = 2;
/// Memory of the core's descriptor of a page payload (`zerocopy::ZcPages`, which asserts it
/// fits): part of a page-payload packet's `Pkt::mem_cost`.
pub const EXT_DESC_SIZE: u32 = 512;
/// Pieces of one page payload at most (`rvsock_pkt_ext_frag`): the core fills no more, and a
/// transport giving each piece a descriptor of its own sizes its tables by it.
pub const EXT_MAX_FRAGS: usize = 30;
/// Transport feature (with `TRANSPORT_F_ZEROCOPY`): the transport never hands page payloads
/// on to a device: it reads them only through `rvsock_pkt_copy_to_iter` and frees each packet
/// once it has copied it out, without waiting for its peer's reader (vhost: into the guest's
/// receive buffers), or it delivers them in place to the core's receive path, whose readers
/// copy them out (loopback, `TRANSPORT_LOCAL`). The core may then carry a plain blocking
/// send(2)'s pinned user pages in such packets for the length of the call (`zerocopy.rs`,
/// `SyncPin`; towards a local transport every other chunk, waited for without the socket lock).
pub const TRANSPORT_F_COPY_OUT: u32 = 4;

/// A transport as registered with the core. The transport module owns it and keeps it alive
/// (and unchanged) from `rvsock_transport_register` until `rvsock_transport_unregister`
/// returns.
#[repr(C)]
pub struct RawTransport {
    /// Module that implements the transport (the core pins it while a socket uses it).
    pub owner: *mut crate::ffi::module,
    /// NUL-terminated name for logs.
    pub name: *const c_char,
    /// One of the `TRANSPORT_*` kinds.
    pub kind: u32,
    /// `TRANSPORT_F_*` bits.
    pub features: u32,
    /// The CID this transport answers to locally.
    pub local_cid: unsafe extern "C" fn(t: *const RawTransport) -> u32,
    /// Sends one packet, consuming it. Returns 0 or a negative errno (packet freed either way).
    /// Called in process context. A queueing transport (G2H, H2G) gets a socket's stamped
    /// packets (data, and every control packet but a RST answering a packet) with that
    /// socket's send order lock held (`VSock::tx_order`, a spinlock: it must not sleep, only
    /// queue under locks of its own), a RST answering a packet (of a socket or of an unknown
    /// address) with no rvsock lock held; the LOCAL transport always with no rvsock lock
    /// held, so it may deliver in place.
    pub send_pkt: unsafe extern "C" fn(t: *const RawTransport, pkt: *mut RawPkt) -> c_int,
    /// Whether SEQPACKET may be used towards `remote_cid` as seen from namespace `ns`
    /// (`None`: per `features`).
    pub seqpacket_allow: Option<unsafe extern "C" fn(t: *const RawTransport, remote_cid: u32, ns: u64) -> bool>,
    /// Whether `remote_cid` may be reached over this transport (in-tree 7.x
    /// `has_remote_cid`): a host transport knows its guests' CIDs; a guest transport assumes
    /// the host serves any CID. `None`: an H2G transport is taken for every CID above the
    /// host's, a G2H transport is never a fallback (see `Global::pick_transport`).
    /// `ns`: the namespace of the asking socket (a host transport answers only for devices
    /// that `ns_reach` it).
    /// Called with the core's global lock held: it may take the transport's own locks only.
    pub has_remote_cid: Option<unsafe extern "C" fn(t: *const RawTransport, remote_cid: u32, ns: u64) -> bool>,
    /// Drops the packets charged to socket `owner` (`RawPkt::owner`) that a queueing
    /// transport still holds for `remote_cid` (namespace `ns`): a connect that timed out takes
    /// its REQUEST back (in-tree `cancel_pkt`), so that a guest that takes it late does not
    /// accept a connection the host has given up. `None`: the transport queues nothing.
    /// Process context, no rvsock spinlock held.
    pub cancel_pkt: Option<unsafe extern "C" fn(t: *const RawTransport, owner: *mut c_void, remote_cid: u32, ns: u64)>,
    /// Transport private data.
    pub priv_: *mut c_void,
}

// SAFETY: a `RawTransport` is immutable while registered and only read by the core.
unsafe impl Sync for RawTransport {}

// `RawTransport` reaches `struct module` (which holds zero-sized lockdep maps in some
// configurations) only behind pointers, so the C ABI is sound.
#[allow(improper_ctypes)]
extern "C" {
    /// Registers `t`; -EBUSY if a transport of that kind is already registered.
    pub fn rvsock_transport_register(t: *const RawTransport) -> c_int;
    /// Unregisters `t`; every socket still using it is reset first.
    pub fn rvsock_transport_unregister(t: *const RawTransport);
    /// Delivers a received packet to the core, consuming it. Process context, no locks held.
    pub fn rvsock_recv_pkt(t: *const RawTransport, pkt: *mut RawPkt);
    /// Resets every connection of `t` whose remote CID is `cid` (`u32::MAX`: all of them) and
    /// whose socket is in namespace `ns` (`NS_ANY`: any).
    pub fn rvsock_transport_reset(t: *const RawTransport, cid: u32, ns: u64);
    /// The vsock namespace tag of the calling task's network namespace (process context).
    pub fn rvsock_current_ns() -> u64;
    /// Allocates a packet with `cap` payload bytes (header zeroed, len = off = 0); null on OOM.
    pub fn rvsock_pkt_alloc(cap: u32, gfp: crate::ffi::gfp_t) -> *mut RawPkt;
    /// Frees a packet.
    pub fn rvsock_pkt_free(pkt: *mut RawPkt);
    /// Copies up to `n` payload bytes of `pkt` (lent, not consumed), starting `skip` bytes
    /// after its consumed part, into `iter`, whether the payload is inline or pages; returns
    /// the bytes copied (vhost: into guest buffers).
    pub fn rvsock_pkt_copy_to_iter(pkt: *mut RawPkt, skip: u32, n: usize, iter: *mut crate::ffi::iov_iter) -> usize;
    /// The `i`-th piece (page, offset, length) of a page payload (lent, not consumed); false
    /// past the last piece or for an inline payload. At
    /// most `EXT_MAX_FRAGS` pieces per packet: a transport that gives
    /// each piece its own descriptor (virtio) needs that many plus one for the header.
    pub fn rvsock_pkt_ext_frag(
        pkt: *const RawPkt,
        i: u32,
        page: *mut *mut crate::ffi::page,
        off: *mut u32,
        len: *mut u32,
    ) -> bool;
    /// Allocates a packet whose `len`-byte payload (at most 64 KiB) is pages of its own,
    /// copied from `iter` (vhost: a guest's packet larger than an inline payload, which would
    /// otherwise take a 128 KiB allocation); null on OOM or a short copy.
    pub fn rvsock_pkt_alloc_from_iter(len: u32, iter: *mut crate::ffi::iov_iter) -> *mut RawPkt;
    /// Makes a hold for a host transport that hands the core a guest's pages by reference:
    /// up to `cap` (at most 32) payloads at once; `notify(ctx, cookie)` is called, from any
    /// context (possibly atomic, under the core's locks: it may only take leaf locks and queue
    /// work), when a payload lets go of its pages (freed, or copied by `rvsock_hold_detach`),
    /// until `rvsock_hold_free`. Null on OOM.
    pub fn rvsock_hold_new(cap: u32, notify: Option<unsafe extern "C" fn(*mut c_void, u32)>, ctx: *mut c_void) -> *mut RawHold;
    /// Frees a hold: no callback runs after this returns; payloads still listed keep their
    /// pages (page references) until they are freed.
    pub fn rvsock_hold_free(hold: *mut RawHold);
    /// Copies the pages of every payload listed in `hold` into pages of their own (process
    /// context, may sleep), telling the callback of each; returns how many are still listed
    /// (zero unless memory ran out with a signal pending).
    pub fn rvsock_hold_detach(hold: *mut RawHold) -> u32;
    /// Allocates a packet whose `len`-byte payload is `iter`'s pages taken by reference (a
    /// user-backed iterator of the calling task: vhost's view of guest memory), listed in
    /// `hold` under `cookie`. Null when not taken (hold full, pages not pinnable, too many
    /// pieces, OOM): the iterator is where it was, and the caller copies.
    pub fn rvsock_pkt_alloc_held(hold: *mut RawHold, len: u32, iter: *mut crate::ffi::iov_iter, cookie: u32) -> *mut RawPkt;
    /// Whether `pkt`'s payload is a MSG_ZEROCOPY send's user pages, whose completion waits for
    /// the packet to be freed (virtio: reclaim such packets promptly); false for inline
    /// payloads and pages of the packet's own.
    pub fn rvsock_pkt_notifies(pkt: *const RawPkt) -> bool;
    /// Whether a capture device (vsockmon) is open: one relaxed load. Any context.
    pub fn rvsock_tap_active() -> bool;
    /// Packet capture, where a transport puts a packet on the wire or takes it off (as
    /// in-tree's transports do: a packet that never went is never captured): a copy of `pkt`
    /// (lent, not consumed: its header and unread payload) in the capture format, to be handed
    /// to the capture devices with `rvsock_tap_deliver` or freed with `rvsock_tap_drop`; null
    /// when no capture device is open or memory ran out. Process context.
    pub fn rvsock_tap_copy(pkt: *const RawPkt) -> *mut c_void;
    /// A capture of a guest packet a transport puts together itself (vhost: one receive
    /// buffer, which may hold a piece of a packet or several packets joined, as in-tree 7.x
    /// captures each buffer it fills): `hdr` is the `HDR_LEN`-byte wire header written, `len`
    /// the payload bytes to follow by `rvsock_tap_append`. Null as for `rvsock_tap_copy`.
    pub fn rvsock_tap_start(hdr: *const u8, len: u32) -> *mut c_void;
    /// Appends the first `n` unread payload bytes of `pkt` (lent) to a capture from
    /// `rvsock_tap_start`; false, appending nothing, if they exceed its skb's tailroom (at
    /// least the `len` it was given: the caller appends no more than that).
    pub fn rvsock_tap_append(copy: *mut c_void, pkt: *const RawPkt, n: u32) -> bool;
    /// Hands a copy from `rvsock_tap_copy` or `rvsock_tap_start` to every capture device,
    /// consuming it. Takes the core's tap lock, which nests inside the transports' locks and
    /// the core's send order lock (`send_pkt` runs under it); nothing is taken inside it.
    pub fn rvsock_tap_deliver(copy: *mut c_void);
    /// Frees a copy from `rvsock_tap_copy` or `rvsock_tap_start` unseen (its packet did not go
    /// after all).
    pub fn rvsock_tap_drop(copy: *mut c_void);
}
