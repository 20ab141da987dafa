// SPDX-License-Identifier: GPL-2.0
//! One `/dev/vhost-vsock` open file: a vhost device with two virtqueues (RX: host to guest,
//! TX: guest to host), the queue of packets waiting for guest receive buffers, the guest CID,
//! and the two data paths.
//!
//! - Host to guest: `queue` (called by `send_pkt`, under the CID table lock) appends to
//!   `pending` (one FIFO per flow, [`Pending`]) and queues `send_work` on the vhost worker;
//!   `do_send` (worker, RX virtqueue mutex) takes packets flow by flow, new flows first, and
//!   copies header and payload into guest receive buffers, splitting a payload over
//!   several buffers when the guest posted small ones, and filling the rest of a buffer with
//!   the STREAM payloads of the same connection queued right behind (one header with their
//!   summed length, `hdr::join`).
//! - Guest to host: `handle_tx` (worker, TX virtqueue mutex) reads each chain's header,
//!   validates it (source CID is the guest's, destination is the host, length fits the chain
//!   and 64 KiB) before allocating, copies the payload into a packet of exactly that length and
//!   hands it to the core. The core may call `send_pkt` from inside (replies): that only
//!   queues, so holding the TX mutex across the call is fine.
//! - A payload of 32 KiB or more is taken by reference instead (`held`): the packet's payload
//!   is the guest's own pages (pinned through the VMM's mapping of guest memory), listed in
//!   the device's hold (`rvsock_hold_*`), and the chain goes back to the guest only when the
//!   packet lets go of them (the host application read it, it was dropped, or no reader took
//!   it within 20-40 ms and the core's age work copied it): the core calls `held_released`,
//!   which lists the head in `done` and queues `used_work` to return it. One copy on the host
//!   instead of two. At most `HOLD_CAP` chains (half the ring, if smaller) are held at once,
//!   so a host application that does not read costs the guest part of its ring for a short
//!   while, never all of it; past that, payloads are copied as before. Stopping the device
//!   (`SET_RUNNING` 0: migration, the guest's reset) copies every held payload into pages of
//!   its own and returns its chain first, so no descriptor stays taken across a stop.
//!
//! Locks: device mutex -> virtqueue mutex (vhost's own order) -> CID table lock -> `pending`
//! lock. `pending` is a leaf spinlock. The core's hold lock -> `done` (a leaf spinlock:
//! `held_released` runs under the core's lock, possibly from the core's atomic paths).
//! Nothing sleeps under a spinlock.

use crate::abi::{RawHold, RawPkt, HDR_LEN};
use crate::ffi;
use crate::pkt::{Captured, Pkt, PktQueue};
use crate::pending::Pending;
use crate::proto::fq::FlowHash;
use crate::proto::hdr::{join, Hdr, MAX_PKT_BUF_SIZE, SEQ_EOM, SEQ_EOR, VMADDR_CID_HOST};
use crate::table;
use crate::stats::{Count, Reject, Stats};
use crate::vhost::{self, Desc, Dev, IovIter, Vq, VqGuard};
use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, Ordering::Relaxed};
use kernel::ffi::c_long;
use kernel::prelude::*;
use kernel::sync::SpinLock;
use kernel::types::Opaque;

/// The largest payload a packet holds inline (one 64 KiB allocation with its header).
const INLINE_MAX: usize = MAX_PKT_BUF_SIZE as usize - core::mem::size_of::<RawPkt>();

/// Virtqueue indices (`VSOCK_VQ_RX`, `VSOCK_VQ_TX` of `linux/virtio_vsock.h`).
const VQ_RX: usize = 0;
const VQ_TX: usize = 1;

/// Bytes moved per worker run before requeueing (`VHOST_VSOCK_WEIGHT`).
const WEIGHT: i32 = 0x80000;
/// Packets moved per worker run before requeueing (`VHOST_VSOCK_PKT_WEIGHT`).
const PKT_WEIGHT: i32 = 256;

/// A guest payload of this size or more is taken by reference (held), not copied.
const HOLD_MIN: usize = 32 * 1024;
/// Guest TX chains held at once, at most (and at most half the ring).
const HOLD_CAP: usize = 32;

/// Features offered (`VHOST_VSOCK_FEATURES`: `VHOST_FEATURES`, ACCESS_PLATFORM, SEQPACKET).
pub(crate) const FEATURES: u64 = (1 << ffi::VIRTIO_F_NOTIFY_ON_EMPTY)
    | (1 << ffi::VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << ffi::VIRTIO_RING_F_EVENT_IDX)
    | (1 << ffi::VHOST_F_LOG_ALL)
    | (1 << ffi::VIRTIO_F_ANY_LAYOUT)
    | (1 << ffi::VIRTIO_F_VERSION_1)
    | (1 << ffi::VIRTIO_F_ACCESS_PLATFORM)
    | (1 << ffi::VIRTIO_VSOCK_F_SEQPACKET);
/// Backend features offered (`VHOST_VSOCK_BACKEND_FEATURES`).
pub(crate) const BACKEND_FEATURES: u64 = 1 << ffi::VHOST_BACKEND_F_IOTLB_MSG_V2;

/// Marks a queued packet as a reply generated while we delivered a guest packet (kept in the
/// packet's padding word while we own the packet; the core never reads it).
const MARK_REPLY: u32 = 1;

