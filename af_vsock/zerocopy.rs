// SPDX-License-Identifier: GPL-2.0
//! MSG_ZEROCOPY: a send whose whole remaining message fits the peer's credit pins the user
//! pages into the packets instead of copying them (the receiver copies straight out of the
//! sender's pages); otherwise it copies and the completion says so
//! (`SO_EE_CODE_ZEROCOPY_COPIED`). Completions use the kernel's `ubuf_info` machinery
//! (`msg_zerocopy_realloc`), so user space reads them from the error queue as with the
//! in-tree stack: one notification per sendmsg (as TCP; in-tree vsock takes one per credit
//! window a blocking send waits for, so a send larger than the credit there uses several ids),
//! delivered when every packet holding the pages has been consumed or dropped. A caller that brings its own completion (`msg_ubuf`:
//! io_uring's IORING_OP_SEND_ZC) gets the same, on that completion: each packet holding pages
//! takes a reference on it, the caller keeps and drops its own.
//!
//! The same page payload also carries large copied sends (`fill_pages`): a packet whose
//! payload is pages the kernel allocated and copied into, with no completion. An inline
//! payload shares one allocation with the 96-byte packet header, so a full 64 KiB packet
//! would need a 128 KiB allocation; such sends went out as 65,440 + 96 bytes, two packets per
//! 64 KiB write, the first from an order-4 allocation that the page allocator's per-CPU lists
//! do not keep. `fill_pages` takes compound pages of up to order 3 (`FILL_MAX_ORDER`), which
//! those lists do keep: a full packet is two allocations and two frees, not sixteen.

use crate::ffi;
use crate::net::{DelayedWork, Msg, Sk};
use crate::pkt::Pkt;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering::Relaxed};
use kernel::prelude::*;
use kernel::sync::Arc;

#[path = "sync_pin.rs"]
mod sync_pin;
pub(crate) use sync_pin::{Notify, SyncPin, SYNC_MIN};

const PAGE_SIZE: usize = 4096;
/// Pieces of one page payload at most: a 64 KiB payload takes 17 pinned pages when unaligned,
/// 16 order-0 pages when `fill_pages` gets no compound one. 30 keeps `ZcPages` within a
/// 512-byte object (`abi::EXT_DESC_SIZE`; 32 made it a 1 KiB one).
const MAX_FRAGS: usize = crate::abi::EXT_MAX_FRAGS;
/// The largest compound page `fill_pages` allocates (32 KiB): PAGE_ALLOC_COSTLY_ORDER, the
/// largest order the page allocator's per-CPU lists keep, and the order in-tree's
/// `alloc_skb_with_frags` asks for first.
const FILL_MAX_ORDER: u32 = 3;

/// One piece of a page payload: within one page, or (`fill_pages`) within one compound page
/// of up to `FILL_MAX_ORDER`; `page` is then its head. `page` and `off` change after the
/// payload is built only when a sync send's pinned pages (order 0) are swapped for copies
/// (`SyncPin`), under that send's lock while no copy-out reads them; atomics, as readers
/// hold shared references.
struct Frag {
    page: AtomicPtr<ffi::page>,
    off: AtomicU32,
    len: u32,
}

impl Frag {
    fn none() -> Frag {
        Frag { page: AtomicPtr::new(core::ptr::null_mut()), off: AtomicU32::new(0), len: 0 }
    }

    fn new(page: *mut ffi::page, off: u32, len: u32) -> Frag {
        Frag { page: AtomicPtr::new(page), off: AtomicU32::new(off), len }
    }

    fn page(&self) -> *mut ffi::page {
        self.page.load(Relaxed)
    }

    fn get(&self) -> (*mut ffi::page, u32, u32) {
        (self.page.load(Relaxed), self.off.load(Relaxed), self.len)
    }
}

