// SPDX-License-Identifier: GPL-2.0
//! The CID table: guest CID -> device, for `send_pkt` (route by the packet's `dst_cid`),
//! `seqpacket_allow` and the uniqueness rule of `VHOST_VSOCK_SET_GUEST_CID`.
//!
//! A hash of intrusive singly linked lists (the link lives in the device, so insertion never
//! allocates) under one spinlock. A device is in the table from a successful
//! `SET_GUEST_CID` until `release` removes it; `release` frees the device only after that, so
//! a device reached through the table is live for as long as the lock is held. Everything
//! done with a device found here (queueing a packet and its work item) runs under the lock.
//!
//! Lock order: this lock may be taken inside the core's global and socket state locks
//! (`seqpacket_allow` is called under them); nothing is called into the core while it is held.

use crate::dev::VhostVsock;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;
use kernel::sync::SpinLock;

const BUCKETS: usize = 64;

/// Bucket heads; each chain is linked through `VhostVsock::next`.
struct Buckets([*mut VhostVsock; BUCKETS]);

// SAFETY: the pointers are only dereferenced under the table lock, while the devices they
// point to are guaranteed live (see the module docs).
unsafe impl Send for Buckets {}

fn bucket(cid: u32) -> usize {
    cid as usize % BUCKETS
}

static TABLE: AtomicPtr<SpinLock<Buckets>> = AtomicPtr::new(core::ptr::null_mut());

// A named #[pin_data] box, not `KBox<SpinLock<T>>`: that one's symbol names outgrow a
// /proc/kallsyms line on the sanitizer kernel (af_vsock/tap.rs).
#[pin_data]
struct Table {
    #[pin]
    b: SpinLock<Buckets>,
}

/// Owner of the table; created at module init before anything can use it, dropped at exit
/// after every user (misc device, transport) is gone.
pub(crate) struct TableOwner(#[allow(dead_code)] Pin<KBox<Table>>);

impl TableOwner {
    /// Allocates the table and publishes it.
    pub(crate) fn new() -> Result<Self> {
        let b = KBox::pin_init(
            pin_init!(Table { b <- kernel::new_spinlock!(Buckets([core::ptr::null_mut(); BUCKETS]), "rvsock_vhost_cids") }),
            GFP_KERNEL,
        )?;
        let p = &b.b as *const SpinLock<Buckets> as *mut SpinLock<Buckets>;
        TABLE.store(p, Ordering::Release);
        Ok(TableOwner(b))
    }
}

impl Drop for TableOwner {
    fn drop(&mut self) {
        TABLE.store(core::ptr::null_mut(), Ordering::Release);
    }
}

fn table() -> Option<&'static SpinLock<Buckets>> {
    let p = TABLE.load(Ordering::Acquire);
    // SAFETY: non-null only between module init and exit, while the owner keeps it alive;
    // our entry points only run in that window.
    unsafe { p.as_ref() }
}

impl Buckets {
    /// The device with guest `cid` that namespace `ns` reaches (at most one: `set_cid`).
    fn find(&self, cid: u32, ns: u64) -> Option<&VhostVsock> {
        let mut p = self.0[bucket(cid)];
        // SAFETY: devices linked in the table are live while the lock is held.
        while let Some(d) = unsafe { p.as_ref() } {
            if d.guest_cid() == cid && crate::abi::ns_reach(d.ns, ns) {
                return Some(d);
            }
            p = d.next.load(Ordering::Relaxed);
        }
        None
    }

    /// Unlinks `d` (hashed under `cid`); true if it was there.
    fn unlink(&mut self, d: &VhostVsock, cid: u32) -> bool {
        let target = d as *const VhostVsock as *mut VhostVsock;
        let b = bucket(cid);
        let mut prev: *mut VhostVsock = core::ptr::null_mut();
        let mut p = self.0[b];
        // SAFETY: devices linked in the table are live while the lock is held.
        while let Some(cur) = unsafe { p.as_ref() } {
            let next = cur.next.load(Ordering::Relaxed);
            if p == target {
                // SAFETY: as above; `prev` is null or a live linked device.
                match unsafe { prev.as_ref() } {
                    None => self.0[b] = next,
                    Some(pd) => pd.next.store(next, Ordering::Relaxed),
                }
                cur.next.store(core::ptr::null_mut(), Ordering::Relaxed);
                return true;
            }
            prev = p;
            p = next;
        }
        false
    }
}

/// Runs `f` on the device of guest `cid` that namespace `ns` reaches, under the table lock;
/// `None` if there is none. `f` must not sleep nor call into the core.
pub(crate) fn with_dev<R>(cid: u32, ns: u64, f: impl FnOnce(&VhostVsock) -> R) -> Option<R> {
    let t = table()?.lock();
    t.find(cid, ns).map(f)
}

/// Whether a device that namespace `ns` reaches currently owns `cid`.
pub(crate) fn in_use(cid: u32, ns: u64) -> bool {
    with_dev(cid, ns, |_| ()).is_some()
}

/// Gives `d` the guest CID `cid` (EADDRINUSE if another device that `d`'s namespace reaches
/// has it: global namespaces share one CID space, a local one has its own, in-tree 7.x).
/// Returns the CID `d` had before (0: none).
pub(crate) fn set_cid(d: &VhostVsock, cid: u32) -> Result<u32> {
    let mut t = table().ok_or(ENODEV)?.lock();
    if let Some(o) = t.find(cid, d.ns) {
        if !core::ptr::eq(o, d) {
            return Err(crate::errno!(EADDRINUSE));
        }
        return Ok(cid);
    }
    let old = d.guest_cid();
    if old != 0 {
        t.unlink(d, old);
    }
    d.set_guest_cid(cid);
    let b = bucket(cid);
    d.next.store(t.0[b], Ordering::Relaxed);
    t.0[b] = d as *const VhostVsock as *mut VhostVsock;
    Ok(old)
}

/// Removes `d` from the table (release). Returns its CID (0: it had none). Once this returns,
/// no `send_pkt` can reach `d` any more.
pub(crate) fn remove(d: &VhostVsock) -> u32 {
    let Some(t) = table() else { return 0 };
    let mut t = t.lock();
    let cid = d.guest_cid();
    if cid != 0 {
        t.unlink(d, cid);
    }
    cid
}