/// Per-VMM state of one open `/dev/vhost-vsock`.
///
/// # Invariants
/// Allocated zeroed by [`VhostVsock::open`] and initialised in place (never moved); freed by
/// [`VhostVsock::release`] only after it left the CID table and the vhost worker is gone.
#[repr(C)]
pub(crate) struct VhostVsock {
    /// The vhost device; first field, so `vq->dev` is also a pointer to us.
    vdev: Opaque<ffi::vhost_dev>,
    vqs: [Opaque<ffi::vhost_virtqueue>; 2],
    vq_ptrs: Opaque<[*mut ffi::vhost_virtqueue; 2]>,
    send_work: Opaque<ffi::vhost_work>,
    /// Returns held chains the core let go of (`done`) to the guest.
    used_work: Opaque<ffi::vhost_work>,
    /// The core's list of payloads that hold guest pages (null: none, copy everything);
    /// made in `open`, freed in `release`.
    hold: AtomicPtr<RawHold>,
    /// Heads of held chains let go of and not yet returned (leaf lock).
    done: SpinLock<Done>,
    /// Held chains not yet returned to the guest (held, or in `done`); worker only, but for
    /// the stop that drains `done`.
    outstanding: AtomicU32,
    /// Stops so far (changed under the TX virtqueue mutex). A held chain's cookie is its head
    /// (below 2^15, the largest ring) with the low 16 bits of this count at its hold above
    /// it, so that a chain let go of after a stop that could not copy it (no memory with a
    /// signal pending) is not returned into the rings set up since (`return_done`).
    epoch: AtomicU32,
    /// CID table link (under the table lock).
    pub(crate) next: AtomicPtr<VhostVsock>,
    /// Host-to-guest packets waiting for guest receive buffers, queued per flow.
    pending: SpinLock<Pending>,
    /// The bucket of a packet in `pending` (seeded at open, fixed: computed outside the lock).
    fq_hash: FlowHash,
    /// Guest CID (0: none yet); written under the table lock.
    guest_cid: AtomicU32,
    /// The vsock namespace tag of the opener's network namespace (in-tree 7.x: the opener's
    /// namespace owns the guest's CID); fixed at open.
    pub(crate) ns: u64,
    /// The guest negotiated VIRTIO_VSOCK_F_SEQPACKET.
    seqpacket: AtomicBool,
    /// The device has run (`SET_RUNNING` 1) since it was opened: until then host packets for
    /// its CID fail at once (`started`).
    started: AtomicBool,
    /// Replies queued and not yet sent: TX processing pauses while there are a ring's worth,
    /// so a guest that posts no receive buffers cannot make us queue without bound.
    queued_replies: AtomicI32,
    /// The worker task while it delivers a guest packet to the core (replies recognition).
    rx_task: AtomicPtr<c_void>,
    stats: Stats,
}

/// Held TX chains whose payload let go of the guest's pages, by cookie (`held_cookie`).
struct Done {
    heads: [u32; HOLD_CAP],
    n: usize,
}

/// The cookie a held chain's payload carries: its head and the device's stop count (`epoch`,
/// read under the TX virtqueue mutex).
fn held_cookie(head: u32, epoch: &AtomicU32) -> u32 {
    (head & 0xffff) | (epoch.load(Relaxed) << 16)
}

/// The core's hold callback: the payload of cookie `head` (`held_cookie`) let go of the
/// guest's pages (freed by whoever consumed it, or copied by a stop). Any context; runs under
/// the core's hold lock.
unsafe extern "C" fn held_released(ctx: *mut c_void, head: u32) {
    // SAFETY: `ctx` is the device that made the hold (`open`); `release` frees the hold,
    // after which the core calls us no more, before it frees the device.
    let d = unsafe { &*(ctx as *const VhostVsock) };
    let first = {
        let mut g = d.done.lock();
        let n = g.n;
        // `outstanding <= HOLD_CAP` chains are held or listed here at once: there is room.
        if let Some(slot) = g.heads.get_mut(n) {
            *slot = head;
            g.n += 1;
        }
        n == 0
    };
    if first {
        // SAFETY: `used_work` lives as long as the device; `release` flushes the worker
        // after freeing the hold (no call of ours after that).
        unsafe { d.tx().work_queue(d.used_work.get()) };
    }
}

unsafe extern "C" fn used_work_fn(work: *mut ffi::vhost_work) {
    let off = core::mem::offset_of!(VhostVsock, used_work);
    // SAFETY: the only work item with this function is a device's `used_work`.
    let d = unsafe { ((work as *mut u8).sub(off) as *const VhostVsock).as_ref() };
    if let Some(d) = d {
        let mut g = d.tx().lock();
        if d.return_done(&mut g) {
            g.signal();
        }
    }
}

/// Gets the device back from one of its virtqueues' kick work items.
///
/// # Safety
/// `work` is the `poll.work` of a virtqueue of a live `VhostVsock`.
unsafe fn from_kick<'a>(work: *mut ffi::vhost_work) -> Option<&'a VhostVsock> {
    let off = core::mem::offset_of!(ffi::vhost_virtqueue, poll) + core::mem::offset_of!(ffi::vhost_poll, work);
    // SAFETY: per the contract `work` sits `off` bytes into a virtqueue, whose `dev` is the
    // first field of our `#[repr(C)]` device.
    unsafe {
        let vq = (work as *mut u8).sub(off) as *mut ffi::vhost_virtqueue;
        ((*vq).dev as *const VhostVsock).as_ref()
    }
}