/// A page payload: pinned user pages plus a completion reference (MSG_ZEROCOPY), pinned user
/// pages of a plain send that waits for them (`sync`), or pages of its own with neither
/// (`fill_pages`).
pub(crate) struct ZcPages {
    uarg: *mut ffi::ubuf_info,
    /// The plain send(2) whose pinned pages these are, until `SyncPin` swaps them for copies.
    sync: Option<Arc<SyncPin>>,
    /// Copy-outs of a sync send's pages in progress (`CopyOut`; changed under `sync`'s lock).
    copying: AtomicU32,
    /// What `sync`'s transport hold (`rvsock_hold_*`) is told when these pages are let go.
    cookie: u32,
    n: usize,
    frags: [Frag; MAX_FRAGS],
}

const _: () = assert!(core::mem::size_of::<ZcPages>() <= crate::abi::EXT_DESC_SIZE as usize);

impl ZcPages {
    /// An empty payload, with no pages and no completion yet.
    fn new() -> Result<KBox<ZcPages>> {
        let z = ZcPages {
            uarg: core::ptr::null_mut(),
            sync: None,
            copying: AtomicU32::new(0),
            cookie: 0,
            n: 0,
            frags: core::array::from_fn(|_| Frag::none()),
        };
        Ok(KBox::new(z, GFP_KERNEL)?)
    }

    /// Appends `pages` (each holding a reference the payload now owns) as the pieces of
    /// `bytes` bytes that start `start` bytes into the first page.
    fn add_frags(&mut self, pages: &[*mut ffi::page], start: usize, bytes: usize) {
        let (mut bytes, mut off) = (bytes, start);
        for pg in pages {
            let len = (PAGE_SIZE - off).min(bytes);
            let i = self.n;
            if let Some(f) = self.frags.get_mut(i) {
                *f = Frag::new(*pg, off as u32, len as u32);
                self.n += 1;
            }
            bytes -= len;
            off = 0;
        }
    }

    /// The address a sync send lists this payload under.
    fn addr(&self) -> usize {
        self as *const ZcPages as usize
    }
}

impl Drop for ZcPages {
    /// Releases the pages and, if the payload holds one, the completion reference: when the
    /// packet is freed, or when a payload being built is given up (no completion yet then).
    /// A sync send's payload leaves its send's list first (which may wake the sender), so
    /// the sender never swaps pages of a payload that is going away.
    fn drop(&mut self) {
        if let Some(s) = &self.sync {
            s.forget(self.addr(), self.cookie);
        }
        for f in self.frags.iter().take(self.n) {
            // SAFETY: the payload holds one reference on each of its first `n` pages (pinned
            // by iov_iter_get_pages2, or allocated by `fill_pages` or `SyncPin::detach_one`),
            // released once here.
            unsafe { ffi::rvsock_put_page(f.page()) };
        }
        if !self.uarg.is_null() {
            // SAFETY: a non-null `uarg` carries the one reference `ZcSend::fill` took for it.
            unsafe { ffi::rvsock_zcopy_complete(self.uarg, true) };
        }
    }
}

/// Frees a packet's extension (called from the packet destructor).
///
/// # Safety
/// `ext` came from [`ZcSend::fill`] or [`fill_pages`] and is not used again.
pub(crate) unsafe fn free_ext(ext: *mut core::ffi::c_void) {
    // SAFETY: per the contract, `ext` is a `KBox<ZcPages>` turned into a raw pointer; dropping
    // it releases what it holds.
    drop(unsafe { KBox::from_raw(ext as *mut ZcPages) });
}

/// Whether the page payload `ext` (null: none) is a MSG_ZEROCOPY send's user pages, not pages
/// of its own (`fill_pages`).
pub(crate) fn user_pages(ext: *mut core::ffi::c_void) -> bool {
    if ext.is_null() {
        return false;
    }
    // SAFETY: a non-null `ext` belongs to a live packet the caller holds.
    let z = unsafe { &*(ext as *const ZcPages) };
    !z.uarg.is_null() || z.sync.is_some()
}

