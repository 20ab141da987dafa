// SPDX-License-Identifier: GPL-2.0
//! Safe owning handle over the core's packet buffer (`RawPkt`), and a FIFO of packets that
//! needs no allocation (packets are linked through their own `next` field). Included by path
//! into every module; allocation and freeing always go through the core's exported functions.

use crate::abi::{self, RawPkt, HDR_LEN};
use crate::proto::hdr::Hdr;
use core::ptr::NonNull;
use kernel::prelude::*;

/// An owned packet. Dropping it frees it.
///
/// # Invariants
/// `self.0` points to a live packet allocated by `rvsock_pkt_alloc` whose payload area holds
/// `cap` bytes, and nobody else owns it.
pub struct Pkt(NonNull<RawPkt>);

// SAFETY: a packet is plain memory owned by exactly one handle; it may move between threads.
unsafe impl Send for Pkt {}

impl Pkt {
    /// Allocates a packet with room for `cap` payload bytes.
    pub fn alloc(cap: u32, atomic: bool) -> Result<Pkt> {
        let gfp = if atomic { kernel::bindings::GFP_ATOMIC } else { kernel::bindings::GFP_KERNEL };
        // SAFETY: plain allocation call; a null result is handled below.
        let p = unsafe { abi::rvsock_pkt_alloc(cap, gfp) };
        NonNull::new(p).map(Pkt).ok_or(ENOMEM)
    }

    /// Takes ownership of a raw packet (null gives `None`).
    ///
    /// # Safety
    /// `p` is null or a packet from `rvsock_pkt_alloc` that the caller owns and gives away.
    pub unsafe fn from_raw(p: *mut RawPkt) -> Option<Pkt> {
        NonNull::new(p).map(Pkt)
    }

    /// Gives up ownership, returning the raw pointer (for `send_pkt` and friends).
    pub fn into_raw(self) -> *mut RawPkt {
        let p = self.0.as_ptr();
        core::mem::forget(self);
        p
    }

    fn raw(&self) -> &RawPkt {
        // SAFETY: by the type invariant the packet is live and owned by `self`.
        unsafe { self.0.as_ref() }
    }

    fn raw_mut(&mut self) -> &mut RawPkt {
        // SAFETY: by the type invariant the packet is live and exclusively owned by `self`.
        unsafe { self.0.as_mut() }
    }

    /// The decoded header.
    pub fn hdr(&self) -> Hdr {
        Hdr::decode(&self.raw().hdr)
    }

    /// Encodes `h` into the header.
    pub fn set_hdr(&mut self, h: &Hdr) {
        h.encode_into(&mut self.raw_mut().hdr);
    }

    /// Payload bytes present.
    pub fn len(&self) -> u32 {
        self.raw().len
    }

    /// Payload capacity.
    pub fn cap(&self) -> u32 {
        self.raw().cap
    }

    /// Payload bytes consumed so far.
    pub fn off(&self) -> u32 {
        self.raw().off
    }

    /// Payload bytes not consumed yet.
    pub fn remaining(&self) -> u32 {
        self.raw().len.saturating_sub(self.raw().off)
    }

    /// Marks `n` more payload bytes consumed (clamped to what is there).
    pub fn consume(&mut self, n: u32) {
        let r = self.raw_mut();
        r.off = r.off.saturating_add(n).min(r.len);
    }

    /// Sets the payload length (clamped to the capacity, unless the payload is external).
    pub fn set_len(&mut self, len: u32) {
        let r = self.raw_mut();
        r.len = if r.ext.is_null() { len.min(r.cap) } else { len };
        r.off = r.off.min(r.len);
    }

    /// The core-private payload extension (see `RawPkt::ext`), null for inline payloads.
    pub fn ext(&self) -> *mut core::ffi::c_void {
        self.raw().ext
    }

    /// Charges the packet to `sk` (core only: `RawPkt::owner`; the caller has added
    /// `alloc_size(cap)` to that socket's `sk_wmem_alloc`).
    pub fn set_owner(&mut self, sk: *mut core::ffi::c_void) {
        self.raw_mut().owner = sk;
    }

    /// The socket the packet is charged to (`RawPkt::owner`; null if none): transports only
    /// compare it (`RawTransport::cancel_pkt`).
    pub fn owner(&self) -> *mut core::ffi::c_void {
        self.raw().owner
    }

    /// The namespace tag (`RawPkt::ns`).
    pub fn ns(&self) -> u64 {
        self.raw().ns
    }