unsafe extern "C" fn handle_tx_kick(work: *mut ffi::vhost_work) {
    // SAFETY: vhost calls a virtqueue's kick handler with its poll work item.
    if let Some(d) = unsafe { from_kick(work) } {
        d.handle_tx();
    }
}

unsafe extern "C" fn handle_rx_kick(work: *mut ffi::vhost_work) {
    // SAFETY: as above.
    if let Some(d) = unsafe { from_kick(work) } {
        d.do_send();
    }
}

unsafe extern "C" fn send_pkt_work(work: *mut ffi::vhost_work) {
    let off = core::mem::offset_of!(VhostVsock, send_work);
    // SAFETY: the only work item with this function is a device's `send_work`.
    let d = unsafe { ((work as *mut u8).sub(off) as *const VhostVsock).as_ref() };
    if let Some(d) = d {
        d.do_send();
    }
}

/// Sets a packet's reply mark, returning the previous one.
fn swap_mark(p: &mut Pkt, mark: u32) -> u32 {
    core::mem::replace(p.xmark_mut(), mark)
}

/// Captures one filled guest buffer: header `h`, then `frag` bytes of `p` and the packets
/// joined behind it (`done`), each as the copy took it: the rest of the header's length in
/// order, so all of each but the last, which may give only its first part.
fn capture_buf(h: &Hdr, p: &Pkt, frag: usize, done: &PktQueue) {
    let Some(mut c) = Captured::start(h, h.len) else { return };
    let mut ok = c.append(p, frag as u32);
    let mut left = (h.len as usize).saturating_sub(frag);
    done.for_each(|n| {
        let k = (n.remaining() as usize).min(left);
        left -= k;
        ok &= c.append(n, k as u32);
        ok
    });
    if ok {
        c.deliver();
    }
}

/// Copies `n` bytes of `p`'s unsent payload into `it`, inline or pages (a MSG_ZEROCOPY
/// send's, or a large payload's own); returns the bytes copied.
fn copy_payload(p: &mut Pkt, n: usize, it: &mut IovIter<'_>) -> usize {
    let raw = p.raw_ptr();
    // SAFETY: `raw` is the live packet `p` owns, lent for the call; `it` is a live iterator.
    unsafe { crate::abi::rvsock_pkt_copy_to_iter(raw, 0, n, it.as_mut_ptr()) }
}

impl VhostVsock {
    /// Allocates and initialises the state of a new open file.
    pub(crate) fn open() -> Result<NonNull<VhostVsock>> {
        let p = vhost::kvzalloc(core::mem::size_of::<VhostVsock>()) as *mut VhostVsock;
        let p = NonNull::new(p).ok_or(ENOMEM)?;
        let d = p.as_ptr();
        // SAFETY: `d` is a fresh zeroed allocation of our size: the atomics and the `Opaque`
        // C structures are valid zeroed; `fq_hash` and `pending` are initialised in place
        // here (the hash is plain data, written before anyone can read it); the vhost
        // structures are initialised by `Dev::init` and the work item by `work_init`, in
        // the memory they will live in until `release`.
        unsafe {
            // Plain call, returns a random number (inside this block's `unsafe`).
            let seed = ffi::get_random_u32();
            core::ptr::addr_of_mut!((*d).fq_hash).write(FlowHash::new(seed));
            let pending = core::ptr::addr_of_mut!((*d).pending);
            let q = match Pending::new() {
                Ok(q) => q,
                Err(e) => {
                    vhost::kvfree(d.cast());
                    return Err(e);
                }
            };
            let r = ffi::pin_init_at(kernel::new_spinlock!(q, "rvsock_vhost_pending"), pending);
            if r.is_err() {
                vhost::kvfree(d.cast());
                return Err(ENOMEM);
            }
            let done = core::ptr::addr_of_mut!((*d).done);
            let r = ffi::pin_init_at(kernel::new_spinlock!(Done { heads: [0; HOLD_CAP], n: 0 }, "rvsock_vhost_done"), done);
            if r.is_err() {
                core::ptr::drop_in_place(pending);
                vhost::kvfree(d.cast());
                return Err(ENOMEM);
            }
            let vq_ptrs = ffi::opaque_raw(core::ptr::addr_of!((*d).vq_ptrs));
            vq_ptrs.write([ffi::opaque_raw(&(*d).vqs[VQ_RX]), ffi::opaque_raw(&(*d).vqs[VQ_TX])]);
            let mut kicks: [vhost::WorkFn; 2] = [handle_rx_kick, handle_rx_kick];
            kicks[VQ_TX] = handle_tx_kick;
            Dev::init(ffi::opaque_raw(&(*d).vdev), vq_ptrs, kicks, PKT_WEIGHT, WEIGHT);
            vhost::work_init(ffi::opaque_raw(&(*d).send_work), send_pkt_work);
            vhost::work_init(ffi::opaque_raw(&(*d).used_work), used_work_fn);
            (*d).ns = crate::abi::rvsock_current_ns();
            // Without a hold (no memory) every payload is copied.
            let hold = crate::abi::rvsock_hold_new(HOLD_CAP as u32, Some(held_released), d.cast());
            (*d).hold.store(hold, Relaxed);
        }
        Ok(p)
    }

