// SPDX-License-Identifier: GPL-2.0
//! Binding layer of `rvsock_virtio.ko`: safe types over the kernel's virtio API (the bound
//! device, its virtqueues, the driver registration) and over work items and workqueues. All
//! raw FFI of the module except the module parameter and the transport callbacks lives here;
//! the driver logic in `dev.rs` is safe Rust.
//!
//! Ownership of in-flight buffers is carried by the types: a packet posted on an [`RxVq`] or
//! [`TxVq`] belongs to the virtqueue until `get`/`detach` hands it back, so a buffer can be
//! neither freed while the device may still access it nor leaked at teardown.
//!
//! # Wire image of a packet
//!
//! The device sees a packet as one contiguous buffer: the 44-byte header immediately followed
//! by the payload. In `RawPkt` the payload starts at `size_of::<RawPkt>()`, while the `hdr`
//! field may end a few bytes earlier (the struct's tail padding: `hdr` ends at 76, the payload
//! starts at 80 with the current ABI). The wire image therefore starts `HDR_LEN` bytes before
//! the payload ([`WIRE_OFF`]); when that is not where `hdr` is, the 44 header bytes are moved
//! between the two places (a 44-byte `memmove`, never a payload copy): before a tx buffer is
//! posted, and after an rx buffer comes back. Both places lie inside the `RawPkt` allocation.

use crate::abi::{RawPkt, HDR_LEN};
use crate::ffi;
use crate::pkt::Pkt;
use core::ffi::c_void;
use core::ptr::NonNull;
use kernel::prelude::*;
use kernel::types::Opaque;

/// Offset of `RawPkt::hdr` in the allocation.
const HDR_OFF: usize = core::mem::offset_of!(RawPkt, hdr);
/// Offset of the payload in the allocation (it follows the whole `RawPkt`).
const DATA_OFF: usize = core::mem::size_of::<RawPkt>();
/// Offset of the wire image (header immediately followed by the payload).
const WIRE_OFF: usize = DATA_OFF - HDR_LEN;
// The wire header never starts before `hdr`: it overlaps `hdr` and the tail padding only, so
// moving it never touches the other fields of `RawPkt`.
const _: () = assert!(WIRE_OFF >= HDR_OFF && WIRE_OFF - HDR_OFF < 8);

/// Moves the header from `hdr` to the wire position (before posting a tx buffer).
///
/// # Safety
/// `raw` is a live packet the caller owns, not accessed by anybody else meanwhile.
unsafe fn hdr_to_wire(raw: *mut RawPkt) {
    if WIRE_OFF != HDR_OFF {
        let base = raw.cast::<u8>();
        // SAFETY: both ranges lie inside the `RawPkt` part of the allocation (see the const
        // assertion above); `copy` allows the overlap.
        unsafe { core::ptr::copy(base.add(HDR_OFF), base.add(WIRE_OFF), HDR_LEN) };
    }
}

/// Moves the header from the wire position back to `hdr` (after an rx buffer came back, or
/// when a tx buffer was not posted after all).
///
/// # Safety
/// As [`hdr_to_wire`]; the device no longer accesses the buffer.
unsafe fn wire_to_hdr(raw: *mut RawPkt) {
    if WIRE_OFF != HDR_OFF {
        let base = raw.cast::<u8>();
        // SAFETY: as in `hdr_to_wire`.
        unsafe { core::ptr::copy(base.add(WIRE_OFF), base.add(HDR_OFF), HDR_LEN) };
    }
}

/// Builds the one-entry scatterlist of `len` bytes at `buf` and calls `add` with it.
///
/// # Safety
/// `buf..buf+len` is linear-map memory (kmalloc) that stays valid while the device owns it.
unsafe fn with_sg<R>(buf: *mut u8, len: usize, add: impl FnOnce(*mut ffi::scatterlist) -> R) -> R {
    let mut sg = core::mem::MaybeUninit::<ffi::scatterlist>::zeroed();
    // SAFETY: `sg_init_one` initialises the whole entry; the buffer is valid per the contract.
    // The virtio core copies the entry into its descriptors, so a stack entry is enough.
    unsafe { ffi::sg_init_one(sg.as_mut_ptr(), buf.cast::<c_void>(), len as u32) };
    add(sg.as_mut_ptr())
}

