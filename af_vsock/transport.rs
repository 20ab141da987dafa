// SPDX-License-Identifier: GPL-2.0
//! The registration API transports plug into, exported to the transport modules as C ABI
//! functions (see `include/abi.rs`): register/unregister, packet delivery, reset, and the
//! packet allocator.

use crate::abi::{RawHold, RawPkt, RawTransport};
use crate::ffi;
use crate::pkt::Pkt;
use crate::proto::hdr::{VMADDR_CID_ANY, VMADDR_CID_HOST};
use crate::sock;
use crate::table::{global, TransportPtr};
use core::ffi::c_int;
use kernel::prelude::*;

/// Registers a transport (exported).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_transport_register(t: *const RawTransport) -> c_int {
    if t.is_null() {
        return EINVAL.to_errno();
    }
    let tp = TransportPtr(t);
    let mut g = global().lock();
    let Some(slot) = g.slot(tp.get().kind) else { return EINVAL.to_errno() };
    if slot.is_some() {
        return EBUSY.to_errno();
    }
    *slot = Some(tp);
    0
}

/// Unregisters a transport (exported). Sockets pin the transport's module, so none can
/// still use it here unless they were reset; reset whatever remains anyway. The slot is
/// cleared first, so that no connect() on another CPU picks the transport after the reset
/// has walked the tables (its socket would wait for a RESPONSE until its timeout).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_transport_unregister(t: *const RawTransport) {
    {
        let mut g = global().lock();
        let g = &mut *g;
        for slot in [&mut g.local, &mut g.g2h, &mut g.h2g] {
            if slot.map(|s| s.0) == Some(t) {
                *slot = None;
            }
        }
    }
    // SAFETY: forwarding our own arguments.
    unsafe { rvsock_transport_reset(t, u32::MAX, crate::abi::NS_ANY) };
}

/// Delivers a received packet (exported; consumes it).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_recv_pkt(t: *const RawTransport, pkt: *mut RawPkt) {
    // SAFETY: the transport hands us ownership of a packet from `rvsock_pkt_alloc`.
    let Some(p) = (unsafe { Pkt::from_raw(pkt) }) else { return };
    if t.is_null() {
        return;
    }
    crate::rx::recv_pkt(TransportPtr(t), p);
}

/// Resets the connections of `t` towards `cid` (`u32::MAX`: all) of sockets in a namespace
/// that reaches `ns` (`NS_ANY`: all) (exported). Process context (callers: a device going
/// away or changing CID, a transport unregistering).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_transport_reset(t: *const RawTransport, cid: u32, ns: u64) {
    // The sockets are collected under the global spinlock, with atomic allocations; one that
    // failed must not leave the rest of the connections up on a dead transport (their readers
    // and writers would wait forever): reset what was collected and collect again (reset
    // sockets are not collected twice). Room for a batch is made beforehand, so every pass
    // makes progress.
    loop {
        let mut v = KVec::new();
        if v.reserve(64, GFP_KERNEL).is_err() {
            pr_warn!("transport reset: out of memory; connections left up\n");
            return;
        }
        let all = global().lock().connected_of(t, cid, ns, &mut v);
        for s in v.iter() {
            sock::reset(s.sk());
        }
        if all {
            return;
        }
    }
}

/// Allocates a packet (exported).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_pkt_alloc(cap: u32, gfp: ffi::gfp_t) -> *mut RawPkt {
    let size = core::mem::size_of::<RawPkt>() + cap as usize;
    // SAFETY: plain allocation; null is handled by callers.
    let p = unsafe { ffi::rvsock_kmalloc(size, gfp) } as *mut RawPkt;
    // SAFETY: `p` is null or holds `size` bytes.
    unsafe { pkt_init(p, cap) }
}

/// Writes the fields of a fresh packet of `cap` payload bytes; returns `p`.
///
/// # Safety
/// `p` is null or points to at least `size_of::<RawPkt>() + cap` writable bytes.
unsafe fn pkt_init(p: *mut RawPkt, cap: u32) -> *mut RawPkt {
    if !p.is_null() {
        // SAFETY: `p` points to at least `size_of::<RawPkt>()` writable bytes.
        unsafe {
            p.write(RawPkt {
                next: core::ptr::null_mut(),
                len: 0,
                off: 0,
                cap,
                xmark: 0,
                ext: core::ptr::null_mut(),
                ns: crate::abi::NS_GLOBAL,
                owner: core::ptr::null_mut(),
                hdr: [0; crate::abi::HDR_LEN],
            })
        };
    }
    p
}

/// One 4 KiB allocation: a merge buffer holds `MERGE_CAP` payload bytes.
const MERGE_SIZE: u32 = 4096;
/// Payload capacity of a merge buffer.
pub(crate) const MERGE_CAP: u32 = MERGE_SIZE - core::mem::size_of::<RawPkt>() as u32;