    fn dev(&self) -> Dev {
        // SAFETY: initialised in `open`, live as long as `self`; `Opaque<T>` is transparent
        // over `T`, so the pointer derived from the reference is the device's.
        unsafe { Dev::from_raw(NonNull::from(&self.vdev).cast()) }
    }

    /// The RX (host to guest) virtqueue.
    fn rx(&self) -> Vq {
        // SAFETY: as in `dev`: initialised in `open`, live as long as `self`.
        unsafe { Vq::from_raw(NonNull::from(&self.vqs[VQ_RX]).cast()) }
    }

    /// The TX (guest to host) virtqueue.
    fn tx(&self) -> Vq {
        // SAFETY: as in `dev`.
        unsafe { Vq::from_raw(NonNull::from(&self.vqs[VQ_TX]).cast()) }
    }

    /// The guest CID (0: none assigned).
    pub(crate) fn guest_cid(&self) -> u32 {
        self.guest_cid.load(Relaxed)
    }

    /// Sets the guest CID (table lock held by the caller).
    pub(crate) fn set_guest_cid(&self, cid: u32) {
        self.guest_cid.store(cid, Relaxed);
    }

    /// Whether the device has run since it was opened. Until then (the guest's driver not up
    /// yet: firmware, boot; or a migration's destination before it takes over) host packets
    /// for its CID fail with EHOSTUNREACH instead of queueing: a connect fails at once, as in
    /// 7.3 in-tree, and no closed socket stays pinned by a REQUEST queued for a guest that
    /// may never come. A device stopped after it ran (a paused VM, the source of a migration,
    /// the guest resetting its device) keeps queueing, as 6.12 in-tree does: a pause does not
    /// fail its connections' writes (7.3 in-tree fails them too).
    pub(crate) fn started(&self) -> bool {
        self.started.load(Relaxed)
    }

    /// Whether the guest negotiated SEQPACKET.
    pub(crate) fn seqpacket(&self) -> bool {
        self.seqpacket.load(Relaxed)
    }

    /// Queues a host-to-guest packet and kicks the worker. Called under the CID table lock
    /// (so the device cannot be released meanwhile); does not sleep.
    pub(crate) fn queue(&self, p: Pkt) {
        let mut p = p;
        if self.rx_task.load(Relaxed) == vhost::current_task() as *mut c_void {
            swap_mark(&mut p, MARK_REPLY);
            self.queued_replies.fetch_add(1, Relaxed);
        }
        let i = self.fq_hash.bucket(&p.hdr());
        self.pending.lock().push_back(i, p);
        // SAFETY: `send_work` lives as long as the device; `release` flushes the worker after
        // removing the device from the table, which this call runs under.
        unsafe { self.rx().work_queue(self.send_work.get()) };
    }

    /// Takes out the packets charged to socket `owner` that wait for guest receive buffers
    /// (`cancel_pkt`), for the caller to free; a reply among them no longer counts.
    pub(crate) fn cancel(&self, owner: *mut c_void) -> PktQueue {
        let mut gone = self.pending.lock().take_owned(owner);
        let mut replies = 0;
        let mut keep = PktQueue::new();
        while let Some(mut p) = gone.pop_front() {
            replies += i32::from(swap_mark(&mut p, 0) == MARK_REPLY);
            keep.push_back(p);
        }
        self.queued_replies.fetch_sub(replies, Relaxed);
        keep
    }

    /// Puts `p`, taken from bucket `i`, back at the front of it.
    fn requeue(&self, i: usize, p: Pkt) {
        let mut q = PktQueue::new();
        q.push_back(p);
        self.pending.lock().put_back(i, q);
    }

    /// Whether the guest may send more: fewer than a TX ring's worth of replies pending.
    fn more_replies(&self, tx: &VqGuard) -> bool {
        self.queued_replies.load(Relaxed) < tx.num() as i32
    }

    /// A packet fully written into guest buffers: counts and frees it; true if TX, paused on
    /// a full reply budget, may resume now.
    fn sent(&self, mut p: Pkt) -> bool {
        self.stats.count(Count::Sent);
        if swap_mark(&mut p, 0) != MARK_REPLY {
            return false;
        }
        let v = self.queued_replies.fetch_sub(1, Relaxed) - 1;
        v + 1 == self.tx().num_unlocked() as i32
    }

