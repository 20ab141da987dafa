//! Flow queueing for a transport's shared send queue (issue 17: latency under load).
//!
//! Every host socket's packets for one guest wait in one queue of the vhost device until the
//! guest posts receive buffers. As a plain FIFO, a 64-byte request queued behind eight bulk
//! streams waits for everything they have in flight: up to their whole credit windows (8 x 256
//! KiB), tens of milliseconds on a slow device. Here the queue is split into [`FQ_BUCKETS`]
//! FIFOs, one per flow (a hash of the packet's addresses, so a connection's packets keep their
//! order), served by deficit round robin with a byte quantum of one full packet, and a flow
//! that was idle goes ahead of the busy ones for its first quantum (the "sparse flow" rule of
//! fq_codel, RFC 8290 section 4.2): the request then waits for the packet being copied, not
//! for the backlog.
//!
//! A flow whose first quantum is used up, or that empties during it, joins the end of the busy
//! flows ("old" list) before it can become new again, so flows that keep going idle and coming
//! back cannot starve the busy ones: each gets at most one quantum ahead of them per round.
//!
//! The packets themselves stay with the caller ([`Flows`]): this type only keeps the order of
//! the buckets, in links stored in each bucket's [`FlowState`], and needs no allocation; the
//! caller finds a packet's bucket with [`FlowHash`].

use super::hdr::Hdr;

/// Number of flow buckets of a queue (a power of two). Two flows in one bucket share its FIFO
/// (and its turns); with 9 busy flows the chance that a given flow shares is about 3 %.
pub const FQ_BUCKETS: usize = 256;
/// Bytes (payload and header) a flow may send per turn: one full packet
/// (`MAX_PKT_BUF_SIZE + HDR_LEN`, checked by the tests).
pub const FQ_QUANTUM: i32 = 65_580;
/// Shift that leaves the hash's top bits, log2 of [`FQ_BUCKETS`].
const HASH_SHIFT: u32 = 24;

const NIL: u16 = u16::MAX;
/// An upper bound of the buckets [`FlowSched::next`] can move before it finds one to send
/// from: each bucket moves at most four times (new to old, two refills of a deficit clamped at
/// `-FQ_QUANTUM`, old to idle).
const NEXT_LIMIT: usize = FQ_BUCKETS.wrapping_mul(4).wrapping_add(4);

/// Which list a bucket is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum On {
    Idle,
    New,
    Old,
}

/// One bucket's scheduling state, kept by the caller beside the bucket's packets.
#[derive(Clone, Copy, Debug)]
pub struct FlowState {
    deficit: i32,
    next: u16,
    on: On,
}

impl FlowState {
    /// An idle bucket.
    pub const fn new() -> Self {
        FlowState { deficit: 0, next: NIL, on: On::Idle }
    }
}

impl Default for FlowState {
    fn default() -> Self {
        Self::new()
    }
}

/// The caller's buckets, indices `0..FQ_BUCKETS`.
pub trait Flows {
    /// Bucket `i`'s scheduling state (`None` only for an index out of range).
    fn state(&mut self, i: usize) -> Option<&mut FlowState>;
    /// Whether bucket `i` holds packets.
    fn has_pkts(&self, i: usize) -> bool;
}

#[derive(Clone, Copy, Debug)]
struct List {
    head: u16,
    tail: u16,
}

impl List {
    const EMPTY: List = List { head: NIL, tail: NIL };

    fn push_back<F: Flows + ?Sized>(&mut self, f: &mut F, i: u16) {
        if let Some(s) = f.state(usize::from(i)) {
            s.next = NIL;
        }
        match f.state(usize::from(self.tail)) {
            Some(t) => t.next = i,
            None => self.head = i,
        }
        self.tail = i;
    }

    fn push_front<F: Flows + ?Sized>(&mut self, f: &mut F, i: u16) {
        if let Some(s) = f.state(usize::from(i)) {
            s.next = self.head;
        }
        if self.head == NIL {
            self.tail = i;
        }
        self.head = i;
    }

    fn pop_front<F: Flows + ?Sized>(&mut self, f: &mut F) {
        let next = f.state(usize::from(self.head)).map_or(NIL, |s| core::mem::replace(&mut s.next, NIL));
        self.head = next;
        if next == NIL {
            self.tail = NIL;
        }
    }
}

/// The hash that puts a packet in its bucket; fixed for a queue's life, so it can be computed
/// before taking the queue's lock.
#[derive(Clone, Copy, Debug)]
pub struct FlowHash {
    seed: u32,
}