    /// Sets the namespace tag (`RawPkt::ns`).
    pub fn set_ns(&mut self, ns: u64) {
        self.raw_mut().ns = ns;
    }

    /// Whether the payload is a MSG_ZEROCOPY send's user pages, whose completion waits for
    /// this packet to be freed (not an inline payload, nor pages of the packet's own).
    pub fn notifies(&self) -> bool {
        if self.raw().ext.is_null() {
            return false;
        }
        // SAFETY: the packet is live and lent for the call (type invariant).
        unsafe { abi::rvsock_pkt_notifies(self.0.as_ptr()) }
    }

    /// Attaches an external payload of `len` bytes (core only; freed with the packet).
    pub fn set_ext(&mut self, ext: *mut core::ffi::c_void, len: u32) {
        let r = self.raw_mut();
        r.ext = ext;
        r.len = len;
        r.off = 0;
    }

    /// A capture copy of the packet as it is now (header, unread payload) for the capture
    /// devices (vsockmon); `None` with none open (the usual case: one call, one load) or
    /// when memory ran out. A transport takes it where the packet goes on or comes off the
    /// wire, and delivers it once the packet went.
    pub fn capture(&self) -> Option<Captured> {
        // SAFETY: the packet is live and lent, read only, for the call (type invariant).
        NonNull::new(unsafe { abi::rvsock_tap_copy(self.0.as_ptr()) }).map(Captured)
    }

    /// Hands a copy of the packet to the capture devices now (see [`Pkt::capture`]).
    pub fn tap(&self) {
        if let Some(c) = self.capture() {
            c.deliver();
        }
    }

    /// The raw packet, lent for a call into the core's ABI for as long as `self` is borrowed.
    pub fn raw_ptr(&mut self) -> *mut RawPkt {
        self.0.as_ptr()
    }

    /// The word the ABI leaves to the transport holding the packet (`RawPkt::xmark`; the
    /// core never reads it).
    pub fn xmark_mut(&mut self) -> &mut u32 {
        &mut self.raw_mut().xmark
    }

    /// Start of header + payload, as one buffer of `HDR_LEN + cap` bytes (for DMA mapping).
    pub fn wire_ptr(&mut self) -> *mut u8 {
        self.raw_mut().hdr.as_mut_ptr()
    }

    /// Header + payload length on the wire.
    pub fn wire_len(&self) -> usize {
        HDR_LEN + self.raw().len as usize
    }

    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: the payload immediately follows the `RawPkt` header in the same allocation.
        unsafe { (self.0.as_ptr() as *mut u8).add(core::mem::size_of::<RawPkt>()) }
    }

    /// The unconsumed inline payload bytes (empty for an external payload).
    pub fn unread(&self) -> &[u8] {
        let r = self.raw();
        if !r.ext.is_null() {
            return &[];
        }
        let (off, len) = (r.off.min(r.len) as usize, r.len.min(r.cap) as usize);
        // SAFETY: `off <= len <= cap` bytes of payload follow the header and are initialised
        // up to `len` (writers set `len` only after filling the bytes).
        unsafe { core::slice::from_raw_parts(self.data_ptr().add(off), len - off) }
    }

    /// The whole payload area (`cap` bytes) for filling; set `len` afterwards. The memory
    /// is not initialised (`kmalloc`), hence `MaybeUninit`: only the first `len` bytes are
    /// ever read, and writers set `len` after filling them.
    pub fn buf_mut(&mut self) -> &mut [core::mem::MaybeUninit<u8>] {
        let cap = self.raw().cap as usize;
        // SAFETY: the allocation holds `cap` payload bytes after the header; `&mut self`
        // guarantees exclusive access; `MaybeUninit` makes no claim about their contents.
        unsafe { core::slice::from_raw_parts_mut(self.data_ptr().cast(), cap) }
    }

    /// Copies `src` into the payload area after the present payload (inline packets only),
    /// as far as the capacity allows; returns the bytes appended.
    pub fn append(&mut self, src: &[u8]) -> u32 {
        let r = self.raw();
        if !r.ext.is_null() {
            return 0;
        }
        let len = r.len.min(r.cap);
        let n = (src.len() as u64).min(u64::from(r.cap - len)) as u32;
        // SAFETY: `len + n <= cap` bytes of payload area follow the header; `src` is a valid
        // buffer that cannot overlap this packet (we hold it exclusively).
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.data_ptr().add(len as usize), n as usize) };
        self.raw_mut().len = len + n;
        n
    }

    /// Free payload room after the present payload (0 for an external payload).
    pub fn room(&self) -> u32 {
        let r = self.raw();
        if r.ext.is_null() { r.cap.saturating_sub(r.len) } else { 0 }
    }

    /// Kernel memory this packet holds: its allocation as the allocator rounds it, plus the
    /// bytes and the descriptor of a page payload.
    pub fn mem_cost(&self) -> u32 {
        let r = self.raw();
        let ext = if r.ext.is_null() { 0 } else { r.len.saturating_add(abi::EXT_DESC_SIZE) };
        alloc_size(r.cap).saturating_add(ext)
    }
}

