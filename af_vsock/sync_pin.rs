// SPDX-License-Identifier: GPL-2.0
//! Sync sends and holds (`SyncPin`): the list of payloads that carry pinned pages of a plain
//! send(2) that waits for them, or of a transport's hold (vhost's guest-to-host payloads
//! taken by reference), and the swap of those pages for copies. A child of `zerocopy`, whose
//! payloads (`ZcPages`) it reads and swaps.

use super::{ZcPages, MAX_FRAGS};
use crate::ffi;
use core::sync::atomic::Ordering::Relaxed;
use kernel::prelude::*;
use kernel::sync::{new_condvar, new_spinlock, Arc, CondVar, CondVarTimeoutResult, SpinLock};

/// A plain blocking send(2) of a large buffer towards a transport with `TRANSPORT_F_COPY_OUT`
/// pins the user's pages into its packets instead of copying them, and returns only once
/// they have been copied out and the packets freed: by vhost into the guest's receive buffers,
/// or over loopback by the receiving socket's reader. One copy of the data instead of two
/// (issue 17: 2.7-3.1 ms of the L1 host's ~11.4 ms of CPU per MiB in the nested h2g stream
/// went to the sender's copy; over loopback every other chunk, `io::send_locked`). The buffer
/// is the caller's again when send(2) returns, as with a copied send.
///
/// The wait is bounded: when the pages have not been copied out within `SYNC_WAIT_MS` or the
/// socket's send timeout, whichever is shorter (a guest that posts no receive buffers, a
/// stopped device), or a signal is pending, or the receive path found no reader in recv(2)
/// or a reader left them unread (`hurry`), the sender copies what is still pinned into pages
/// of its own and swaps them in (`detach_one`), so a send never waits for the peer much longer than a copied one
/// would. A copy-out does not take a page fault while the sender waits for it: where it would,
/// it swaps first (`detach_addr`, from `zerocopy::copy_out_iter`; without memory for the
/// copies it faults on the pinned pages, as before). The swap and a copy-out
/// (`CopyOut`) exclude each other through this lock.
///
/// The same list serves a transport that hands the core a guest's pages by reference (a
/// hold, `rvsock_hold_*`: vhost's guest-to-host payloads): nobody waits on it; the transport
/// is told (`Notify`, with the payload's cookie) when each payload lets go of its pages,
/// freed or swapped for copies by `detach_all` (a device being stopped). A hold's swap does
/// not wait for copy-outs: they read through page references of their own (`CopyOut`).
#[pin_data]
pub(crate) struct SyncPin {
    #[pin]
    pub(super) st: SpinLock<SyncState>,
    /// Signalled when a listed payload goes or a copy-out ends.
    #[pin]
    pub(super) cv: CondVar,
    /// A hold's transport callback (called under `st` while `SyncState::notify_on`).
    pub(super) notify: Option<Notify>,
}

/// A transport's callback for a hold: `f(ctx, cookie)` when a payload lets go of its pages.
#[derive(Clone, Copy)]
pub(crate) struct Notify {
    pub(crate) f: unsafe extern "C" fn(*mut core::ffi::c_void, u32),
    pub(crate) ctx: *mut core::ffi::c_void,
}

// SAFETY: the transport that made the hold promises `f(ctx, ..)` may be called from any task
// and in atomic context until it frees the hold (`rvsock_hold_new`'s contract); after that
// `notify_on` is false and the callback is never called again.
unsafe impl Send for Notify {}
// SAFETY: as above; `Notify` is plain data, only ever called through.
unsafe impl Sync for Notify {}