/// One virtqueue of the bound device.
///
/// # Invariants
/// Points to a live virtqueue returned by `find_vqs` that has not been deleted: `del_vqs`
/// consumes every handle. Operations need `&mut self`, which serialises them as the virtio
/// API requires (each handle lives under the lock of its direction).
pub(crate) struct Vq(NonNull<ffi::virtqueue>);

// SAFETY: a virtqueue may be used from any thread as long as calls are serialised, which
// `&mut self` ensures.
unsafe impl Send for Vq {}

impl Vq {
    /// Number of descriptors in the ring.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: live virtqueue (type invariant).
        unsafe { ffi::virtqueue_get_vring_size(self.0.as_ptr()) }
    }

    /// Notifies the device of new buffers (if it asked to be notified).
    pub(crate) fn kick(&mut self) {
        // SAFETY: live virtqueue, calls serialised by `&mut self`.
        unsafe { ffi::virtqueue_kick(self.0.as_ptr()) };
    }

    /// Publishes the buffers added since the last call; true if the device asked to be
    /// notified of them, and then `notify` must follow (a later call does not say so again).
    /// False while the device is at work on the ring: it finds them before it sleeps again.
    pub(crate) fn kick_prepare(&mut self) -> bool {
        // SAFETY: as in `kick`.
        unsafe { ffi::virtqueue_kick_prepare(self.0.as_ptr()) }
    }

    /// Notifies the device (after `kick_prepare` said it wants to be).
    pub(crate) fn notify(&mut self) {
        // SAFETY: as in `kick`. False means a broken device, which the next ring operation
        // reports.
        let _ = unsafe { ffi::virtqueue_notify(self.0.as_ptr()) };
    }

    /// Suppresses used-buffer callbacks (a hint).
    pub(crate) fn disable_cb(&mut self) {
        // SAFETY: as in `kick`.
        unsafe { ffi::virtqueue_disable_cb(self.0.as_ptr()) };
    }

    /// Re-enables callbacks; false if used buffers arrived meanwhile (process them first).
    pub(crate) fn enable_cb(&mut self) -> bool {
        // SAFETY: as in `kick`.
        unsafe { ffi::virtqueue_enable_cb(self.0.as_ptr()) }
    }

    /// The next used buffer's token and the length the device reports writing.
    fn get_raw(&mut self) -> Option<(NonNull<c_void>, u32)> {
        let mut len: kernel::ffi::c_uint = 0;
        // SAFETY: as in `kick`; `len` is a valid out-parameter.
        let p = unsafe { ffi::virtqueue_get_buf(self.0.as_ptr(), &mut len) };
        NonNull::new(p).map(|p| (p, len))
    }

    /// The token of a buffer the device has not returned (only after a device reset).
    fn detach_raw(&mut self) -> Option<NonNull<c_void>> {
        // SAFETY: as in `kick`. Callers only use it on a reset device (see `detach`).
        NonNull::new(unsafe { ffi::virtqueue_detach_unused_buf(self.0.as_ptr()) })
    }
}

/// The receive virtqueue: every buffer on it is a packet posted by [`RxVq::post`].
pub(crate) struct RxVq(pub(crate) Vq);

impl RxVq {
    /// Posts `pkt` as one device-writable buffer (header + `cap` payload bytes). On failure the
    /// packet comes back with the error (`ENOSPC`: ring full).
    pub(crate) fn post(&mut self, pkt: Pkt) -> core::result::Result<(), (Error, Pkt)> {
        let raw = pkt.into_raw();
        // SAFETY: we own `raw` (from `into_raw`); its allocation holds `DATA_OFF + cap` bytes,
        // so the wire image `WIRE_OFF .. DATA_OFF + cap` is inside it. The token is the packet,
        // owned by the ring until `get`/`detach` returns it.
        // The wire header is zeroed first: a buffer the device returns without writing it then
        // reads as op 0 (invalid, dropped), never as the stale header of an earlier packet.
        let r = unsafe {
            let len = HDR_LEN + (*raw).cap as usize;
            core::ptr::write_bytes(raw.cast::<u8>().add(WIRE_OFF), 0, HDR_LEN);
            with_sg(raw.cast::<u8>().add(WIRE_OFF), len, |sg| {
                ffi::virtqueue_add_inbuf(self.0 .0.as_ptr(), sg, 1, raw.cast(), kernel::bindings::GFP_KERNEL)
            })
        };
        if r == 0 {
            return Ok(());
        }
        // SAFETY: the ring refused the buffer, so we still own it.
        match unsafe { Pkt::from_raw(raw) } {
            Some(p) => Err((Error::from_errno(r), p)),
            None => Ok(()), // unreachable: `raw` came from a live `Pkt`
        }
    }