/// Tells the sync send whose pinned pages `ext` (a payload, or null) holds that its reader
/// will not take them at once (`SyncPin::hurry`); nothing for any other payload.
pub(crate) fn hurry(ext: *mut core::ffi::c_void) {
    if ext.is_null() {
        return;
    }
    // SAFETY: a non-null `ext` belongs to a live packet the caller holds.
    let z = unsafe { &*(ext as *const ZcPages) };
    if let Some(s) = z.sync.as_ref().filter(|s| s.notify.is_none()) {
        s.hurry();
    }
}

/// Copies `n` bytes (at most `MAX_FRAGS` pieces) from `iter` (a live iterator: the sender's
/// message, or a guest's buffer) into fresh pages that become `p`'s payload; returns the
/// bytes taken. Each piece is the largest compound page the rest of the bytes fill, up to
/// `FILL_MAX_ORDER` (so nothing is left unused but the last page's tail), taken only if
/// free at once (no reclaim), else order-0 pages for the rest. On failure nothing is kept
/// (the iterator may have moved, as with an inline copy that faults).
pub(crate) fn fill_pages(p: &mut Pkt, iter: *mut ffi::iov_iter, n: usize) -> Result<usize> {
    // On an error return `z` is dropped, which frees the pages taken so far.
    let mut z = ZcPages::new()?;
    let mut got = 0usize;
    // After a compound page was not free at once, the rest is order 0 (as in-tree).
    let mut max_order = FILL_MAX_ORDER;
    while got < n {
        let i = z.n;
        let Some(f) = z.frags.get_mut(i) else { break };
        let pages = (n - got).div_ceil(PAGE_SIZE);
        // floor(log2(pages)): `pages` >= 1 here.
        let mut order = (usize::BITS - 1 - pages.leading_zeros()).min(max_order);
        let mut page = core::ptr::null_mut();
        if order > 0 {
            // SAFETY: plain page allocation (compound, no reclaim, no warning); null is handled.
            page = unsafe { ffi::rvsock_alloc_compound(kernel::bindings::GFP_KERNEL, order) };
        }
        if page.is_null() {
            order = 0;
            max_order = 0;
            // SAFETY: plain page allocation; null is handled.
            page = unsafe { ffi::rvsock_alloc_page(kernel::bindings::GFP_KERNEL) };
        }
        if page.is_null() {
            return Err(ENOMEM);
        }
        let len = (n - got).min(PAGE_SIZE << order);
        // SAFETY: `page` is ours and holds PAGE_SIZE << order bytes (a compound page above
        // order 0, which copy_page_from_iter walks subpage by subpage); `iter` is the
        // caller's live iterator.
        let done = unsafe { ffi::copy_page_from_iter(page, 0, len, iter) };
        *f = Frag::new(page, 0, done as u32);
        z.n += 1;
        got += done;
        if done != len {
            return Err(EFAULT);
        }
    }
    p.set_ext(KBox::into_raw(z).cast(), got as u32);
    Ok(got)
}

/// Takes up to `n` bytes of a spliced send (MSG_SPLICE_PAGES: sendfile(2), or splice(2) from a
/// pipe; the data are the pipe's pages, page cache pages for sendfile) as `p`'s payload by
/// reference instead of copying them, as TCP does: the packet holds a reference on each page
/// until it is freed, so a file changed meanwhile may go out changed, as over TCP. Returns the
/// bytes taken (at most `MAX_FRAGS` pages); on failure (no memory, or the first pages are not
/// ones a reference may be taken on: `sendpage_ok`) nothing is taken and the iterator is where
/// it was, and the caller copies instead.
pub(crate) fn fill_spliced(p: &mut Pkt, msg: &mut Msg, n: usize) -> Result<usize> {
    let mut z = ZcPages::new()?;
    let mut got = 0usize;
    let mut pages = [core::ptr::null_mut::<ffi::page>(); MAX_FRAGS];
    while got < n && z.n < MAX_FRAGS {
        let room = MAX_FRAGS - z.n;
        let mut start: usize = 0;
        let mut pp = pages.as_mut_ptr();
        // SAFETY: the caller checked that the live iterator is a bio_vec one (`Msg::is_bvec`),
        // whose extraction takes no references and fills our array (`pp` non-null, `room`
        // entries) with the pages of the next bytes, the first at offset `start`.
        let r = unsafe { ffi::iov_iter_extract_pages(msg.iter_ptr(), &mut pp, n - got, room as _, 0, &mut start) };
        if r <= 0 {
            break;
        }
        let r = r as usize;
        let count = (start + r).div_ceil(PAGE_SIZE).min(room);
        // SAFETY: the splicer holds the pipe's pages for the whole call.
        if !pages.iter().take(count).all(|pg| unsafe { ffi::rvsock_sendpage_ok(*pg) }) {
            msg.revert(r);
            break;
        }
        for pg in pages.iter().take(count) {
            // SAFETY: a live page of the splicer's (above) that `sendpage_ok` accepts; the
            // payload's reference, released by its Drop.
            unsafe { ffi::rvsock_get_page(*pg) };
        }
        z.add_frags(pages.get(..count).unwrap_or(&[]), start, r);
        got += r;
    }
    if got == 0 {
        return Err(EINVAL);
    }
    p.set_ext(KBox::into_raw(z).cast(), got as u32);
    Ok(got)
}

