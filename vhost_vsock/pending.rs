// SPDX-License-Identifier: GPL-2.0
//! The queue of a vhost device's host-to-guest packets waiting for guest receive buffers:
//! one FIFO per flow bucket, scheduled by `proto::fq` (deficit round robin, idle flows
//! first). Guarded by the device's `pending` spinlock (a leaf: see `dev.rs`).

use crate::pkt::{Pkt, PktQueue};
use crate::proto::fq::{FlowSched, FlowState, Flows, FQ_BUCKETS};
use core::ffi::c_void;
use kernel::prelude::*;

/// One flow bucket of [`Pending`]: its packets, in order, and its place in the schedule.
struct Bucket {
    q: PktQueue,
    st: FlowState,
}

/// Flows of `FlowSched` over the buckets of [`Pending`].
struct Buckets(KVec<Bucket>);

impl Flows for Buckets {
    fn state(&mut self, i: usize) -> Option<&mut FlowState> {
        self.0.get_mut(i).map(|b| &mut b.st)
    }
    fn has_pkts(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|b| !b.q.is_empty())
    }
}

/// Host-to-guest packets waiting for guest receive buffers: one FIFO per flow bucket (a hash
/// of the packet's addresses, so a connection's packets stay in order), sent by deficit round
/// robin with idle flows first (`proto::fq`): a request queued behind bulk streams waits for
/// the packet being copied, not for their whole backlog.
///
/// # Invariants
/// `b` holds `FQ_BUCKETS` buckets (made in [`Pending::new`], never resized).
pub(crate) struct Pending {
    sched: FlowSched,
    b: Buckets,
}

impl Pending {
    pub(crate) fn new() -> Result<Pending> {
        let mut b = KVec::with_capacity(FQ_BUCKETS, GFP_KERNEL)?;
        for _ in 0..FQ_BUCKETS {
            b.push(Bucket { q: PktQueue::new(), st: FlowState::new() }, GFP_KERNEL)?;
        }
        Ok(Pending { sched: FlowSched::new(), b: Buckets(b) })
    }

    /// Appends `p` to the FIFO of its flow's bucket `i` (from the device's `fq_hash`).
    pub(crate) fn push_back(&mut self, i: usize, p: Pkt) {
        // Always a bucket (the invariant): the hash is below `FQ_BUCKETS`.
        if let Some(b) = self.b.0.get_mut(i) {
            b.q.push_back(p);
            self.sched.activate(&mut self.b, i);
        }
    }

    /// Charges what the last packet sent (`sent`: its bucket and bytes, headers included),
    /// then gives the next packet to send and its bucket.
    pub(crate) fn pop(&mut self, sent: Option<(usize, usize)>) -> Option<(usize, Pkt)> {
        if let Some((i, n)) = sent {
            self.charge(i, n);
        }
        let i = self.sched.next(&mut self.b)?;
        let p = self.b.0.get_mut(i)?.q.pop_front()?;
        Some((i, p))
    }

    /// The front packet of bucket `i` if `f` accepts it (joining a buffer).
    pub(crate) fn pop_if(&mut self, i: usize, f: impl FnOnce(&Pkt) -> bool) -> Option<Pkt> {
        self.b.0.get_mut(i)?.q.pop_front_if(f)
    }

    /// Puts packets taken from bucket `i` back at its front, unsent.
    pub(crate) fn put_back(&mut self, i: usize, q: PktQueue) {
        if let Some(b) = self.b.0.get_mut(i) {
            b.q.prepend(q);
            self.sched.put_back(&mut self.b, i);
        }
    }

    /// Bucket `i` sent `bytes` (headers included).
    pub(crate) fn charge(&mut self, i: usize, bytes: usize) {
        self.sched.charge(&mut self.b, i, u32::try_from(bytes).unwrap_or(u32::MAX));
    }

    /// The packets charged to socket `owner`, out of every bucket (a bucket emptied so is
    /// skipped by the scheduler's next turn).
    pub(crate) fn take_owned(&mut self, owner: *mut c_void) -> PktQueue {
        let mut all = PktQueue::new();
        for b in self.b.0.iter_mut() {
            all.prepend(b.q.extract(|p| p.owner() == owner));
        }
        all
    }

    /// Every queued packet (the device is going away).
    pub(crate) fn take_all(&mut self) -> PktQueue {
        let mut all = PktQueue::new();
        for b in self.b.0.iter_mut() {
            all.prepend(core::mem::replace(&mut b.q, PktQueue::new()));
        }
        self.sched.clear(&mut self.b);
        all
    }
}