    /// The next filled buffer and the length the device reports (header included, not
    /// validated: the caller checks it). The header is back in `RawPkt::hdr`.
    pub(crate) fn get(&mut self) -> Option<(Pkt, u32)> {
        let (tok, len) = self.0.get_raw()?;
        let raw = tok.as_ptr().cast::<RawPkt>();
        // SAFETY: every token on this ring is a packet posted by `post` (type invariant), which
        // the device has returned: ownership comes back to us.
        unsafe {
            wire_to_hdr(raw);
            Pkt::from_raw(raw).map(|p| (p, len))
        }
    }

    /// Takes back a posted buffer the device never returned.
    ///
    /// # Safety
    /// The device has been reset (it no longer accesses any buffer of the ring).
    pub(crate) unsafe fn detach(&mut self) -> Option<Pkt> {
        let tok = self.0.detach_raw()?;
        // SAFETY: tokens on this ring are packets from `post`; after the reset nobody else
        // accesses them.
        unsafe { Pkt::from_raw(tok.as_ptr().cast()) }
    }
}

/// The transmit virtqueue: every buffer on it is a packet posted by [`TxVq::post`].
pub(crate) struct TxVq(pub(crate) Vq);

impl TxVq {
    /// Posts `pkt` (header + `len` payload bytes) as one device-readable buffer, in atomic
    /// context. On failure the packet comes back unchanged with the error (`ENOSPC`: full).
    pub(crate) fn post(&mut self, pkt: Pkt) -> core::result::Result<(), (Error, Pkt)> {
        let raw = pkt.into_raw();
        // SAFETY: we own `raw`; the caller checked `len <= cap` and that the payload is
        // inline (no `ext`), so `WIRE_OFF .. DATA_OFF + len` lies in the allocation. The token
        // is the packet, owned by the ring until `get`/`detach` returns it.
        let r = unsafe {
            hdr_to_wire(raw);
            let len = HDR_LEN + (*raw).len as usize;
            with_sg(raw.cast::<u8>().add(WIRE_OFF), len, |sg| {
                ffi::virtqueue_add_outbuf(self.0 .0.as_ptr(), sg, 1, raw.cast(), kernel::bindings::GFP_ATOMIC)
            })
        };
        if r == 0 {
            return Ok(());
        }
        // SAFETY: the ring refused the buffer, so we still own it; put the header back so the
        // packet can be posted again later.
        unsafe {
            wire_to_hdr(raw);
            match Pkt::from_raw(raw) {
                Some(p) => Err((Error::from_errno(r), p)),
                None => Ok(()), // unreachable: `raw` came from a live `Pkt`
            }
        }
    }

    /// Posts a packet whose payload is pages (MSG_ZEROCOPY's user pages, or a large copied
    /// payload's own): the header and each page piece are separate device-readable
    /// descriptors (the device reads the pages
    /// directly). On failure the packet comes back with the error (`ENOSPC`: ring full).
    pub(crate) fn post_ext(&mut self, pkt: Pkt, sgt: &mut SgTable) -> core::result::Result<(), (Error, Pkt)> {
        let raw = pkt.into_raw();
        // SAFETY: we own `raw`; `fill_ext_sg` describes memory that stays valid while the
        // ring owns the packet (the token), until `get`/`detach` returns it.
        let r = unsafe {
            match fill_ext_sg(raw, sgt) {
                Ok(n) => ffi::virtqueue_add_outbuf(
                    self.0 .0.as_ptr(),
                    sgt.0.as_mut_ptr(),
                    n as u32,
                    raw.cast(),
                    kernel::bindings::GFP_ATOMIC,
                ),
                Err(e) => e.to_errno(),
            }
        };
        if r == 0 {
            return Ok(());
        }
        // SAFETY: the ring refused the buffer, so we still own it.
        match unsafe { Pkt::from_raw(raw) } {
            Some(p) => Err((Error::from_errno(r), p)),
            None => Ok(()), // unreachable: `raw` came from a live `Pkt`
        }
    }

