// SPDX-License-Identifier: GPL-2.0
//! MSG_ZEROCOPY: a send whose whole remaining message fits the peer's credit pins the user
//! pages into the packets instead of copying them (the receiver copies straight out of the
//! sender's pages); otherwise it copies and the completion says so
//! (`SO_EE_CODE_ZEROCOPY_COPIED`). Completions use the kernel's `ubuf_info` machinery
//! (`msg_zerocopy_realloc`), so user space reads them from the error queue exactly as with
//! the in-tree stack: one notification per sendmsg, delivered when every packet holding the
//! pages has been consumed or dropped. A caller that brings its own completion (`msg_ubuf`:
//! io_uring's IORING_OP_SEND_ZC) gets the same, on that completion: each packet holding pages
//! takes a reference on it, the caller keeps and drops its own.
//!
//! The same page payload also carries large copied sends (`fill_pages`): a packet whose
//! payload is order-0 pages the kernel allocated and copied into, with no completion. An
//! inline payload shares one allocation with the 96-byte packet header, so a full 64 KiB
//! packet would need a 128 KiB allocation; such sends went out as 65,440 + 96 bytes, two
//! packets per 64 KiB write, the first from an order-4 allocation that the page allocator's
//! per-CPU lists do not keep.

use crate::ffi;
use crate::net::{Msg, Sk};
use crate::pkt::Pkt;
use kernel::prelude::*;

const PAGE_SIZE: usize = 4096;
const MAX_FRAGS: usize = 32;

/// One piece of a pinned user buffer.
#[derive(Clone, Copy)]
struct Frag {
    page: *mut ffi::page,
    off: u32,
    len: u32,
}

/// A page payload: pinned user pages plus a completion reference (MSG_ZEROCOPY), or pages
/// of its own with no completion (`uarg` null, `fill_pages`).
pub(crate) struct ZcPages {
    uarg: *mut ffi::ubuf_info,
    n: usize,
    frags: [Frag; MAX_FRAGS],
}

impl ZcPages {
    /// An empty payload, with no pages and no completion yet.
    fn new() -> Result<KBox<ZcPages>> {
        let none = Frag { page: core::ptr::null_mut(), off: 0, len: 0 };
        Ok(KBox::new(ZcPages { uarg: core::ptr::null_mut(), n: 0, frags: [none; MAX_FRAGS] }, GFP_KERNEL)?)
    }
}

impl Drop for ZcPages {
    /// Releases the pages and, if the payload holds one, the completion reference: when the
    /// packet is freed, or when a payload being built is given up (no completion yet then).
    fn drop(&mut self) {
        for f in self.frags.iter().take(self.n) {
            // SAFETY: the payload holds one reference on each of its first `n` pages (pinned
            // by iov_iter_get_pages2, or allocated by `fill_pages`), released once here.
            unsafe { ffi::rvsock_put_page(f.page) };
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
    // SAFETY: a non-null `ext` belongs to a live packet the caller holds.
    !ext.is_null() && !unsafe { &*(ext as *const ZcPages) }.uarg.is_null()
}

/// Copies `n` bytes (at most `MAX_FRAGS` pages) from `iter` (a live iterator: the sender's
/// message, or a guest's buffer) into fresh pages that become `p`'s payload; returns the
/// bytes taken. On failure nothing is kept (the iterator may have moved, as with an inline
/// copy that faults).
pub(crate) fn fill_pages(p: &mut Pkt, iter: *mut ffi::iov_iter, n: usize) -> Result<usize> {
    // On an error return `z` is dropped, which frees the pages taken so far.
    let mut z = ZcPages::new()?;
    let mut got = 0usize;
    while got < n {
        let i = z.n;
        let Some(f) = z.frags.get_mut(i) else { break };
        // SAFETY: plain page allocation; null is handled.
        let page = unsafe { ffi::rvsock_alloc_page(kernel::bindings::GFP_KERNEL) };
        if page.is_null() {
            return Err(ENOMEM);
        }
        let len = (n - got).min(PAGE_SIZE);
        // SAFETY: `page` is ours and holds PAGE_SIZE bytes; `iter` is the caller's live iterator.
        let done = unsafe { ffi::copy_page_from_iter(page, 0, len, iter) };
        *f = Frag { page, off: 0, len: done as u32 };
        z.n += 1;
        got += done;
        if done != len {
            return Err(EFAULT);
        }
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
    let mut copied = 0usize;
    for_each_piece(p, ext, skip, n, |page, off, len| {
        // SAFETY: the page is pinned for the packet's lifetime; the range is inside it;
        // `iter` is the caller's live iterator.
        let done = unsafe { ffi::copy_page_to_iter(page, off, len, iter) };
        copied += done;
        done == len
    });
    copied
}

/// Calls `f(page, offset, len)` for each pinned piece of the `n` unread payload bytes that
/// start `skip` bytes in, in order, while `f` returns true.
pub(crate) fn for_each_piece(
    p: &Pkt,
    ext: *mut core::ffi::c_void,
    skip: usize,
    n: usize,
    mut f: impl FnMut(*mut ffi::page, usize, usize) -> bool,
) {
    // SAFETY: `ext` belongs to the live packet `p`, which we borrow.
    let z = unsafe { &*(ext as *const ZcPages) };
    let mut pos = p.off() as usize + skip;
    let mut left = n;
    for fr in z.frags.iter().take(z.n) {
        if left == 0 {
            break;
        }
        let flen = fr.len as usize;
        if pos >= flen {
            pos -= flen;
            continue;
        }
        let take = (flen - pos).min(left);
        if !f(fr.page, fr.off as usize + pos, take) {
            break;
        }
        left -= take;
        pos = 0;
    }
}

/// The `i`-th piece of a zerocopy packet's payload: page, offset in it, length (virtio_transport:
/// a guest driver hands these pages to its device).
pub(crate) fn frag(ext: *mut core::ffi::c_void, i: usize) -> Option<(*mut ffi::page, u32, u32)> {
    // SAFETY: `ext` belongs to a live packet the caller holds.
    let z = unsafe { &*(ext as *const ZcPages) };
    z.frags.iter().take(z.n).nth(i).map(|f| (f.page, f.off, f.len))
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
        // SAFETY: live socket; allocates a completion bound to it (holds a socket ref).
        let uarg = unsafe { ffi::msg_zerocopy_realloc3(sk.as_ptr(), len, core::ptr::null_mut()) };
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
        // below releases the pages only.
        let mut z = ZcPages::new()?;
        let mut got = 0usize;
        let mut pages = [core::ptr::null_mut::<ffi::page>(); MAX_FRAGS];
        let mut err = false;
        while got < n && z.n < MAX_FRAGS {
            let mut start: usize = 0;
            let room = MAX_FRAGS - z.n;
            // SAFETY: `pages` has room for `room` entries; the iterator is the live msg's.
            let r = unsafe {
                ffi::iov_iter_get_pages2(msg.iter_ptr(), pages.as_mut_ptr(), n - got, room as _, &mut start)
            };
            if r <= 0 {
                err = true;
                break;
            }
            let mut bytes = r as usize;
            let mut off = start;
            for pg in pages.iter().take((start + bytes).div_ceil(PAGE_SIZE)) {
                let len = (PAGE_SIZE - off).min(bytes);
                let i = z.n;
                if let Some(f) = z.frags.get_mut(i) {
                    *f = Frag { page: *pg, off: off as u32, len: len as u32 };
                    z.n += 1;
                }
                bytes -= len;
                off = 0;
            }
            got += r as usize;
        }
        if err {
            drop(z);
            msg.revert(got);
            return Err(ENOMEM);
        }
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