/// The memory `rvsock_pkt_alloc(cap)` takes: `kmalloc` rounds a request up to its size class
/// (powers of two, plus 96 and 192 bytes), and past 8 KiB to a power-of-two number of pages.
pub fn alloc_size(cap: u32) -> u32 {
    let n = (core::mem::size_of::<RawPkt>() as u32).saturating_add(cap);
    match n {
        0..=8 => 8,
        65..=96 => 96,
        129..=192 => 192,
        _ => n.checked_next_power_of_two().unwrap_or(u32::MAX),
    }
}

impl Drop for Pkt {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own the packet; it is not used after this.
        unsafe { abi::rvsock_pkt_free(self.0.as_ptr()) };
    }
}

/// Whether a capture device (vsockmon) is open.
pub fn capturing() -> bool {
    // SAFETY: no arguments; reads one atomic of the core.
    unsafe { abi::rvsock_tap_active() }
}

/// A packet's copy for the capture devices ([`Pkt::capture`]): [`Captured::deliver`] hands
/// it to them; dropped, it is freed unseen (the packet did not go after all).
///
/// # Invariants
/// `self.0` is a copy from `rvsock_tap_copy` or `rvsock_tap_start` that nobody else owns.
pub struct Captured(NonNull<core::ffi::c_void>);

// SAFETY: the copy is an skb owned by this handle alone; it may move between threads.
unsafe impl Send for Captured {}

impl Captured {
    /// A capture the transport puts together itself ([`abi::rvsock_tap_start`]): header
    /// `h` (as written to the wire), `len` payload bytes to follow by [`Captured::append`];
    /// `None` when not capturing or out of memory.
    pub fn start(h: &Hdr, len: u32) -> Option<Captured> {
        let w = h.encode();
        // SAFETY: `w` holds `HDR_LEN` bytes, read during the call.
        NonNull::new(unsafe { abi::rvsock_tap_start(w.as_ptr(), len) }).map(Captured)
    }

    /// Appends the first `n` unread payload bytes of `p`; false if they exceed the room.
    pub fn append(&mut self, p: &Pkt, n: u32) -> bool {
        // SAFETY: ours by the type invariant; `p` is live and lent (read only) for the call.
        unsafe { abi::rvsock_tap_append(self.0.as_ptr(), p.0.as_ptr(), n) }
    }

    /// Hands the copy to every capture device (takes the core's tap lock).
    pub fn deliver(self) {
        let c = self.0.as_ptr();
        core::mem::forget(self);
        // SAFETY: ours by the type invariant, given away here (`forget` above).
        unsafe { abi::rvsock_tap_deliver(c) };
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        // SAFETY: ours by the type invariant; not used after this.
        unsafe { abi::rvsock_tap_drop(self.0.as_ptr()) };
    }
}

/// A FIFO of packets linked through `RawPkt::next`; owns its packets.
pub struct PktQueue {
    head: *mut RawPkt,
    tail: *mut RawPkt,
    count: u32,
    /// Sum of `Pkt::mem_cost` of the queued packets.
    mem: u32,
}

// SAFETY: the queue exclusively owns its packets (see `Pkt`), so it may move between threads.
unsafe impl Send for PktQueue {}