/// The slab cache of merge buffers (`rx::compact`): the small payloads a lagging reader's
/// queue gathers. They live as long as the reader lags, while a guest's 4 KiB rx buffers come
/// and go in kmalloc-4k by the thousand; sharing that cache, each merge buffer pinned a slab
/// the ring then left half empty (6.12 guest, 1-byte flood: kmalloc-4k +512 KiB for 64
/// objects, in-tree +256 KiB). Null when the cache could not be made (kmalloc then).
static MERGE_CACHE: core::sync::atomic::AtomicPtr<ffi::kmem_cache> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Owns `MERGE_CACHE` from module init to exit: dropped last, when every socket and every
/// transport, and so every packet, is gone.
pub(crate) struct MergeCache;

impl MergeCache {
    pub(crate) fn new() -> Self {
        // SAFETY: plain cache creation with a static name; null is handled (kmalloc then).
        let c = unsafe { ffi::rvsock_kmem_cache_create(c"rvsock_merge".as_ptr().cast(), MERGE_SIZE) };
        MERGE_CACHE.store(c, core::sync::atomic::Ordering::Release);
        MergeCache
    }
}

impl Drop for MergeCache {
    fn drop(&mut self) {
        let c = MERGE_CACHE.swap(core::ptr::null_mut(), core::sync::atomic::Ordering::AcqRel);
        if !c.is_null() {
            // SAFETY: our cache; module exit, so no packet (and no allocation) is left.
            unsafe { ffi::rvsock_kmem_cache_destroy(c) };
        }
    }
}

/// Allocates a merge buffer: a packet of `MERGE_CAP` payload bytes from the merge cache
/// (`rvsock_pkt_free` frees it like any packet: `kfree` takes slab cache objects).
pub(crate) fn pkt_alloc_merge(gfp: ffi::gfp_t) -> Option<Pkt> {
    let c = MERGE_CACHE.load(core::sync::atomic::Ordering::Acquire);
    let p = if c.is_null() {
        // SAFETY: plain allocation; null handled below.
        unsafe { rvsock_pkt_alloc(MERGE_CAP, gfp) }
    } else {
        // SAFETY: the cache lives until module exit; its objects hold `MERGE_SIZE` bytes.
        unsafe { pkt_init(ffi::rvsock_kmem_cache_alloc(c, gfp).cast(), MERGE_CAP) }
    };
    // SAFETY: null or a fresh packet we own.
    unsafe { Pkt::from_raw(p) }
}

/// Frees a packet (exported).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_pkt_free(p: *mut RawPkt) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` came from `rvsock_pkt_alloc` and is owned by the caller; its extension, if
    // any, was attached by the core's zerocopy send and is released with it; its owner, if
    // any, was charged by `sock::charge_tx` and holds its socket's memory until uncharged.
    unsafe {
        let ext = (*p).ext;
        if !ext.is_null() {
            crate::zerocopy::free_ext(ext);
        }
        let owner = (*p).owner as *mut ffi::sock;
        let cost = crate::pkt::alloc_size((*p).cap);
        let len = (*p).len;
        ffi::kfree(p as *const core::ffi::c_void);
        if !owner.is_null() {
            crate::sock::uncharge_tx(owner, cost, len);
        }
    }
}

/// Copies up to `n` payload bytes of `pkt`, starting `skip` bytes after its consumed part
/// (`off`), into `iter`, whether the payload is inline or pages (`zerocopy.rs`);
/// returns the bytes copied (short on a fault or past the payload's end). Exported for
/// transports with `TRANSPORT_F_ZEROCOPY`, which cannot read the core-private `ext`.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_pkt_copy_to_iter(pkt: *mut RawPkt, skip: u32, n: usize, iter: *mut ffi::iov_iter) -> usize {
    // SAFETY: the caller owns the live packet and lends it for this call; the handle is
    // never dropped here (`ManuallyDrop`), so ownership stays with the caller.
    let p = core::mem::ManuallyDrop::new(unsafe { Pkt::from_raw(pkt) });
    let Some(p) = p.as_ref() else { return 0 };
    let ext = p.ext();
    if !ext.is_null() {
        return crate::zerocopy::copy_out_iter(p, ext, skip as usize, n, iter);
    }
    let data = p.unread();
    let start = (skip as usize).min(data.len());
    let end = start.saturating_add(n).min(data.len());
    let Some(d) = data.get(start..end) else { return 0 };
    // SAFETY: `d` is a valid kernel buffer; `iter` is the caller's live iterator.
    unsafe { ffi::rvsock_copy_to_iter(d.as_ptr().cast(), d.len(), iter) }
}

/// The `i`-th piece of `pkt`'s page payload (a MSG_ZEROCOPY send's pinned user pages, or pages
/// of the packet's own): its page, the offset in it and the length; false past the last piece or for an
/// inline payload. Exported for transports with `TRANSPORT_F_ZEROCOPY` that hand the pages to
/// a device (virtio_transport: one descriptor per piece), which cannot read the core-private
/// `ext`. The pages stay held until the packet is freed.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_pkt_ext_frag(
    pkt: *const RawPkt,
    i: u32,
    page: *mut *mut ffi::page,
    off: *mut u32,
    len: *mut u32,
) -> bool {
    if pkt.is_null() || page.is_null() || off.is_null() || len.is_null() {
        return false;
    }
    // SAFETY: the caller owns the live packet and lends it for this call.
    let ext = unsafe { (*pkt).ext };
    if ext.is_null() {
        return false;
    }
    let Some((pg, o, l)) = crate::zerocopy::frag(ext, i as usize) else { return false };
    // SAFETY: the out-parameters are valid (checked non-null; caller's variables).
    unsafe {
        *page = pg;
        *off = o;
        *len = l;
    }
    true
}