    /// Host to guest: fills guest receive buffers from `pending` (worker context).
    fn do_send(&self) {
        let mut restart_tx = false;
        {
            let mut g = self.rx().lock();
            if g.backend().is_null() || !g.meta_prefetch() {
                return;
            }
            g.disable_notify();
            let (mut pkts, mut bytes, mut added) = (0i32, 0i32, false);
            // What the last buffer filled took from its flow's turn: charged with the next pop.
            let mut sent: Option<(usize, usize)> = None;
            loop {
                let Some((flow, mut p)) = self.pending.lock().pop(sent.take()) else {
                    g.enable_notify();
                    break;
                };
                let (head, out, inn, log) = match g.get_desc() {
                    Desc::Chain { head, out, inn, log } => (head, out, inn, log),
                    Desc::Broken => {
                        self.requeue(flow, p);
                        break;
                    }
                    Desc::Empty => {
                        self.requeue(flow, p);
                        if g.enable_notify() {
                            g.disable_notify();
                            continue;
                        }
                        break;
                    }
                };
                let room = g.iov_len(out, inn);
                if out != 0 || room < HDR_LEN {
                    // Not a receive buffer: give it back empty, keep the packet.
                    self.stats.count(Count::BadRxBuf);
                    g.err();
                    g.add_used(head, 0);
                    added = true;
                    self.requeue(flow, p);
                    pkts += 1;
                    if g.exceeds_weight(pkts, bytes) {
                        break;
                    }
                    continue;
                }
                let payload = p.remaining() as usize;
                let frag = payload.min(room - HDR_LEN);
                let mut h = p.hdr();
                if frag < payload && h.flags & SEQ_EOM != 0 {
                    // A split SEQPACKET message: only the last piece carries EOM (and EOR).
                    h.flags &= !(SEQ_EOM | SEQ_EOR);
                }
                h.len = frag as u32;
                // STREAM payloads of the same connection queued right behind this one fill the
                // rest of its buffer (issue 17): one header, one used entry and one guest packet
                // for a buffer's worth of small sends, and a 64 KiB packet's tail no longer
                // takes a buffer of its own. The last one joined may go in part; its rest
                // stays first in the queue.
                let mut joined = PktQueue::new();
                if frag == payload {
                    let mut q = self.pending.lock();
                    loop {
                        let space = (room - HDR_LEN).saturating_sub(h.len as usize);
                        if space == 0 {
                            break;
                        }
                        let n = q.pop_if(flow, |n| {
                            let nh = n.hdr();
                            let take = (n.remaining() as usize).min(space) as u32;
                            let whole = nh.len == n.remaining() && take > 0;
                            match join(&h, &Hdr { len: take, ..nh }).filter(|_| whole) {
                                Some(j) => {
                                    h = j;
                                    true
                                }
                                None => false,
                            }
                        });
                        let Some(n) = n else { break };
                        joined.push_back(n);
                    }
                }
                let len = h.len as usize;
                // Packets copied whole, and the bytes copied of the last one.
                let mut done = PktQueue::new();
                let mut last = 0usize;
                let ok = {
                    let mut it = g.iter(out, inn, room, true);
                    let mut ok = it.write(&h.encode()) == HDR_LEN && copy_payload(&mut p, frag, &mut it) == frag;
                    let mut left = len.saturating_sub(frag);
                    while ok {
                        let Some(mut n) = joined.pop_front() else { break };
                        last = (n.remaining() as usize).min(left);
                        ok = copy_payload(&mut n, last, &mut it) == last;
                        left = left.saturating_sub(last);
                        done.push_back(n);
                    }
                    ok
                };
                if !ok {
                    // Guest memory not writable: give the buffer back empty, keep the packets.
                    self.stats.count(Count::BadRxBuf);
                    g.err();
                    g.add_used(head, 0);
                    added = true;
                    {
                        let mut q = self.pending.lock();
                        q.put_back(flow, joined);
                        q.put_back(flow, done);
                    }
                    self.requeue(flow, p);
                    break;
                }
                // Captured as the guest gets it (in-tree 7.x captures each buffer it fills,
                // with the header written): a piece of a split packet, or packets joined.
                if crate::pkt::capturing() {
                    capture_buf(&h, &p, frag, &done);
                }
                g.add_used(head, (HDR_LEN + len) as u32);
                sent = Some((flow, HDR_LEN + len));
                g.log_write(log, HDR_LEN + len, inn);
                added = true;
                p.consume(frag as u32);
                bytes = bytes.saturating_add(len as i32);
                pkts += 1;
                if p.remaining() > 0 {
                    self.requeue(flow, p);
                } else {
                    restart_tx |= self.sent(p);
                }
                while let Some(mut n) = done.pop_front() {
                    self.stats.count(Count::Joined);
                    if done.is_empty() && last < n.remaining() as usize {
                        n.consume(last as u32);
                        self.requeue(flow, n);
                    } else {
                        restart_tx |= self.sent(n);
                    }
                }
                if g.exceeds_weight(pkts, bytes) {
                    break;
                }
            }
            if let Some((i, n)) = sent {
                self.pending.lock().charge(i, n);
            }
            if added {
                g.signal();
            }
        }
        if restart_tx {
            self.tx().poll_queue();
        }
    }