/// Copies `n` bytes starting `skip` bytes into the unread payload of a zerocopy packet.
pub(crate) fn copy_out(p: &Pkt, ext: *mut core::ffi::c_void, skip: usize, n: usize, msg: &mut Msg) -> Result {
    if copy_out_iter(p, ext, skip, n, msg.iter_ptr()) == n { Ok(()) } else { Err(EFAULT) }
}

/// Copies up to `n` bytes starting `skip` bytes into the unread payload of a zerocopy packet
/// into `iter`; returns the bytes copied (short on a fault or past the end of the payload).
pub(crate) fn copy_out_iter(p: &Pkt, ext: *mut core::ffi::c_void, skip: usize, n: usize, iter: *mut ffi::iov_iter) -> usize {
    // SAFETY: `ext` belongs to the live packet `p`, which we borrow.
    let z = unsafe { &*(ext as *const ZcPages) };
    // A plain send's pinned pages (not a hold's): its sender waits while we copy (`CopyOut`),
    // so the copy must not wait for a page fault of the reader's, which the reader's user space
    // may make last as long as it likes (userfaultfd, a FUSE mapping). Copy without faulting;
    // where it would fault, swap the payload's pages for copies first (the sender is then
    // free), and copy the rest from those.
    if let Some(s) = z.sync.as_ref().filter(|s| s.notify.is_none()) {
        let mut copied = 0usize;
        for_each_run(p, ext, skip, n, false, |page, off, len| {
            // SAFETY: the page is held while `for_each_run` walks it (`CopyOut`); the range is
            // inside it (one page or one compound page); `iter` is the caller's live iterator.
            let done = unsafe { ffi::rvsock_copy_page_to_iter_nofault(page, off, len, iter) };
            copied += done;
            done == len
        });
        if copied < n {
            // Swap first (without memory for the copies the payload keeps the pinned pages
            // and the rest is copied from those, as before), then copy the rest, faulting.
            let _ = s.detach_addr(z.addr());
            copied += copy_out_faulting(p, ext, skip + copied, n - copied, iter);
        }
        return copied;
    }
    copy_out_faulting(p, ext, skip, n, iter)
}

/// [`copy_out_iter`], taking page faults.
fn copy_out_faulting(p: &Pkt, ext: *mut core::ffi::c_void, skip: usize, n: usize, iter: *mut ffi::iov_iter) -> usize {
    let mut copied = 0usize;
    // Whole pieces: copy_page_to_iter maps a compound page's subpages itself, one call per
    // piece instead of one per 4 KiB.
    for_each_run(p, ext, skip, n, false, |page, off, len| {
        // SAFETY: the page is held while `for_each_run` walks it (`CopyOut`); the range is
        // inside it (a piece of one page or one compound page, which copy_page_to_iter
        // accepts whole); `iter` is the caller's live iterator.
        let done = unsafe { ffi::copy_page_to_iter(page, off, len, iter) };
        copied += done;
        done == len
    });
    copied
}