    /// The next packet the device has finished with.
    pub(crate) fn get(&mut self) -> Option<Pkt> {
        let (tok, _len) = self.0.get_raw()?;
        // SAFETY: every token on this ring is a packet posted by `post`, returned by the device.
        unsafe { Pkt::from_raw(tok.as_ptr().cast()) }
    }

    /// Takes back a posted packet the device never returned.
    ///
    /// # Safety
    /// The device has been reset.
    pub(crate) unsafe fn detach(&mut self) -> Option<Pkt> {
        let tok = self.0.detach_raw()?;
        // SAFETY: as in `RxVq::detach`.
        unsafe { Pkt::from_raw(tok.as_ptr().cast()) }
    }
}

/// Most descriptors one tx packet takes: the header plus the pieces of a MSG_ZEROCOPY payload
/// (`abi::EXT_MAX_FRAGS`).
pub(crate) const TX_MAX_SG: usize = 1 + crate::abi::EXT_MAX_FRAGS;

/// Scatterlist entries for posting one zerocopy packet (kept in the tx state, not on the stack).
pub(crate) struct SgTable([ffi::scatterlist; TX_MAX_SG]);

impl SgTable {
    /// An empty table.
    pub(crate) fn new() -> SgTable {
        // SAFETY: all-zero is a valid (empty) scatterlist entry; `sg_init_table` runs before use.
        SgTable(unsafe { core::mem::MaybeUninit::zeroed().assume_init() })
    }
}

/// The `i`-th piece of the external payload of `raw`.
///
/// # Safety
/// `raw` is a live packet the caller owns.
unsafe fn ext_frag(raw: *const RawPkt, i: usize) -> Option<(*mut ffi::page, u32, u32)> {
    let (mut page, mut off, mut len) = (core::ptr::null_mut(), 0u32, 0u32);
    let i = u32::try_from(i).ok()?;
    // SAFETY: live packet (contract); the out-parameters are our locals.
    unsafe { crate::abi::rvsock_pkt_ext_frag(raw, i, &mut page, &mut off, &mut len) }.then_some((page, off, len))
}

/// Fills `sgt` with the header of `raw` and the pieces of its external payload; returns the
/// number of entries.
///
/// # Safety
/// `raw` is a live packet the caller owns, with an external payload.
unsafe fn fill_ext_sg(raw: *mut RawPkt, sgt: &mut SgTable) -> Result<usize> {
    let mut n = 0usize;
    let mut total = 0u64;
    // SAFETY (both loops): `raw` is live and owned (contract).
    while let Some((_, _, len)) = unsafe { ext_frag(raw, n) } {
        n += 1;
        total += u64::from(len);
        if n + 1 > TX_MAX_SG {
            return Err(E2BIG);
        }
    }
    // SAFETY: as above.
    if n == 0 || total != u64::from(unsafe { (*raw).len }) {
        return Err(EINVAL);
    }
    let sg = sgt.0.as_mut_ptr();
    // SAFETY: `sg` has `TX_MAX_SG >= n + 1` entries; the header is 44 bytes of the kmalloc'd
    // packet; the pages are pinned until the packet is freed, which happens only after the
    // device returns the buffer (or after a reset).
    unsafe {
        ffi::sg_init_table(sg, (n + 1) as u32);
        ffi::rvsock_virtio_sg_set_buf(sg, core::ptr::addr_of!((*raw).hdr).cast(), HDR_LEN as u32);
        for i in 0..n {
            let Some((page, off, len)) = ext_frag(raw, i) else { return Err(EINVAL) };
            ffi::rvsock_virtio_sg_set_page(sg.add(i + 1), page, len, off);
        }
    }
    Ok(n + 1)
}

/// One event buffer (`struct virtio_vsock_event`, written by the device), alone in a slot of
/// 128 bytes (arm64's `ARCH_DMA_MINALIGN`, two x86 cache lines): on a non-coherent DMA
/// platform the cache maintenance of mapping or unmapping it must not write back a line the
/// CPU dirtied beside it (another buffer's preset id, a field of the driver state) over what
/// the device wrote (in-tree 7.3 isolates its event list alike). The alignment also makes
/// the volatile `id` accesses aligned (the C struct is packed).
#[repr(C, align(128))]
pub(crate) struct EventBuf(Opaque<ffi::virtio_vsock_event>);