    /// Reads and validates one guest packet from the chain `head` just fetched; also says
    /// whether its payload is held (the chain goes back to the guest later).
    fn read_pkt(&self, g: &mut VqGuard, head: u32, out: u32, inn: u32, cid: u32) -> core::result::Result<(Pkt, bool), Reject> {
        if inn != 0 {
            return Err(Reject::BadChain);
        }
        let len = g.iov_len(0, out);
        if len < HDR_LEN {
            return Err(Reject::Truncated);
        }
        let room = HOLD_CAP.min(g.num() as usize / 2);
        let mut it = g.iter(0, out, len, false);
        let mut hb = [core::mem::MaybeUninit::new(0u8); HDR_LEN];
        if it.read(&mut hb) != HDR_LEN {
            return Err(Reject::Fault);
        }
        let hb = hb.map(|b| {
            // SAFETY: every byte was initialised above (zero, then the copy).
            unsafe { b.assume_init() }
        });
        let h = Hdr::decode(&hb);
        // The guest is untrusted: only packets from its own CID to the host, and only as
        // long as the chain really holds them, are accepted.
        let misaddressed = if cid == 0 || h.src_cid != u64::from(cid) {
            Some(Reject::Spoofed)
        } else if h.dst_cid != u64::from(VMADDR_CID_HOST) {
            Some(Reject::Misaddressed)
        } else {
            None
        };
        if let Some(why) = misaddressed {
            // A capture device sees it all the same (in-tree captures every guest packet
            // that is whole before its address check): a copy, never held.
            if crate::pkt::capturing() && h.len <= MAX_PKT_BUF_SIZE && h.len as usize <= it.count() {
                if let Ok(p) = Self::copy_in(&h, &mut it) {
                    p.tap();
                }
            }
            return Err(why);
        }
        if h.len > MAX_PKT_BUF_SIZE {
            return Err(Reject::Oversized);
        }
        let n = h.len as usize;
        if n > it.count() {
            return Err(Reject::Truncated);
        }
        let hold = self.hold.load(Relaxed);
        if n >= HOLD_MIN && !hold.is_null() && (self.outstanding.load(Relaxed) as usize) < room {
            // SAFETY: `hold` is the device's, live until `release` (which runs no handler);
            // `it` is the live iterator over the rest of this chain, guest memory as mapped in
            // the owner's address space, which this worker runs in; the core takes exactly
            // `n <= it.count()` bytes by reference, or nothing.
            let raw = unsafe { crate::abi::rvsock_pkt_alloc_held(hold, h.len, it.as_mut_ptr(), held_cookie(head, &self.epoch)) };
            // SAFETY: null or a packet the core just allocated for us.
            if let Some(mut p) = unsafe { Pkt::from_raw(raw) } {
                p.set_hdr(&h);
                // Before the core sees the packet: it may let go of it at once.
                self.outstanding.fetch_add(1, Relaxed);
                return Ok((p, true));
            }
            // Not taken (e.g. pages the kernel cannot pin): copied below.
        }
        Self::copy_in(&h, &mut it).map(|p| (p, false))
    }

    /// A guest packet with header `h` (its length checked against `it`) copied out of the
    /// rest of its chain `it`.
    fn copy_in(h: &Hdr, it: &mut IovIter<'_>) -> core::result::Result<Pkt, Reject> {
        let n = h.len as usize;
        if n > INLINE_MAX {
            // A full-size packet (in-tree guests and rvsock's send 64 KiB ones): its payload
            // goes into pages of its own, not into a 128 KiB allocation with the header.
            // SAFETY: `it` is the live iterator over the rest of this chain; the core copies
            // `n <= it.count()` bytes from it.
            let raw = unsafe { crate::abi::rvsock_pkt_alloc_from_iter(h.len, it.as_mut_ptr()) };
            // SAFETY: null or a packet the core just allocated for us. A null is an allocation
            // failure or a fault while copying; both drop the packet (counted as the former).
            let Some(mut p) = (unsafe { Pkt::from_raw(raw) }) else { return Err(Reject::NoMem) };
            p.set_hdr(h);
            return Ok(p);
        }
        let mut p = Pkt::alloc(h.len, false).map_err(|_| Reject::NoMem)?;
        p.set_hdr(h);
        let Some(buf) = p.buf_mut().get_mut(..n) else { return Err(Reject::NoMem) };
        if it.read(buf) != n {
            return Err(Reject::Fault);
        }
        p.set_len(h.len);
        Ok(p)
    }

    /// Returns the held chains the core let go of to the guest (TX virtqueue mutex held);
    /// true if any was added to the used ring. Without a backend (stopped, or the owner reset
    /// the rings) they are forgotten: the ring they came from is gone or handed over.
    fn return_done(&self, g: &mut VqGuard) -> bool {
        let mut heads = [0u32; HOLD_CAP];
        let n = {
            let mut d = self.done.lock();
            let n = d.n;
            for (h, x) in heads.iter_mut().zip(d.heads.iter()).take(n) {
                *h = *x;
            }
            d.n = 0;
            n
        };
        if n == 0 {
            return false;
        }
        self.outstanding.fetch_sub(n as u32, Relaxed);
        if g.backend().is_null() {
            return false;
        }
        let mut added = false;
        for &c in heads.iter().take(n) {
            // A chain of the rings before the last stop is not the current rings' to return.
            if c == held_cookie(c & 0xffff, &self.epoch) {
                g.add_used(c & 0xffff, 0);
                added = true;
            }
        }
        added
    }