/// Calls `f(page, offset, len)` for each pinned piece of the `n` unread payload bytes that
/// start `skip` bytes in, in order, while `f` returns true. A piece is at most a page (one
/// subpage of a compound page: `f` may kmap it and copy within it). Each page stays valid
/// until `f` returns, whatever `SyncPin` swaps meanwhile (`CopyOut`); `f` may sleep if its
/// caller may.
pub(crate) fn for_each_piece(
    p: &Pkt,
    ext: *mut core::ffi::c_void,
    skip: usize,
    n: usize,
    f: impl FnMut(*mut ffi::page, usize, usize) -> bool,
) {
    for_each_run(p, ext, skip, n, true, f);
}

/// [`for_each_piece`], with `split` false handing `f` each piece whole: a range of one page or
/// one compound page (`Frag`), at an offset from its first page that may exceed a page.
fn for_each_run(
    p: &Pkt,
    ext: *mut core::ffi::c_void,
    skip: usize,
    n: usize,
    split: bool,
    mut f: impl FnMut(*mut ffi::page, usize, usize) -> bool,
) {
    // SAFETY: `ext` belongs to the live packet `p`, which we borrow.
    let copy = CopyOut::begin(unsafe { &*(ext as *const ZcPages) });
    let mut pos = p.off() as usize + skip;
    let mut left = n;
    for &(page, off, flen) in copy.pieces() {
        if left == 0 {
            break;
        }
        let flen = flen as usize;
        if pos >= flen {
            pos -= flen;
            continue;
        }
        let take = (flen - pos).min(left);
        let (mut at, mut rest) = (off as usize + pos, take);
        if !split {
            if !f(page, at, rest) {
                return;
            }
            rest = 0;
        }
        while rest > 0 {
            let k = (PAGE_SIZE - at % PAGE_SIZE).min(rest);
            // SAFETY: `at / PAGE_SIZE` is a subpage of the piece's page: the piece lies within
            // one page or one compound page (`Frag`), whose struct pages are contiguous.
            let sub = unsafe { page.add(at / PAGE_SIZE) };
            if !f(sub, at % PAGE_SIZE, k) {
                return;
            }
            at += k;
            rest -= k;
        }
        left -= take;
        pos = 0;
    }
}

/// The `i`-th piece of a zerocopy packet's payload: page, offset in it, length (virtio_transport:
/// a guest driver hands these pages to its device). The piece may span a compound page
/// (`Frag`): physically contiguous, one scatterlist entry.
pub(crate) fn frag(ext: *mut core::ffi::c_void, i: usize) -> Option<(*mut ffi::page, u32, u32)> {
    // SAFETY: `ext` belongs to a live packet the caller holds.
    let z = unsafe { &*(ext as *const ZcPages) };
    z.frags.iter().take(z.n).nth(i).map(Frag::get)
}

/// Pins up to `n` bytes of the user buffer into the empty payload `z`; returns the bytes
/// taken. On failure the iterator is where it was and `z` holds what was pinned (the caller
/// drops it, which releases the pages).
fn pin(z: &mut KBox<ZcPages>, msg: &mut Msg, n: usize) -> Result<usize> {
    // SAFETY: the live msg's iterator: user-backed (a plain send or MSG_ZEROCOPY; callers
    // check `Msg::user_backed`) or io_uring SEND_ZC's fixed buffer (a bvec whose pages the
    // ring keeps and `iov_iter_get_pages2` takes references on).
    unsafe { pin_iter(z, msg.iter_ptr(), n) }
}