impl FlowHash {
    /// `seed` perturbs the hash (a random number per queue, so that nobody can pick ports that
    /// share a bucket with someone else's flow on every host).
    pub const fn new(seed: u32) -> Self {
        FlowHash { seed }
    }

    /// The bucket of packet `h`: the same for every packet of one connection.
    pub fn bucket(&self, h: &Hdr) -> usize {
        let cid = |c: u64| u32::try_from(c & u64::from(u32::MAX)).unwrap_or(0);
        let x = h.src_port ^ h.dst_port.rotate_left(16) ^ cid(h.src_cid) ^ cid(h.dst_cid).rotate_left(8) ^ self.seed;
        (x.wrapping_mul(0x9e37_79b1) >> HASH_SHIFT) as usize & FQ_BUCKETS.wrapping_sub(1)
    }
}

/// The order in which a queue's buckets send: new flows first, then the busy ones in turn.
#[derive(Clone, Copy, Debug)]
pub struct FlowSched {
    new: List,
    old: List,
}

impl Default for FlowSched {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowSched {
    /// No bucket active.
    pub const fn new() -> Self {
        FlowSched { new: List::EMPTY, old: List::EMPTY }
    }

    /// A packet was queued in bucket `i` (at its end, or back at its front): an idle bucket
    /// becomes a new flow with a full quantum.
    pub fn activate<F: Flows + ?Sized>(&mut self, f: &mut F, i: usize) {
        if let Some(i) = Self::wake(f, i) {
            self.new.push_back(f, i);
        }
    }

    /// A packet taken from bucket `i` and put back unsent (no receive buffer for it yet): its
    /// bucket stays first in line.
    pub fn put_back<F: Flows + ?Sized>(&mut self, f: &mut F, i: usize) {
        if let Some(i) = Self::wake(f, i) {
            self.new.push_front(f, i);
        }
    }

    /// Makes idle bucket `i` a new flow with a full quantum; its index if it was idle (the
    /// caller then links it into the new list), `None` if it is on a list already.
    fn wake<F: Flows + ?Sized>(f: &mut F, i: usize) -> Option<u16> {
        let i16 = u16::try_from(i).ok()?;
        let s = f.state(i).filter(|s| s.on == On::Idle)?;
        s.on = On::New;
        s.deficit = FQ_QUANTUM;
        Some(i16)
    }

    /// The bucket to send from next, `None` when no bucket holds packets.
    pub fn next<F: Flows + ?Sized>(&mut self, f: &mut F) -> Option<usize> {
        for _ in 0..NEXT_LIMIT {
            let (new, i) = if self.new.head != NIL {
                (true, self.new.head)
            } else if self.old.head != NIL {
                (false, self.old.head)
            } else {
                return None;
            };
            let has = f.has_pkts(usize::from(i));
            let s = f.state(usize::from(i))?;
            if s.deficit <= 0 {
                // Its turn is over: refill and go to the back of the busy flows.
                s.deficit = s.deficit.saturating_add(FQ_QUANTUM);
                s.on = On::Old;
            } else if !has {
                // Emptied: a new flow goes behind the busy ones first (so it cannot take a
                // quantum ahead of them every time it comes back), a busy one goes idle.
                s.on = if new { On::Old } else { On::Idle };
            } else {
                return Some(usize::from(i));
            }
            let on = s.on;
            if new {
                self.new.pop_front(f);
            } else {
                self.old.pop_front(f);
            }
            if on == On::Old {
                self.old.push_back(f, i);
            }
        }
        None
    }

    /// Bucket `i` (the last [`Self::next`]) sent `bytes` (payload and headers).
    pub fn charge<F: Flows + ?Sized>(&mut self, f: &mut F, i: usize, bytes: u32) {
        if let Some(s) = f.state(i) {
            let b = i32::try_from(bytes).unwrap_or(i32::MAX);
            s.deficit = s.deficit.saturating_sub(b).max(FQ_QUANTUM.wrapping_neg());
        }
    }

    /// Every bucket idle (the caller emptied them all).
    pub fn clear<F: Flows + ?Sized>(&mut self, f: &mut F) {
        for i in 0..FQ_BUCKETS {
            if let Some(s) = f.state(i) {
                *s = FlowState::new();
            }
        }
        self.new = List::EMPTY;
        self.old = List::EMPTY;
    }
}

#[cfg(test)]
#[path = "fq_tests.rs"]
mod tests;