/// The payloads of one sync send (or of a hold) that hold pinned pages (by address).
pub(super) struct SyncState {
    live: [usize; LIVE_MAX],
    /// Per listed payload: its listing's number (`pinned` then), telling it from a later
    /// payload listed at the same address after it was freed.
    ids: [u64; LIVE_MAX],
    /// Payloads listed at most (`SYNC_LIVE` for a send, a hold's own capacity).
    cap: usize,
    n: usize,
    /// Payloads listed so far, and the ones the sender copied itself (`detach_one`).
    pinned: u64,
    copied: u64,
    /// Whether `SyncPin::notify` may still be called (cleared by `rvsock_hold_free`).
    notify_on: bool,
    /// Per listed payload: listed when `Hold`'s age work last ran (copied at its next run).
    aged: [bool; LIVE_MAX],
    /// A payload of this send was delivered in place to a reader that is not waiting for it
    /// (`hurry`): the next `settle` copies at once instead of waiting for the reader.
    hurry: bool,
}

impl SyncState {
    fn find(&self, addr: usize) -> Option<usize> {
        self.live.iter().take(self.n).position(|&a| a == addr)
    }

    /// The listed payload `(addr, id)`, if it is still listed (the same listing).
    fn find_id(&self, addr: usize, id: u64) -> Option<usize> {
        self.find(addr).filter(|&i| self.ids.get(i) == Some(&id))
    }

    /// The address and listing number of the `i`-th listed payload.
    fn entry(&self, i: usize) -> Option<(usize, u64)> {
        Some((*self.live.get(i)?, *self.ids.get(i)?)).filter(|_| i < self.n)
    }

    fn remove(&mut self, i: usize) {
        self.n -= 1;
        self.live[i] = self.live[self.n];
        self.ids[i] = self.ids[self.n];
        self.aged[i] = self.aged[self.n];
    }

    /// Lists `addr` (a payload that is not yet listed); false when full.
    pub(super) fn add(&mut self, addr: usize) -> bool {
        let i = self.n;
        if i >= self.cap {
            return false;
        }
        match (self.live.get_mut(i), self.ids.get_mut(i), self.aged.get_mut(i)) {
            (Some(l), Some(d), Some(a)) => {
                *l = addr;
                *d = self.pinned;
                *a = false;
            }
            _ => return false,
        }
        self.n += 1;
        self.pinned += 1;
        true
    }
}

/// Payloads of one sync send in flight at once, at most (then it settles first).
const SYNC_LIVE: usize = 8;
/// Payloads one hold lists at most.
pub(crate) const LIVE_MAX: usize = 32;
/// A chunk goes out as pinned pages from this size on; smaller ones are copied.
pub(crate) const SYNC_MIN: usize = 32 * 1024;
/// How long a sync send waits for the transport before copying its pages itself.
const SYNC_WAIT_MS: u32 = 20;

impl SyncPin {
    pub(crate) fn new() -> Result<Arc<SyncPin>> {
        Self::with(SYNC_LIVE, None)
    }

    /// A list of up to `cap` (at most `LIVE_MAX`) payloads, telling `notify` when each goes.
    pub(crate) fn with(cap: usize, notify: Option<Notify>) -> Result<Arc<SyncPin>> {
        let st = SyncState {
            live: [0; LIVE_MAX],
            ids: [0; LIVE_MAX],
            cap: cap.min(LIVE_MAX),
            n: 0,
            pinned: 0,
            copied: 0,
            notify_on: notify.is_some(),
            aged: [false; LIVE_MAX],
            hurry: false,
        };
        let cb = notify;
        Arc::pin_init(
            pin_init!(SyncPin {
                st <- new_spinlock!(st, "rvsock_sync_send"),
                cv <- new_condvar!("rvsock_sync_send"),
                notify: cb,
            }),
            GFP_KERNEL,
        )
    }

    /// Stops calling the hold's callback (the transport is letting go of the hold); a
    /// callback running meanwhile has finished when this returns.
    pub(crate) fn notify_off(&self) {
        self.st.lock().notify_on = false;
    }

    /// Payloads listed now.
    pub(crate) fn listed(&self) -> usize {
        self.st.lock().n
    }