    /// Guest to host: delivers the guest's packets to the core (worker context).
    fn handle_tx(&self) {
        let mut g = self.tx().lock();
        if g.backend().is_null() || !g.meta_prefetch() {
            return;
        }
        g.disable_notify();
        let cid = self.guest_cid();
        let (mut pkts, mut bytes) = (0i32, 0i32);
        let mut added = self.return_done(&mut g);
        self.rx_task.store(vhost::current_task() as *mut c_void, Relaxed);
        loop {
            if !self.more_replies(&g) {
                // Leave notifications off: `do_send` requeues us when replies drain.
                break;
            }
            let (head, out, inn) = match g.get_desc() {
                Desc::Chain { head, out, inn, .. } => (head, out, inn),
                Desc::Broken => break,
                Desc::Empty => {
                    if g.enable_notify() {
                        g.disable_notify();
                        continue;
                    }
                    break;
                }
            };
            let r = self.read_pkt(&mut g, head, out, inn, cid);
            bytes = bytes.saturating_add(HDR_LEN as i32);
            let mut held = false;
            match r {
                Ok((p, h)) => {
                    held = h;
                    bytes = bytes.saturating_add(p.len() as i32);
                    self.stats.count(Count::Delivered);
                    if held {
                        self.stats.count(Count::Held);
                    }
                    // Captured as it comes off the wire (in-tree: the same point).
                    p.tap();
                    // The core may call our `send_pkt` from inside: it only queues.
                    crate::deliver(p, self.ns);
                }
                Err(why) => {
                    self.stats.count(Count::Drop(why));
                    if matches!(why, Reject::BadChain | Reject::Fault) {
                        g.err();
                    }
                }
            }
            // Every chain goes back to the guest, valid or not; a held one once the core
            // lets go of its pages (`held_released`).
            if !held {
                g.add_used(head, 0);
                added = true;
            }
            pkts += 1;
            if g.exceeds_weight(pkts, bytes) {
                break;
            }
        }
        self.rx_task.store(core::ptr::null_mut(), Relaxed);
        if added {
            g.signal();
        }
    }

    /// `VHOST_VSOCK_SET_RUNNING` 1: attach the backend to both virtqueues.
    fn start(&self) -> Result {
        let me = self as *const VhostVsock as *mut c_void;
        let dg = self.dev().lock();
        dg.check_owner()?;
        let mut res = Ok(());
        for vq in [self.rx(), self.tx()] {
            let mut g = vq.lock();
            if !g.access_ok() {
                res = Err(EFAULT);
                break;
            }
            if g.backend().is_null() {
                g.set_backend(me);
                if let Err(e) = g.init_access() {
                    res = Err(e);
                    break;
                }
            }
        }
        if res.is_err() {
            for vq in [self.rx(), self.tx()] {
                vq.lock().set_backend(core::ptr::null_mut());
            }
            return res;
        }
        self.started.store(true, Relaxed);
        // Packets may have been queued while the device was stopped.
        // SAFETY: `send_work` lives as long as the device.
        unsafe { self.rx().work_queue(self.send_work.get()) };
        drop(dg);
        Ok(())
    }

    /// `VHOST_VSOCK_SET_RUNNING` 0 (and release): detach the backend. A running device being
    /// stopped by its owner (`check_owner`) first copies the payloads it holds and returns
    /// their chains, so the rings it hands over (migration) owe the guest nothing; at release
    /// the rings are gone with the VMM, and held payloads just keep their page references.
    fn stop(&self, check_owner: bool) -> Result {
        let dg = self.dev().lock();
        if check_owner {
            dg.check_owner()?;
        }
        {
            let mut g = self.tx().lock();
            let hold = self.hold.load(Relaxed);
            if check_owner && !g.backend().is_null() && !hold.is_null() {
                // SAFETY: the device's hold, live until `release`. Sleeps (copies), under
                // the TX mutex so that no chain is held meanwhile; the readers it may wait
                // for never take it.
                unsafe { crate::abi::rvsock_hold_detach(hold) };
                let n = self.done.lock().n;
                if self.return_done(&mut g) {
                    self.stats.add(Count::HeldStop, n as u64);
                    g.signal();
                }
            }
            g.set_backend(core::ptr::null_mut());
            self.epoch.fetch_add(1, Relaxed);
        }
        self.rx().lock().set_backend(core::ptr::null_mut());
        Ok(())
    }

    /// `VHOST_SET_FEATURES`.
    fn set_features(&self, f: u64) -> Result {
        if f & !FEATURES != 0 {
            return Err(crate::errno!(EOPNOTSUPP));
        }
        let mut dg = self.dev().lock();
        if f & (1 << ffi::VHOST_F_LOG_ALL) != 0 && !dg.log_access_ok() {
            return Err(EFAULT);
        }
        if f & (1 << ffi::VIRTIO_F_ACCESS_PLATFORM) != 0 {
            dg.init_iotlb().map_err(|_| EFAULT)?;
        } else {
            dg.clear_iotlb();
        }
        self.seqpacket.store(f & (1 << ffi::VIRTIO_VSOCK_F_SEQPACKET) != 0, Relaxed);
        for vq in [self.rx(), self.tx()] {
            vq.lock().set_acked_features(f);
        }
        Ok(())
    }

    /// `VHOST_VSOCK_SET_GUEST_CID`.
    fn set_cid(&self, cid: u64) -> Result {
        // Reserved CIDs (hypervisor, loopback, host, any) and 64-bit CIDs are refused.
        if cid <= u64::from(VMADDR_CID_HOST) || cid >= u64::from(u32::MAX) {
            return Err(EINVAL);
        }
        let cid = cid as u32;
        // Our own CID as a guest (nested): refused so that it keeps meaning us.
        if vhost::cid_is_local(cid) {
            return Err(crate::errno!(EADDRINUSE));
        }
        let old = table::set_cid(self, cid)?;
        if old != 0 && old != cid && !table::in_use(old, self.ns) {
            // Connections to the CID this guest had are orphans now.
            crate::reset_cid(old, self.ns);
        }
        Ok(())
    }