/// [`pin`] on a raw iterator.
///
/// # Safety
/// `iter` is a live iterator of the calling task whose pages `iov_iter_get_pages2` takes
/// references on: user-backed (of the task's address space) or a bvec of live pages.
unsafe fn pin_iter(z: &mut KBox<ZcPages>, iter: *mut ffi::iov_iter, n: usize) -> Result<usize> {
    let mut got = 0usize;
    let mut pages = [core::ptr::null_mut::<ffi::page>(); MAX_FRAGS];
    while got < n && z.n < MAX_FRAGS {
        let mut start: usize = 0;
        let room = MAX_FRAGS - z.n;
        // SAFETY: `pages` has room for `room` entries; the iterator is live (contract).
        let r = unsafe { ffi::iov_iter_get_pages2(iter, pages.as_mut_ptr(), n - got, room as _, &mut start) };
        if r <= 0 {
            // SAFETY: `got` bytes were consumed from `iter` above.
            unsafe { ffi::iov_iter_revert(iter, got) };
            return Err(ENOMEM);
        }
        let count = (start + r as usize).div_ceil(PAGE_SIZE).min(room);
        z.add_frags(pages.get(..count).unwrap_or(&[]), start, r as usize);
        got += r as usize;
    }
    Ok(got)
}

/// A MSG_ZEROCOPY sendmsg in progress.
pub(crate) struct ZcSend {
    uarg: *mut ffi::ubuf_info,
    /// Whether the data goes by reference (else it is copied).
    pub(crate) zerocopy: bool,
    /// `uarg` is ours (`msg_zerocopy_realloc`), not the caller's `msg_ubuf`.
    own: bool,
}

impl ZcSend {
    /// Starts a zerocopy send of `len` bytes with `credit` bytes of peer credit available;
    /// `pages_ok`: the transport takes page payloads (else the data is copied).
    /// The caller's `msg_ubuf`, when there is one, is used instead of a completion of ours.
    pub(crate) fn begin(sk: Sk, msg: &Msg, len: usize, credit: u32, pages_ok: bool) -> Result<ZcSend> {
        let zerocopy = pages_ok && msg.iter_offset() == 0 && msg.left() <= len.min(credit as usize);
        let ext = msg.ubuf();
        if !ext.is_null() {
            // The caller holds its own reference for the whole call.
            return Ok(ZcSend { uarg: ext, zerocopy, own: false });
        }
        // Only a send that pins is charged to the caller's locked memory (RLIMIT_MEMLOCK):
        // one that copies (more than the credit) pins nothing, and charging all of it failed
        // a 16 MiB MSG_ZEROCOPY send of an unprivileged user with ENOMEM, where in-tree,
        // which charges what it pins, copies it and completes it as copied.
        let charge = if zerocopy { len } else { 0 };
        // SAFETY: live socket; allocates a completion bound to it (holds a socket ref).
        let uarg = unsafe { ffi::msg_zerocopy_realloc3(sk.as_ptr(), charge, core::ptr::null_mut()) };
        if uarg.is_null() {
            return Err(ENOMEM);
        }
        if !zerocopy {
            // SAFETY: `uarg` is the msgzc completion just allocated.
            unsafe { ffi::rvsock_zcopy_set_copied(uarg) };
        }
        Ok(ZcSend { uarg, zerocopy, own: true })
    }

    /// Pins up to `n` bytes of the user buffer into `p`; returns the bytes taken. On failure
    /// nothing stays pinned and the iterator is where it was.
    pub(crate) fn fill(&self, p: &mut Pkt, msg: &mut Msg, n: usize) -> Result<usize> {
        // No completion reference until the pages are all in: dropping `z` on the error path
        // of `pin` releases the pages only.
        let mut z = ZcPages::new()?;
        let got = pin(&mut z, msg, n)?;
        // SAFETY: the packet takes a completion reference, dropped with its payload.
        unsafe { ffi::rvsock_zcopy_get(self.uarg) };
        z.uarg = self.uarg;
        p.set_ext(KBox::into_raw(z).cast(), got as u32);
        Ok(got)
    }

    /// Ends the send: drops the sendmsg's own completion reference (or aborts the
    /// notification if nothing was sent). The caller's `msg_ubuf` stays the caller's.
    pub(crate) fn end(self, sent_any: bool) {
        if !self.own {
            return;
        }
        // SAFETY: `uarg` holds the initial reference from `begin`, released exactly once.
        unsafe {
            if sent_any {
                ffi::rvsock_zcopy_complete(self.uarg, true);
            } else {
                ffi::rvsock_zcopy_put_abort(self.uarg);
            }
        }
    }
}