    /// Tells the hold's transport that the payload `cookie` let go of its pages (`st` held).
    fn notify(&self, g: &SyncState, cookie: u32) {
        if let Some(n) = self.notify.filter(|_| g.notify_on) {
            // SAFETY: `notify_on` (checked under the lock `g` proves held) means the
            // transport has not freed the hold, so its callback and context are valid.
            unsafe { (n.f)(n.ctx, cookie) };
        }
    }

    /// (payloads pinned, payloads the sender copied itself) so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let g = self.st.lock();
        (g.pinned, g.copied)
    }

    /// Whether another payload can be listed without settling first.
    pub(crate) fn has_room(&self) -> bool {
        let g = self.st.lock();
        g.n < g.cap
    }

    /// Unlists a payload that goes away (its Drop).
    pub(super) fn forget(&self, addr: usize, cookie: u32) {
        let mut g = self.st.lock();
        if let Some(i) = g.find(addr) {
            g.remove(i);
            self.notify(&g, cookie);
            if g.n == 0 {
                self.cv.notify_all();
            }
        }
    }

    /// Waits until the transport has freed every payload holding this send's pages, for up to
    /// `SYNC_WAIT_MS` (or `limit` jiffies, the socket's send timeout, if shorter) and not past
    /// a signal; then copies whatever is still pinned into pages of its own. Afterwards no
    /// packet refers to the user's pages.
    pub(crate) fn settle(&self, limit: kernel::ffi::c_long) {
        let wait = crate::net::msecs_to_jiffies(SYNC_WAIT_MS).min(limit.max(0) as u64);
        let mut left = wait as kernel::time::Jiffies;
        let mut g = self.st.lock();
        while g.n > 0 && !g.hurry {
            match self.cv.wait_interruptible_timeout(&mut g, left) {
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                _ => break,
            }
        }
        g.hurry = false;
        drop(g);
        self.detach_all();
    }

    /// A payload of this send went to a reader that will not take it at once: the sender
    /// stops waiting and copies (`settle`).
    pub(super) fn hurry(&self) {
        let mut g = self.st.lock();
        g.hurry = true;
        self.cv.notify_all();
    }

    /// Swaps the listed payload at `addr` for copies (a reader whose copy-out would fault).
    pub(super) fn detach_addr(&self, addr: usize) -> Result {
        // `detach_one` leaves the payload listed if a copy-out began meanwhile: again then.
        loop {
            let entry = {
                let g = self.st.lock();
                g.find(addr).and_then(|i| g.entry(i))
            };
            match entry {
                Some(e) => self.detach_one(e)?,
                None => return Ok(()),
            }
        }
    }

    /// Swaps the pages of the payloads that were listed at the last call for copies, and
    /// marks the others for the next call; returns the payloads still listed.
    pub(crate) fn detach_aged(&self) -> usize {
        loop {
            let entry = {
                let mut g = self.st.lock();
                let st = &mut *g;
                let old = st.aged.iter().take(st.n).position(|a| *a).and_then(|i| st.entry(i));
                match old {
                    Some(e) => e,
                    None => {
                        let n = st.n;
                        st.aged.iter_mut().take(n).for_each(|a| *a = true);
                        return n;
                    }
                }
            };
            if self.detach_one(entry).is_err() {
                // No memory for the copies: the next call tries again.
                return self.st.lock().n;
            }
        }
    }

    /// Swaps every listed payload's pinned pages for copies.
    pub(crate) fn detach_all(&self) {
        loop {
            let Some(entry) = self.st.lock().entry(0) else { return };
            if self.detach_one(entry).is_err() {
                // No memory for the copies (GFP_KERNEL single pages fail for a task being
                // killed under memory pressure). Being killed, give up: the packets keep their
                // own references on the pages, so nothing is freed under them, and the buffer
                // belongs to a task that will not change it again (only a mapping it shares
                // with another process could). Anything else waits a tick for the transport
                // to take the pages, or for memory, and retries: a send(2) returns only once
                // its buffer is the caller's again, whatever signal interrupted it.
                if crate::net::fatal_signal_pending() {
                    return;
                }
                if crate::net::signal_pending() {
                    crate::net::sleep_uninterruptible(1);
                } else {
                    let mut g = self.st.lock();
                    if g.find_id(entry.0, entry.1).is_some() {
                        let _ = self.cv.wait_interruptible_timeout(&mut g, 1);
                    }
                }
            }
        }
    }

    /// Copies the pages of the listed payload `(addr, id)` into fresh pages and swaps them in,
    /// unless the payload went away meanwhile (then nothing is left to do). The list lock is
    /// dropped while copying: a payload freed meanwhile is unlisted, and another may be
    /// listed at its address (a hold's transport lists new payloads at any time), which
    /// `id` tells apart.
    fn detach_one(&self, (addr, id): (usize, u64)) -> Result {
        let mut old = [(core::ptr::null_mut::<ffi::page>(), 0u32, 0u32); MAX_FRAGS];
        let n = {
            let mut g = self.st.lock();
            loop {
                if g.find_id(addr, id).is_none() {
                    return Ok(());
                }
                // SAFETY: a listed payload is alive: its Drop unlists it under this lock
                // before releasing anything.
                let z = unsafe { &*(addr as *const ZcPages) };
                if z.copying.load(Relaxed) == 0 {
                    for (o, f) in old.iter_mut().zip(z.frags.iter().take(z.n)) {
                        *o = f.get();
                        // SAFETY: a page the live payload holds; our own reference keeps it
                        // while we copy it without the lock.
                        unsafe { ffi::rvsock_get_page(o.0) };
                    }
                    break z.n;
                }
                // The transport is copying a sync send's pages out right now (into a guest's
                // buffers): that ends soon. (A hold's copy-outs take page references instead
                // and are never waited for: `CopyOut`.)
                self.cv.wait(&mut g);
            }
        };
        let put_old = |old: &[(*mut ffi::page, u32, u32)]| {
            for o in old.iter().take(n) {
                // SAFETY: one reference taken above (or, after a swap, the payload's own).
                unsafe { ffi::rvsock_put_page(o.0) };
            }
        };
        let mut new = [core::ptr::null_mut::<ffi::page>(); MAX_FRAGS];
        let mut ok = true;
        for (nw, o) in new.iter_mut().zip(old.iter()).take(n) {
            // SAFETY: plain page allocation; null is handled.
            let pg = unsafe { ffi::rvsock_alloc_page(kernel::bindings::GFP_KERNEL) };
            if pg.is_null() {
                ok = false;
                break;
            }
            // SAFETY: `pg` is ours (a page); `o` is at most a page's piece of a page we hold.
            unsafe { ffi::rvsock_memcpy_page(pg, o.0, o.1 as usize, o.2 as usize) };
            *nw = pg;
        }
        let swapped = ok && {
            let mut g = self.st.lock();
            match g.find_id(addr, id) {
                Some(i) => {
                    // SAFETY: listed, hence alive (see above), and the payload we copied.
                    let z = unsafe { &*(addr as *const ZcPages) };
                    if z.copying.load(Relaxed) != 0 {
                        false
                    } else {
                        for (f, pg) in z.frags.iter().zip(new.iter()).take(n) {
                            f.page.store(*pg, Relaxed);
                            f.off.store(0, Relaxed);
                        }
                        g.remove(i);
                        g.copied += 1;
                        self.notify(&g, z.cookie);
                        if g.n == 0 {
                            self.cv.notify_all();
                        }
                        true
                    }
                }
                None => false,
            }
        };
        if swapped {
            // The payload's references on the user pages, now unused.
            put_old(&old);
        } else {
            for pg in new.iter().take(n).filter(|p| !p.is_null()) {
                // SAFETY: our fresh pages, not handed to anyone.
                unsafe { ffi::rvsock_put_page(*pg) };
            }
        }
        put_old(&old);
        if ok { Ok(()) } else { Err(ENOMEM) }
    }
}