/// Allocates a packet whose payload is `len` bytes copied from `iter` into pages of its own
/// (exported; see `abi`). Null on OOM, a short copy, or `len` beyond one packet.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_pkt_alloc_from_iter(len: u32, iter: *mut ffi::iov_iter) -> *mut RawPkt {
    if iter.is_null() || len > crate::proto::hdr::MAX_PKT_BUF_SIZE {
        return core::ptr::null_mut();
    }
    let Ok(mut p) = Pkt::alloc(0, false) else { return core::ptr::null_mut() };
    // `iter` is the caller's live iterator (contract).
    match crate::zerocopy::fill_pages(&mut p, iter, len as usize) {
        Ok(n) if n == len as usize => p.into_raw(),
        _ => core::ptr::null_mut(), // `p` and its pages are freed here
    }
}

/// Makes a hold (exported; see `abi`): a list of up to `cap` payloads that refer to a
/// guest's pages, `notify(ctx, cookie)` being called as each lets go of them.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_hold_new(
    cap: u32,
    notify: Option<unsafe extern "C" fn(*mut core::ffi::c_void, u32)>,
    ctx: *mut core::ffi::c_void,
) -> *mut RawHold {
    let Some(f) = notify else { return core::ptr::null_mut() };
    match crate::zerocopy::Hold::new(cap as usize, crate::zerocopy::Notify { f, ctx }) {
        Ok(h) => h.cast(),
        Err(_) => core::ptr::null_mut(),
    }
}

/// Frees a hold (exported; process context): its callback is not called any more once this
/// returns; payloads still listed keep their pages until they are freed.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_hold_free(hold: *mut RawHold) {
    if hold.is_null() {
        return;
    }
    // SAFETY: the transport gives back the hold `rvsock_hold_new` gave it, once.
    unsafe { crate::zerocopy::Hold::free(hold.cast()) };
}

/// Swaps the pages of every payload in the hold for copies (exported; process context, may
/// sleep); the callback is told of each. Returns the payloads still listed (not zero only
/// without memory for the copies and with a fatal signal pending).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_hold_detach(hold: *mut RawHold) -> u32 {
    // SAFETY: null or a live hold of the caller's (contract).
    let Some(h) = (unsafe { hold.cast::<crate::zerocopy::Hold>().as_ref() }) else { return 0 };
    h.pin.detach_all();
    h.pin.listed() as u32
}

/// Allocates a packet whose `len`-byte payload is `iter`'s pages by reference, listed in
/// `hold` under `cookie` (exported; see `abi`). Null when not taken: the iterator is where it
/// was.
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_pkt_alloc_held(hold: *mut RawHold, len: u32, iter: *mut ffi::iov_iter, cookie: u32) -> *mut RawPkt {
    // SAFETY: null or a live hold of the caller's (contract).
    let Some(h) = (unsafe { hold.cast::<crate::zerocopy::Hold>().as_ref() }) else { return core::ptr::null_mut() };
    if iter.is_null() || len == 0 || len > crate::proto::hdr::MAX_PKT_BUF_SIZE {
        return core::ptr::null_mut();
    }
    let Ok(mut p) = Pkt::alloc(0, false) else { return core::ptr::null_mut() };
    // SAFETY: `iter` is the caller's live user-backed iterator (contract).
    match unsafe { crate::zerocopy::fill_held(&h.pin, &mut p, iter, len as usize, cookie) } {
        Ok(_) => {
            h.arm();
            p.into_raw()
        }
        Err(_) => core::ptr::null_mut(), // `p` is freed here; nothing of `iter` was taken
    }
}

/// Whether `pkt`'s payload is a MSG_ZEROCOPY send's user pages (exported; see `abi`).
#[no_mangle]
pub(crate) unsafe extern "C" fn rvsock_pkt_notifies(pkt: *const RawPkt) -> bool {
    if pkt.is_null() {
        return false;
    }
    // SAFETY: the caller owns the live packet and lends it for this call.
    crate::zerocopy::user_pages(unsafe { (*pkt).ext })
}

/// The local CID reported by /dev/vsock (in-tree `vsock_registered_transport_cid`: the
/// guest CID if a guest transport is loaded, else the host CID if a host transport is, else
/// VMADDR_CID_ANY).
pub(crate) fn local_cid() -> u32 {
    let g = global().lock();
    if let Some(t) = &g.g2h {
        return t.local_cid();
    }
    if g.h2g.is_some() {
        return VMADDR_CID_HOST;
    }
    if g.local.is_some() {
        return crate::proto::hdr::VMADDR_CID_LOCAL;
    }
    VMADDR_CID_ANY
}