// SAFETY: the buffer is only accessed through raw pointers: by the device while posted, and by
// the event path (serialised by its lock) once returned.
unsafe impl Send for EventBuf {}
// SAFETY: see `Send`.
unsafe impl Sync for EventBuf {}

impl EventBuf {
    /// An unwritten buffer.
    pub(crate) const fn new() -> EventBuf {
        EventBuf(Opaque::uninit())
    }

    fn get(&self) -> *mut ffi::virtio_vsock_event {
        self.0.get()
    }
}

/// The event virtqueue: every buffer on it is an [`EventBuf`] of the driver state.
pub(crate) struct EvVq(pub(crate) Vq);

impl EvVq {
    /// Posts an event buffer.
    ///
    /// # Safety
    /// `ev` is in linear-map memory that outlives the ring (or a device reset), and the CPU
    /// does not access it until the ring returns it.
    pub(crate) unsafe fn post(&mut self, ev: &EventBuf) -> Result {
        let p = ev.get();
        // SAFETY: per the contract; the token is the buffer's address. The id is preset to a
        // value no event has, so a buffer returned unwritten reads as an unknown event; it is
        // 4-byte aligned (`EventBuf` is 128-aligned, `id` is at offset 0).
        let r = unsafe {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).id), u32::MAX.to_le());
            with_sg(p.cast(), core::mem::size_of::<ffi::virtio_vsock_event>(), |sg| {
                ffi::virtqueue_add_inbuf(self.0 .0.as_ptr(), sg, 1, p.cast(), kernel::bindings::GFP_KERNEL)
            })
        };
        kernel::error::to_result(r)
    }

    /// The address of the next returned event buffer and the length the device reports.
    pub(crate) fn get(&mut self) -> Option<(*const EventBuf, u32)> {
        self.0.get_raw().map(|(p, len)| (p.as_ptr().cast_const().cast(), len))
    }

    /// Forgets the posted event buffers (they belong to the driver state).
    ///
    /// # Safety
    /// The device has been reset.
    pub(crate) unsafe fn detach_all(&mut self) {
        while self.0.detach_raw().is_some() {}
    }
}

/// Reads an event the device returned.
///
/// # Safety
/// `ev` was returned by the event ring and is not posted again yet.
pub(crate) unsafe fn event_id(ev: &EventBuf) -> u32 {
    // SAFETY: per the contract the device no longer writes it; volatile because the device
    // wrote it behind the compiler's back; aligned as in `EvVq::post`.
    let id = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*ev.get()).id)) };
    u32::from_le(id)
}

/// The three virtqueues of a virtio-vsock device, in ring order.
pub(crate) struct Vqs {
    /// Receive ring.
    pub(crate) rx: RxVq,
    /// Transmit ring.
    pub(crate) tx: TxVq,
    /// Event ring.
    pub(crate) ev: EvVq,
}

/// A virtqueue callback (called in interrupt context).
pub(crate) type VqCallback = unsafe extern "C" fn(*mut ffi::virtqueue);

/// The bound virtio device.
///
/// # Invariants
/// Points to the `virtio_device` our driver was probed with. Every copy is dropped before
/// `remove` returns (the driver keeps them in its bound-device state only).
#[derive(Clone)]
pub(crate) struct VDev(NonNull<ffi::virtio_device>);

// SAFETY: the driver core keeps the device alive between probe and remove; the calls below
// are allowed from any process context.
unsafe impl Send for VDev {}

impl VDev {
    /// Wraps the device passed to `probe`/`remove`.
    ///
    /// # Safety
    /// `p` is null or a device bound to our driver until `remove` returns.
    pub(crate) unsafe fn from_raw(p: *mut ffi::virtio_device) -> Option<VDev> {
        NonNull::new(p).map(VDev)
    }

    /// Whether this is the device `p`.
    pub(crate) fn is(&self, p: *mut ffi::virtio_device) -> bool {
        self.0.as_ptr() == p
    }