/// A piece of a payload as a copy-out sees it: page, offset, length (`Frag::get`).
type Piece = (*mut ffi::page, u32, u32);

/// Brackets a copy-out of a page payload (the transport's, a reader's, a capture's) and holds
/// the pieces it reads. A sync send's pages are not swapped meanwhile (`copying`): the sender
/// returns only once nobody reads its buffer. A hold's pages may be swapped at any time
/// without waiting for the copy (a stop, the age work): a reader's copy may wait on a page
/// fault for as long as its user space likes (userfaultfd, a FUSE mapping), and a stop must
/// not wait for it under the TX mutex. The copy-out takes a reference on each piece's page
/// instead and reads the payload as it was when it began (the guest may have reused that
/// buffer since: the same bytes it could have changed while held).
struct CopyOut<'a> {
    z: &'a ZcPages,
    pieces: [Piece; MAX_FRAGS],
    n: usize,
    /// The pages carry our own references (a hold's payload).
    refs: bool,
}

impl<'a> CopyOut<'a> {
    fn begin(z: &'a ZcPages) -> CopyOut<'a> {
        let mut c = CopyOut { z, pieces: [(core::ptr::null_mut(), 0, 0); MAX_FRAGS], n: 0, refs: false };
        let take = |c: &mut CopyOut<'a>| {
            for (p, f) in c.pieces.iter_mut().zip(z.frags.iter().take(z.n)) {
                *p = f.get();
            }
            c.n = z.n.min(MAX_FRAGS);
        };
        let Some(s) = z.sync.as_ref() else {
            // Pages of its own or a MSG_ZEROCOPY send's: never swapped.
            take(&mut c);
            return c;
        };
        let _g = s.st.lock();
        take(&mut c);
        if s.notify.is_some() {
            for p in c.pieces.iter().take(c.n) {
                // SAFETY: the payload holds a reference on each of its pages, and a swap
                // (which releases them) takes the lock we hold.
                unsafe { ffi::rvsock_get_page(p.0) };
            }
            c.refs = true;
        } else {
            z.copying.fetch_add(1, Relaxed);
        }
        c
    }

    fn pieces(&self) -> &[Piece] {
        self.pieces.get(..self.n).unwrap_or(&[])
    }
}

impl Drop for CopyOut<'_> {
    fn drop(&mut self) {
        if self.refs {
            for p in self.pieces.iter().take(self.n) {
                // SAFETY: the reference `begin` took.
                unsafe { ffi::rvsock_put_page(p.0) };
            }
        } else if let Some(s) = &self.z.sync {
            let _g = s.st.lock();
            self.z.copying.fetch_sub(1, Relaxed);
            s.cv.notify_all();
        }
    }
}

/// Pins up to `n` bytes of a plain send's user buffer into `p` for the sync send `sync`;
/// returns the bytes taken. On failure (no room in `sync`'s list, pinning failed) nothing is
/// kept and the iterator is where it was: the caller copies instead.
pub(crate) fn fill_sync(sync: &Arc<SyncPin>, p: &mut Pkt, msg: &mut Msg, n: usize) -> Result<usize> {
    let mut z = ZcPages::new()?;
    let got = pin(&mut z, msg, n)?;
    z.sync = Some(sync.clone());
    let addr = z.addr();
    if !sync.st.lock().add(addr) {
        // Dropping `z` releases the pages (not listed: nothing to unlist).
        drop(z);
        msg.revert(got);
        return Err(EBUSY);
    }
    p.set_ext(KBox::into_raw(z).cast(), got as u32);
    Ok(got)
}