    /// The device's ioctls; everything not vsock-specific goes to the vhost core.
    ///
    /// # Safety
    /// `arg` is the argument of the current ioctl call (a user pointer for every command).
    pub(crate) unsafe fn ioctl(&self, cmd: u32, arg: usize) -> c_long {
        let argp = arg as *mut c_void;
        let r = match cmd {
            ioc::VSOCK_SET_GUEST_CID => get_u64(argp).and_then(|c| self.set_cid(c)),
            ioc::VSOCK_SET_RUNNING => {
                let mut b = [0u8; 4];
                vhost::get_user_bytes(&mut b, argp).and_then(|()| {
                    if i32::from_ne_bytes(b) != 0 { self.start() } else { self.stop(true) }
                })
            }
            ioc::GET_FEATURES => vhost::put_user_bytes(argp, &FEATURES.to_ne_bytes()),
            ioc::SET_FEATURES => get_u64(argp).and_then(|f| self.set_features(f)),
            ioc::GET_BACKEND_FEATURES => vhost::put_user_bytes(argp, &BACKEND_FEATURES.to_ne_bytes()),
            ioc::SET_BACKEND_FEATURES => get_u64(argp).and_then(|f| {
                if f & !BACKEND_FEATURES != 0 {
                    return Err(crate::errno!(EOPNOTSUPP));
                }
                self.dev().set_backend_features(f);
                Ok(())
            }),
            _ => {
                let mut dg = self.dev().lock();
                // SAFETY: `argp` is this call's user argument, per our contract.
                return unsafe { dg.generic_ioctl(cmd, argp) };
            }
        };
        match r {
            Ok(()) => 0,
            Err(e) => e.to_errno() as c_long,
        }
    }

    /// `read(2)`.
    ///
    /// # Safety
    /// `to` is the iterator of the current read call.
    pub(crate) unsafe fn read(&self, to: *mut ffi::iov_iter, nonblock: bool) -> isize {
        // SAFETY: per the contract.
        unsafe { self.dev().chr_read(to, nonblock) }
    }

    /// `write(2)`.
    ///
    /// # Safety
    /// `from` is the iterator of the current write call.
    pub(crate) unsafe fn write(&self, from: *mut ffi::iov_iter) -> isize {
        // SAFETY: per the contract.
        unsafe { self.dev().chr_write(from) }
    }

    /// `poll(2)`.
    ///
    /// # Safety
    /// `file` and `wait` are the arguments of the current poll call.
    pub(crate) unsafe fn poll(&self, file: *mut ffi::file, wait: *mut ffi::poll_table_struct) -> ffi::__poll_t {
        // SAFETY: per the contract.
        unsafe { self.dev().chr_poll(file, wait) }
    }

    /// Tears a device down (the file's last close) and frees it.
    ///
    /// # Safety
    /// `p` came from [`VhostVsock::open`], and no other file operation of it can run any more.
    pub(crate) unsafe fn release(p: NonNull<VhostVsock>) {
        {
            // SAFETY: live until freed at the end of this function.
            let d = unsafe { p.as_ref() };
            // After this no `send_pkt` can reach the device.
            let cid = table::remove(d);
            let _ = d.stop(false);
            // No `held_released` after this (a packet the core still has keeps its pages).
            // SAFETY: the device's hold (or null), given back once.
            unsafe { crate::abi::rvsock_hold_free(d.hold.swap(core::ptr::null_mut(), Relaxed)) };
            // Wait for running handlers: none delivers to the core after this.
            d.dev().flush();
            if cid != 0 && !table::in_use(cid, d.ns) {
                // Host sockets connected to this guest see ECONNRESET.
                crate::reset_cid(cid, d.ns);
            }
            d.dev().stop();
            let q = d.pending.lock().take_all();
            drop(q);
            d.dev().cleanup();
            d.stats.report(cid);
        }
        // SAFETY: the vhost worker is gone (`cleanup`), nobody can reach the device any more;
        // drop the Rust-owned field, then free the allocation from `open`.
        unsafe {
            core::ptr::drop_in_place(core::ptr::addr_of_mut!((*p.as_ptr()).pending));
            core::ptr::drop_in_place(core::ptr::addr_of_mut!((*p.as_ptr()).done));
            vhost::kvfree(p.as_ptr().cast());
        }
    }
}

fn get_u64(argp: *const c_void) -> Result<u64> {
    let mut b = [0u8; 8];
    vhost::get_user_bytes(&mut b, argp)?;
    Ok(u64::from_ne_bytes(b))
}

/// ioctl numbers (`include/uapi/linux/vhost.h`).
mod ioc {
    use kernel::ioctl::{_IOR, _IOW};
    const VHOST_VIRTIO: u32 = 0xAF;
    pub(super) const GET_FEATURES: u32 = _IOR::<u64>(VHOST_VIRTIO, 0x00);
    pub(super) const SET_FEATURES: u32 = _IOW::<u64>(VHOST_VIRTIO, 0x00);
    pub(super) const SET_BACKEND_FEATURES: u32 = _IOW::<u64>(VHOST_VIRTIO, 0x25);
    pub(super) const GET_BACKEND_FEATURES: u32 = _IOR::<u64>(VHOST_VIRTIO, 0x26);
    pub(super) const VSOCK_SET_GUEST_CID: u32 = _IOW::<u64>(VHOST_VIRTIO, 0x60);
    pub(super) const VSOCK_SET_RUNNING: u32 = _IOW::<kernel::ffi::c_int>(VHOST_VIRTIO, 0x61);
}