impl PktQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        PktQueue { head: core::ptr::null_mut(), tail: core::ptr::null_mut(), count: 0, mem: 0 }
    }

    /// Whether the queue holds no packet.
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Number of packets queued.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Kernel memory held by the queued packets (sum of [`Pkt::mem_cost`]).
    pub fn mem(&self) -> u32 {
        self.mem
    }

    /// Appends a packet.
    pub fn push_back(&mut self, p: Pkt) {
        self.mem = self.mem.saturating_add(p.mem_cost());
        let raw = p.into_raw();
        // SAFETY: `raw` is a live packet we now own; `tail`, when non-null, is the last
        // packet of this queue, also owned by it.
        unsafe {
            (*raw).next = core::ptr::null_mut();
            if self.tail.is_null() {
                self.head = raw;
            } else {
                (*self.tail).next = raw;
            }
        }
        self.tail = raw;
        self.count += 1;
    }

    /// Puts a packet back at the front (a reader returning a partly consumed packet).
    pub fn push_front(&mut self, p: Pkt) {
        self.mem = self.mem.saturating_add(p.mem_cost());
        let raw = p.into_raw();
        // SAFETY: `raw` is a live packet we now own.
        unsafe { (*raw).next = self.head };
        if self.head.is_null() {
            self.tail = raw;
        }
        self.head = raw;
        self.count += 1;
    }

    /// Removes the first packet.
    pub fn pop_front(&mut self) -> Option<Pkt> {
        let raw = self.head;
        if raw.is_null() {
            return None;
        }
        // SAFETY: `raw` is the live head packet owned by this queue; we unlink it and hand
        // ownership to the returned `Pkt`.
        unsafe {
            self.head = (*raw).next;
            (*raw).next = core::ptr::null_mut();
        }
        if self.head.is_null() {
            self.tail = core::ptr::null_mut();
        }
        self.count -= 1;
        // SAFETY: see above: we own `raw` now.
        let p = unsafe { Pkt::from_raw(raw) };
        if let Some(p) = &p {
            self.mem = self.mem.saturating_sub(p.mem_cost());
        }
        p
    }

    /// Removes the first packet if `f` accepts it.
    pub fn pop_front_if(&mut self, f: impl FnOnce(&Pkt) -> bool) -> Option<Pkt> {
        if self.head.is_null() {
            return None;
        }
        // SAFETY: `head` is a live packet owned by this queue; the temporary `Pkt` is never
        // dropped (`ManuallyDrop`), so ownership stays with the queue while `f` looks at it.
        let head = core::mem::ManuallyDrop::new(unsafe { Pkt::from_raw(self.head) }?);
        if f(&head) { self.pop_front() } else { None }
    }

    /// Takes out the packets `f` picks, in their order; the rest stay in theirs.
    pub fn extract(&mut self, mut f: impl FnMut(&Pkt) -> bool) -> PktQueue {
        let mut keep = PktQueue::new();
        let mut out = PktQueue::new();
        while let Some(p) = self.pop_front() {
            if f(&p) { out.push_back(p) } else { keep.push_back(p) }
        }
        *self = keep;
        out
    }

    /// Moves every packet of `front` ahead of this queue's, in their order (a reader giving
    /// back several packets it took).
    pub fn prepend(&mut self, mut front: PktQueue) {
        if front.head.is_null() {
            return;
        }
        // SAFETY: `front.tail` is the live last packet of `front`, which we take over whole.
        unsafe { (*front.tail).next = self.head };
        if self.head.is_null() {
            self.tail = front.tail;
        }
        self.head = front.head;
        self.count += front.count;
        self.mem = self.mem.saturating_add(front.mem);
        // `front` no longer owns its packets.
        front.head = core::ptr::null_mut();
        front.tail = core::ptr::null_mut();
        front.count = 0;
        front.mem = 0;
    }

    /// Lends the last packet to `f` (e.g. to append a small payload to its tail room).
    pub fn with_back<R>(&mut self, f: impl FnOnce(&mut Pkt) -> R) -> Option<R> {
        if self.tail.is_null() {
            return None;
        }
        // SAFETY: `tail` is a live packet owned by this queue; the temporary `Pkt` is never
        // dropped (`ManuallyDrop`), so ownership stays with the queue, and `&mut self` makes
        // the access exclusive. (The queue's `mem` stays exact as long as `f` only appends to
        // an inline payload, which leaves `mem_cost` unchanged.)
        let mut p = core::mem::ManuallyDrop::new(unsafe { Pkt::from_raw(self.tail) }?);
        Some(f(&mut p))
    }

    /// Visits the packets front to back without removing them; stops when `f` returns false.
    pub fn for_each(&self, mut f: impl FnMut(&Pkt) -> bool) {
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: `cur` is a live packet owned by this queue. The temporary `Pkt` is
            // forgotten below so it never frees the packet.
            let p = core::mem::ManuallyDrop::new(unsafe { Pkt::from_raw(cur) });
            let Some(pkt) = p.as_ref() else { break };
            let go = f(pkt);
            // SAFETY: as above, `cur` is live.
            cur = unsafe { (*cur).next };
            if !go {
                break;
            }
        }
    }
}

impl Drop for PktQueue {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}