    /// Whether feature bit `bit` was negotiated.
    pub(crate) fn has_feature(&self, bit: u32) -> bool {
        // SAFETY: live device (type invariant).
        unsafe { ffi::rvsock_virtio_has_feature(self.0.as_ptr(), bit) }
    }

    /// Reads the 64-bit little-endian config field at `offset` (generation-checked).
    pub(crate) fn read_config_u64(&self, offset: u32) -> u64 {
        // SAFETY: live device; the virtio core bounds-checks nothing here, so callers pass
        // offsets of the device's config structure only.
        unsafe { ffi::rvsock_virtio_cread64(self.0.as_ptr(), offset) }
    }

    /// Finds the rx, tx and event virtqueues with their callbacks.
    pub(crate) fn find_vqs(&self, cbs: [(&'static CStr, VqCallback); 3]) -> Result<Vqs> {
        let mut info: [ffi::virtqueue_info; 3] = Default::default();
        for (i, (name, cb)) in info.iter_mut().zip(cbs.iter()) {
            i.name = name.as_char_ptr();
            i.callback = Some(*cb);
        }
        let mut vqs: [*mut ffi::virtqueue; 3] = [core::ptr::null_mut(); 3];
        // SAFETY: live device; `info` and `vqs` hold 3 entries each, as announced.
        let r = unsafe { ffi::rvsock_virtio_find_vqs(self.0.as_ptr(), 3, vqs.as_mut_ptr(), info.as_mut_ptr()) };
        kernel::error::to_result(r)?;
        match (NonNull::new(vqs[0]), NonNull::new(vqs[1]), NonNull::new(vqs[2])) {
            (Some(rx), Some(tx), Some(ev)) => Ok(Vqs { rx: RxVq(Vq(rx)), tx: TxVq(Vq(tx)), ev: EvVq(Vq(ev)) }),
            _ => {
                // SAFETY: find_vqs succeeded, so there are virtqueues to delete; we keep no
                // handle to them.
                unsafe { ffi::rvsock_virtio_del_vqs(self.0.as_ptr()) };
                Err(EINVAL)
            }
        }
    }

    /// Sets DRIVER_OK so the rings may be used (probe, restore).
    pub(crate) fn ready(&self) {
        // SAFETY: live device, called once per probe or restore, after `find_vqs`.
        unsafe { ffi::rvsock_virtio_device_ready(self.0.as_ptr()) };
    }

    /// Resets the device: it stops using every buffer, and no callback runs once this returns.
    pub(crate) fn reset(&self) {
        // SAFETY: live device.
        unsafe { ffi::virtio_reset_device(self.0.as_ptr()) };
    }

    /// Deletes the virtqueues; consumes every handle so none can be used afterwards.
    pub(crate) fn del_vqs(&self, vqs: Vqs) {
        drop(vqs);
        // SAFETY: live device whose virtqueues were found by `find_vqs`; the handles are gone.
        unsafe { ffi::rvsock_virtio_del_vqs(self.0.as_ptr()) };
    }
}

/// A work item embedded in a pinned, long-lived structure.
#[repr(transparent)]
pub(crate) struct Work(Opaque<ffi::work_struct>);

// SAFETY: the workqueue API may be used on a work item from any thread and context.
unsafe impl Send for Work {}
// SAFETY: see `Send`.
unsafe impl Sync for Work {}

impl Work {
    /// An initialiser running `INIT_WORK` with function `f`.
    pub(crate) fn new(f: unsafe extern "C" fn(*mut ffi::work_struct)) -> impl PinInit<Self> {
        // SAFETY: `Work` is a transparent wrapper of a transparent `Opaque<work_struct>`, so
        // the slot is a `work_struct`; INIT_WORK initialises all of it and never fails.
        unsafe {
            ffi::pin_init_from_closure(move |slot: *mut Self| {
                ffi::rvsock_init_work(slot.cast(), Some(f));
                Ok::<(), core::convert::Infallible>(())
            })
        }
    }

    /// Waits for the work to finish and makes sure it is not pending.
    pub(crate) fn cancel_sync(&self) {
        // SAFETY: the work item was initialised by `new` and is pinned.
        unsafe { ffi::cancel_work_sync(self.0.get()) };
    }
}

/// An owned workqueue.
///
/// # Invariants
/// Points to a workqueue from `alloc_workqueue`, destroyed on drop.
pub(crate) struct WorkQueue(NonNull<ffi::workqueue_struct>);

// SAFETY: workqueues are used from any context.
unsafe impl Send for WorkQueue {}
// SAFETY: see `Send`.
unsafe impl Sync for WorkQueue {}

impl WorkQueue {
    /// Allocates a workqueue named `name`.
    pub(crate) fn new(name: &'static CStr) -> Result<WorkQueue> {
        // SAFETY: `name` is a NUL-terminated string without format directives.
        let p = unsafe { ffi::rvsock_alloc_workqueue(name.as_char_ptr(), ffi::WQ_PERCPU_FLAGS, 0) };
        NonNull::new(p).map(WorkQueue).ok_or(ENOMEM)
    }

    /// Queues `w` (no-op if already pending). Callable from interrupt context.
    pub(crate) fn queue(&self, w: &Work) {
        // SAFETY: live workqueue (invariant); `w` is initialised and pinned.
        unsafe { ffi::rvsock_virtio_queue_work(self.0.as_ptr(), w.0.get()) };
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`; destroy_workqueue drains it first.
        unsafe { ffi::destroy_workqueue(self.0.as_ptr()) };
    }
}

/// A `struct virtio_driver` the driver core mutates through the pointer we register.
pub(crate) struct Driver(core::cell::UnsafeCell<ffi::virtio_driver>);

// SAFETY: written once before registration; afterwards only the kernel touches it, under its
// own locking.
unsafe impl Sync for Driver {}

/// Driver callbacks.
pub(crate) type ProbeFn = unsafe extern "C" fn(*mut ffi::virtio_device) -> kernel::ffi::c_int;
/// Remove callback.
pub(crate) type RemoveFn = unsafe extern "C" fn(*mut ffi::virtio_device);
/// Freeze and restore callbacks (0 or a negative errno).
pub(crate) type PmFn = unsafe extern "C" fn(*mut ffi::virtio_device) -> kernel::ffi::c_int;

/// What the driver core calls: binding, unbinding, and around system sleep (`freeze` before
/// the device is reset and suspended, `restore` after it is reset again on resume; the
/// virtio core calls them from its PM callbacks, which exist with CONFIG_PM_SLEEP).
pub(crate) struct Callbacks {
    pub(crate) probe: ProbeFn,
    pub(crate) remove: RemoveFn,
    pub(crate) freeze: PmFn,
    pub(crate) restore: PmFn,
}

impl Driver {
    /// An empty driver, filled by `register`.
    pub(crate) const fn new() -> Driver {
        // SAFETY: all-zero is a valid `virtio_driver` (null pointers, no callbacks).
        Driver(core::cell::UnsafeCell::new(unsafe { core::mem::MaybeUninit::zeroed().assume_init() }))
    }

    /// Fills in and registers the driver.
    ///
    /// # Safety
    /// Called once, not concurrently with anything touching `self`; `ids` ends with a zero
    /// entry; `unregister` is called before the module goes away.
    pub(crate) unsafe fn register(
        &'static self,
        name: &'static CStr,
        ids: &'static [ffi::virtio_device_id],
        features: &'static [kernel::ffi::c_uint],
        cb: Callbacks,
        owner: *mut ffi::module,
    ) -> Result {
        let d = self.0.get();
        // SAFETY: per the contract nobody else accesses the driver yet; the tables are static.
        unsafe {
            (*d).driver.name = name.as_char_ptr();
            (*d).id_table = ids.as_ptr();
            (*d).feature_table = features.as_ptr();
            (*d).feature_table_size = features.len() as _;
            (*d).probe = Some(cb.probe);
            (*d).remove = Some(cb.remove);
            (*d).freeze = Some(cb.freeze);
            (*d).restore = Some(cb.restore);
            kernel::error::to_result(ffi::__register_virtio_driver(d, owner))
        }
    }

    /// Unregisters the driver (calls `remove` for a bound device).
    ///
    /// # Safety
    /// `register` succeeded.
    pub(crate) unsafe fn unregister(&'static self) {
        // SAFETY: per the contract.
        unsafe { ffi::unregister_virtio_driver(self.0.get()) };
    }
}