/// Takes exactly `n` bytes of `iter` (a guest's payload, seen through its VMM's address
/// space) by reference as `p`'s payload, listed in the transport's hold `hold` under
/// `cookie`; returns `n`. On failure (the hold is full, the pages cannot be pinned, more
/// pieces than a payload takes, no memory) nothing is kept and the iterator is where it was:
/// the caller copies instead.
///
/// # Safety
/// `iter` is a live user-backed iterator of the calling task's address space.
pub(crate) unsafe fn fill_held(hold: &Arc<SyncPin>, p: &mut Pkt, iter: *mut ffi::iov_iter, n: usize, cookie: u32) -> Result<usize> {
    if !hold.has_room() {
        return Err(EBUSY);
    }
    let mut z = ZcPages::new()?;
    // SAFETY: per the contract.
    let got = unsafe { pin_iter(&mut z, iter, n)? };
    if got != n {
        // SAFETY: `got` bytes were consumed from `iter`; dropping `z` releases the pages.
        unsafe { ffi::iov_iter_revert(iter, got) };
        return Err(E2BIG);
    }
    z.sync = Some(hold.clone());
    z.cookie = cookie;
    let addr = z.addr();
    if !hold.st.lock().add(addr) {
        // Not listed: its Drop unlists nothing and tells nobody.
        drop(z);
        // SAFETY: as above.
        unsafe { ffi::iov_iter_revert(iter, got) };
        return Err(EBUSY);
    }
    p.set_ext(KBox::into_raw(z).cast(), got as u32);
    Ok(got)
}

/// A transport's hold (`rvsock_hold_*`): the list of payloads that refer to a guest's pages,
/// and the work that copies the ones no reader took within `HOLD_AGE_MS` to two of it, so a
/// guest buffer goes back within that time whatever the host's application does (the guest's
/// SIOCOUTQ and SO_LINGER then see its data gone as soon as with a copying host).
pub(crate) struct Hold {
    pub(crate) pin: Arc<SyncPin>,
    age: DelayedWork,
}

/// The age work's period.
const HOLD_AGE_MS: u32 = 20;

impl Hold {
    /// A hold of up to `cap` payloads telling `notify` when each lets go of its pages; the
    /// caller owns the returned pointer until [`Hold::free`].
    pub(crate) fn new(cap: usize, notify: Notify) -> Result<*mut Hold> {
        let pin = SyncPin::with(cap, Some(notify))?;
        // SAFETY: all zeroes is a valid `delayed_work` (integers, pointers and optional
        // function pointers), which `DelayedWork::init` initialises below.
        let age = unsafe { core::mem::zeroed::<DelayedWork>() };
        let p = KBox::into_raw(KBox::new(Hold { pin, age }, GFP_KERNEL)?);
        // SAFETY: `p` is a live boxed `Hold` that stays put until `free`, which cancels the
        // work before it frees the box.
        unsafe { DelayedWork::init(core::ptr::addr_of_mut!((*p).age), hold_age_fn) };
        Ok(p)
    }

    /// Runs the age work within a period (unless it is queued already).
    pub(crate) fn arm(&self) {
        self.age.schedule(crate::net::msecs_to_jiffies(HOLD_AGE_MS));
    }

    /// Stops the age work and the callback, and gives up the transport's reference; payloads
    /// still listed keep their pages until they are freed.
    ///
    /// # Safety
    /// `p` came from [`Hold::new`] and is not used again.
    pub(crate) unsafe fn free(p: *mut Hold) {
        // SAFETY: per the contract, the box `new` made.
        let b = unsafe { KBox::from_raw(p) };
        // Nothing arms it again: the transport holds no more payloads.
        b.age.cancel_sync();
        b.pin.notify_off();
    }
}

unsafe extern "C" fn hold_age_fn(w: *mut ffi::work_struct) {
    let off = core::mem::offset_of!(Hold, age);
    // SAFETY: the only work item with this function is a `Hold`'s `age`, live until
    // `Hold::free` has cancelled it (waiting for a run in progress).
    let h = unsafe { &*(DelayedWork::from_work(w).cast::<u8>().sub(off).cast::<Hold>()) };
    if h.pin.detach_aged() > 0 {
        h.arm();
    }
}
