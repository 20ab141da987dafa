// SPDX-License-Identifier: GPL-2.0
//! The virtio-vsock guest driver proper: device lifetime (probe/remove, freeze/restore around
//! system sleep), the receive, transmit and event paths, and the transport callbacks the core
//! calls. Safe Rust over `virtio.rs`.
//!
//! # Paths and contexts
//!
//! * Virtqueue callbacks run in interrupt context and only queue a work item on our workqueue.
//! * rx work: takes used rx buffers in batches under the rx mutex, validates them, refills the
//!   ring, then hands the batch to `rvsock_recv_pkt` with no lock held (the core may call
//!   `send_pkt` from inside, e.g. to answer a REQUEST).
//! * `send_pkt` (any process context, possibly from inside `rvsock_recv_pkt`): takes the tx
//!   spinlock, appends the packet to the pending FIFO and posts as much of the FIFO as the
//!   ring takes (taking back finished buffers only when the ring is full: taking buffers
//!   re-arms the tx interrupt); what does not fit waits for the tx work.
//! * tx work: reclaims finished buffers, posts pending packets, restarts a stalled rx.
//! * event work: TRANSPORT_RESET re-reads the guest CID and resets every connection. Events
//!   come before received packets: the event callback marks an event pending, and the rx
//!   work, before it delivers a batch while one is pending or being handled, runs the event
//!   work itself under `ev_order` (which the event work holds from its first look at the ring
//!   to the end of the reset). After a migration QEMU publishes TRANSPORT_RESET as soon as the
//!   VM runs, while a host application learns that the VM runs later; so a host's first
//!   REQUEST meets the new CID and no late reset kills the connection it creates, and a
//!   host's RST for a connection of the old device meets a socket that the reset already
//!   ended with ECONNRESET (not EPIPE, not an end of file).
//!
//! # Locks
//!
//! `dev` (mutex, probe/remove/freeze/restore) → `rx` (mutex) | `ev` (mutex) | `tx` (spinlock), and
//! `ev_order` (mutex) → `ev`. The rx and event mutexes are never held across a call into the
//! core; `ev_order` is, for the reset (the core never calls back into the event path). The tx
//! spinlock is never held across anything but virtqueue operations and freeing packets; no two
//! of rx/tx/ev are held together. Work items are cancelled only with `dev` held, which no work
//! item takes.
//!
//! # Device lifetime
//!
//! This state lives as long as the module. A direction is running while its lock holds the
//! virtqueue handle: teardown takes the handles out (stopping the direction), resets the
//! device, cancels the work items, drains the rings and deletes the virtqueues. A socket that
//! outlives the device (it pins the module, not the device) gets `ENODEV` from `send_pkt`.

use crate::abi::{self, RawPkt, RawTransport};
use crate::ffi;
use crate::pkt::{Pkt, PktQueue};
use crate::proto::hdr::{Hdr, Op, VMADDR_CID_ANY, VMADDR_CID_HOST};
use crate::virtio::{EvVq, EventBuf, RxVq, SgTable, TxVq, VDev, Vqs, Work, WorkQueue};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::{Mutex, SpinLock};
use kernel::{new_mutex, new_spinlock};

#[path = "events.rs"]
mod events;

/// Event buffers kept posted (as in-tree).
const EVENT_BUFS: usize = 8;
/// Used rx buffers taken per lock hold.
const RX_BATCH: u32 = 64;
/// Batches per rx work run before the work requeues itself (lets other work run).
const RX_ROUNDS: u32 = 16;
/// Payload of a small buffer: the whole allocation is one 4 KiB slab object.
pub(crate) const SMALL_CAP: u32 = (4096 - core::mem::size_of::<RawPkt>()) as u32;
/// Received payloads up to this size, or up to an eighth of a large rx buffer, are copied
/// into an exact-size packet and the large rx buffer goes straight back to the ring (see
/// `rx_take`): a 4 KiB write from the host must not pin (and make us reallocate) 64 KiB.
const RX_COPYBREAK: u32 = SMALL_CAP;
/// Largest payload the core accepts in one packet (`MAX_PKT_BUF_SIZE`).
pub(crate) const MAX_CAP: u32 = 64 * 1024;
/// Large rx buffers kept posted: at most this many bytes of them (32 of 64 KiB), whatever the
/// ring size. That is eight full credit windows (256 KiB), so a device never waits for
/// buffers a stream could fill; a ring of 128 large ones (8 MiB) cost a guest that had not
/// touched that memory yet one fault into its hypervisor per page as the device first wrote
/// the buffers and the guest read them: 2,200 of them during a 2 s host-to-guest stream of 4 KiB
/// writes in a nested guest (in-tree's, 128 buffers of 4 KiB: 165), which then took twice
/// in-tree's vCPU time per MiB (issue 17).
const RX_LARGE_BYTES: u32 = 2 << 20;

/// Counters of what the driver did and refused; logged when the device goes away.
#[derive(Default)]
struct Stats {
    rx_pkts: AtomicU64,
    rx_bytes: AtomicU64,
    rx_copied: AtomicU64,
    rx_bad_used_len: AtomicU64,
    rx_bad_hdr_len: AtomicU64,
    rx_unwritten: AtomicU64,
    rx_alloc_fail: AtomicU64,
    rx_small: AtomicU64,
    rx_grow: AtomicU64,
    rx_shrink: AtomicU64,
    tx_pkts: AtomicU64,
    tx_bytes: AtomicU64,
    tx_queued: AtomicU64,
    tx_dropped: AtomicU64,
    ev_reset: AtomicU64,
    ev_bad: AtomicU64,
}

fn inc(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed)
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Receive direction, under `Shared::rx`. Running while `vq` is `Some`.
struct Rx {
    vq: Option<RxVq>,
    /// Ring size (buffers we keep posted at most).
    size: u32,
    /// Buffers currently posted.
    posted: u32,
    /// Used buffers to post again, and their sizing.
    bufs: RxBufs,
}

/// The rx buffers between device and ring: which size new ones get (`Shared::rx_size`), and
/// those that came back without their payload (copied or dropped), ready to post again.
struct RxBufs {
    recycle: PktQueue,
    /// New buffers are large (`Shared::rx_cap`), else small (`SMALL_CAP`).
    large: bool,
    /// Buffers in a row that came back holding at most `SMALL_CAP` bytes.
    small_run: u32,
}

/// Transmit direction, under `Shared::tx`. Running while `vq` is `Some`.
struct Tx {
    vq: Option<TxVq>,
    /// Packets on the ring (posted, not yet returned).
    inflight: u32,
    /// How many of them are MSG_ZEROCOPY packets (their senders wait for the buffer's return).
    zc_inflight: u32,
    /// Scatterlist for posting a zerocopy packet.
    sg: SgTable,
    /// Packets waiting for ring space, in send order.
    pending: PktQueue,
    /// How many of `pending` are replies (RESPONSE/RST), the packets the rx path generates.
    replies: u32,
    /// The device asked to be notified of buffers added since (`Vq::kick_prepare`) and has
    /// not been yet: the tx work (or an urgent send) owes it a notification.
    kick_owed: bool,
}

/// Event direction, under `Shared::ev`. Running while `vq` is `Some`.
struct Ev {
    vq: Option<EvVq>,
    /// The device, for re-reading the CID on TRANSPORT_RESET (set exactly while `vq` is).
    vdev: Option<VDev>,
}

/// The bound device, under `Shared::dev`.
struct Bound {
    vdev: VDev,
    transport: &'static crate::TransportCell,
}

/// What `stop` does with the transport once nothing is delivered to the core any more.
enum Teardown {
    /// Nothing (a probe that failed to register it).
    Keep,
    /// Unregisters it, which resets every socket still using it (remove).
    Unregister(&'static crate::TransportCell),
    /// Resets every connection on it and keeps it registered (freeze).
    Reset(&'static crate::TransportCell),
}

/// Driver state: one per module (the driver binds one device at a time, like in-tree).
#[pin_data]
pub(crate) struct Shared {
    /// First field, so it is destroyed (drained) first when the state is dropped.
    wq: WorkQueue,
    #[pin]
    dev: Mutex<Option<Bound>>,
    #[pin]
    rx: Mutex<Rx>,
    #[pin]
    tx: SpinLock<Tx>,
    #[pin]
    ev: Mutex<Ev>,
    /// Held by the event work from taking events to the end of the reset they cause, so that
    /// the rx work, which runs the event work first when `ev_state` is not 0, delivers no
    /// packet before a reset the device published earlier is complete.
    #[pin]
    ev_order: Mutex<()>,
    /// `EV_PENDING` (set by the event callback) | `EV_RUNNING` (the event work is at work).
    ev_state: AtomicU32,
    #[pin]
    rx_work: Work,
    #[pin]
    tx_work: Work,
    #[pin]
    ev_work: Work,
    /// Event buffers (device-written; in this kmalloc'd structure, so DMA-able).
    events: [EventBuf; EVENT_BUFS],
    /// Payload capacity of the large rx buffers (module parameter).
    rx_cap: u32,
    /// Our CID (`VMADDR_CID_ANY` without a device).
    guest_cid: AtomicU32,
    /// The transport registered for the bound device (null without one).
    transport: AtomicPtr<RawTransport>,
    /// Mirror of `Tx::replies` for the rx path (which must not take the tx lock).
    queued_replies: AtomicU32,
    /// Size of the rx ring: the rx path stops while `queued_replies` reaches it.
    reply_limit: AtomicU32,
    /// The rx work stopped because too many replies were waiting for tx ring space.
    rx_stalled: AtomicBool,
    stats: Stats,
}

/// `Shared::ev_state`: the device returned an event buffer that the event work did not see yet.
const EV_PENDING: u32 = 1;
/// `Shared::ev_state`: the event work is taking events or resetting.
const EV_RUNNING: u32 = 2;

/// Whether a packet answers something the peer sent (the rx path's output, bounded by
/// stalling rx while too many of them wait for ring space; in-tree "reply" packets).
fn is_reply(h: &Hdr) -> bool {
    h.op == Op::Response as u16 || h.op == Op::Rst as u16
}

/// A guest CID the driver accepts from the device: 32-bit, not a reserved or wildcard CID.
fn valid_cid(cid: u64) -> Option<u32> {
    let c = u32::try_from(cid).ok()?;
    (c > VMADDR_CID_HOST && c != VMADDR_CID_ANY).then_some(c)
}

impl Shared {
    /// An initialiser of the state, with its workqueue and rx buffer payload size.
    pub(crate) fn new(wq: WorkQueue, rx_cap: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Shared {
            wq,
            dev <- new_mutex!(None, "rvsock_virtio_dev"),
            rx <- new_mutex!(
                Rx { vq: None, size: 0, posted: 0, bufs: RxBufs { recycle: PktQueue::new(), large: false, small_run: 0 } },
                "rvsock_virtio_rx"
            ),
            tx <- new_spinlock!(
                Tx { vq: None, inflight: 0, zc_inflight: 0, sg: SgTable::new(), pending: PktQueue::new(), replies: 0, kick_owed: false },
                "rvsock_virtio_tx"
            ),
            ev <- new_mutex!(Ev { vq: None, vdev: None }, "rvsock_virtio_ev"),
            ev_order <- new_mutex!((), "rvsock_virtio_ev_order"),
            ev_state: AtomicU32::new(0),
            rx_work <- Work::new(crate::rx_work_fn),
            tx_work <- Work::new(crate::tx_work_fn),
            ev_work <- Work::new(crate::ev_work_fn),
            events: [const { EventBuf::new() }; EVENT_BUFS],
            rx_cap,
            guest_cid: AtomicU32::new(VMADDR_CID_ANY),
            transport: AtomicPtr::new(core::ptr::null_mut()),
            queued_replies: AtomicU32::new(0),
            reply_limit: AtomicU32::new(u32::MAX),
            rx_stalled: AtomicBool::new(false),
            stats: Stats::default(),
        }? Error)
    }

    /// Queues the rx work (virtqueue callback).
    pub(crate) fn kick_rx(&self) {
        self.wq.queue(&self.rx_work);
    }

    /// Queues the tx work (virtqueue callback).
    pub(crate) fn kick_tx(&self) {
        self.wq.queue(&self.tx_work);
    }

    /// Marks an event pending and queues the event work (virtqueue callback).
    pub(crate) fn kick_ev(&self) {
        self.ev_state.fetch_or(EV_PENDING, Ordering::SeqCst);
        self.wq.queue(&self.ev_work);
    }

    /// Our CID (`local_cid` callback).
    pub(crate) fn local_cid(&self) -> u32 {
        self.guest_cid.load(Ordering::Relaxed)
    }

    // ---- device lifetime -------------------------------------------------------------------

    /// Binds `vdev`: finds the rings, reads the CID, registers the transport, posts buffers.
    pub(crate) fn probe(&self, vdev: VDev) -> Result {
        let mut dev = self.dev.lock();
        if dev.is_some() {
            pr_warn!("a virtio-vsock device is already bound; ignoring another one\n");
            return Err(EBUSY);
        }
        let transport = crate::transport_for(vdev.has_feature(ffi::VIRTIO_VSOCK_F_SEQPACKET));
        let cid = self.start(&vdev, transport)?;

        // SAFETY: `transport` is a static descriptor, unchanged while registered; it is
        // unregistered in `stop` before the module can go away.
        let r = kernel::error::to_result(unsafe { abi::rvsock_transport_register(transport.get()) });
        if let Err(e) = r {
            pr_err!("cannot register the G2H transport: {:?}\n", e);
            self.stop(&vdev, Teardown::Keep);
            return Err(e);
        }
        self.fill();
        pr_info!(
            "bound virtio-vsock device: guest CID {}, seqpacket {}, rx buffers {} x {} bytes (up to {} under bulk traffic)\n",
            cid,
            core::ptr::eq(transport, crate::transport_for(true)),
            self.rx.lock().posted,
            SMALL_CAP,
            self.rx_cap
        );
        *dev = Some(Bound { vdev, transport });
        Ok(())
    }

    /// Reads the CID, finds the rings, sets the device ready and gives the rings to the three
    /// paths, for `transport` (`dev` held by the caller: binding, or resuming from system
    /// sleep). Nothing is posted yet.
    fn start(&self, vdev: &VDev, transport: &'static crate::TransportCell) -> Result<u32> {
        let raw_cid = vdev.read_config_u64(0); // struct virtio_vsock_config { le64 guest_cid }
        let Some(cid) = valid_cid(raw_cid) else {
            pr_err!("device offers invalid guest CID {}\n", raw_cid);
            return Err(EINVAL);
        };
        let vqs = vdev.find_vqs([
            (kernel::c_str!("rx"), crate::rx_done as crate::virtio::VqCallback),
            (kernel::c_str!("tx"), crate::tx_done),
            (kernel::c_str!("event"), crate::ev_done),
        ])?;
        // DRIVER_OK before a ring is ours to use: on restore the transport stayed registered,
        // and a `send` may post (and notify) as soon as the tx ring is back. Callbacks that
        // come meanwhile find no ring and return; the device has no buffer to use yet.
        vdev.ready();
        self.guest_cid.store(cid, Ordering::Relaxed);
        self.transport.store(transport.get(), Ordering::Release);
        self.reply_limit.store(vqs.rx.0.size(), Ordering::Relaxed);
        self.queued_replies.store(0, Ordering::Relaxed);
        self.rx_stalled.store(false, Ordering::Relaxed);
        {
            let mut rx = self.rx.lock();
            rx.size = vqs.rx.0.size();
            rx.posted = 0;
            rx.vq = Some(vqs.rx);
        }
        {
            let mut tx = self.tx.lock();
            tx.replies = 0;
            tx.kick_owed = false;
            tx.inflight = 0;
            tx.zc_inflight = 0;
            tx.vq = Some(vqs.tx);
        }
        {
            let mut ev = self.ev.lock();
            ev.vq = Some(vqs.ev);
            ev.vdev = Some(vdev.clone());
        }
        Ok(cid)
    }

    /// Posts the receive and event buffers: the device may send to us from here on.
    fn fill(&self) {
        {
            let mut rx = self.rx.lock();
            self.rx_fill(&mut rx);
            if rx.posted == 0 {
                pr_warn!("no rx buffer could be posted\n");
            }
        }
        self.ev_fill();
    }

    /// Driver `freeze` (system sleep: suspend, hibernation), before the device is reset:
    /// resets every connection on the transport (the device and the host forget them), stops
    /// the rings. The transport stays registered and its sends fail with ENODEV until
    /// `restore` (in-tree's freeze does the same).
    pub(crate) fn freeze(&self, vdev: *mut ffi::virtio_device) {
        let dev = self.dev.lock();
        let Some(b) = dev.as_ref().filter(|b| b.vdev.is(vdev)) else { return };
        self.stop(&b.vdev, Teardown::Reset(b.transport));
        pr_info!("device frozen (system sleep): its connections were reset\n");
    }

    /// Driver `restore` (resume from system sleep; the virtio core has reset the device and
    /// negotiated the same features again): finds the rings again, reads the CID again (a
    /// hibernated guest may resume with another one), posts buffers.
    pub(crate) fn restore(&self, vdev: *mut ffi::virtio_device) -> Result {
        let dev = self.dev.lock();
        let Some(b) = dev.as_ref().filter(|b| b.vdev.is(vdev)) else { return Err(ENODEV) };
        let cid = self.start(&b.vdev, b.transport)?;
        self.fill();
        pr_info!("device restored (resume): guest CID {}\n", cid);
        Ok(())
    }

    /// Shows the driver's counters in `d` (`/sys/kernel/debug/rvsock_virtio/`).
    ///
    /// # Safety
    /// `d` is dropped before `self`.
    pub(crate) unsafe fn debugfs(&self, d: &crate::debugfs::DebugDir) {
        let s = &self.stats;
        for (name, c) in [
            (&b"rx_packets\0"[..], &s.rx_pkts),
            (b"rx_bytes\0", &s.rx_bytes),
            (b"rx_copied\0", &s.rx_copied),
            (b"rx_bad_used_len\0", &s.rx_bad_used_len),
            (b"rx_bad_hdr_len\0", &s.rx_bad_hdr_len),
            (b"rx_unwritten\0", &s.rx_unwritten),
            (b"rx_small_buffer_fallbacks\0", &s.rx_small),
            (b"rx_buffers_grown\0", &s.rx_grow),
            (b"rx_buffers_shrunk\0", &s.rx_shrink),
            (b"rx_alloc_failures\0", &s.rx_alloc_fail),
            (b"tx_packets\0", &s.tx_pkts),
            (b"tx_bytes\0", &s.tx_bytes),
            (b"tx_queued\0", &s.tx_queued),
            (b"tx_dropped\0", &s.tx_dropped),
            (b"event_resets\0", &s.ev_reset),
            (b"event_bad\0", &s.ev_bad),
        ] {
            // SAFETY: the counters live in `self`, which outlives `d` per the contract.
            unsafe { d.counter(name, c) };
        }
    }

    /// Unbinds `vdev` (driver `remove`).
    pub(crate) fn remove(&self, vdev: *mut ffi::virtio_device) {
        let mut dev = self.dev.lock();
        let Some(b) = dev.take_if(|b| b.vdev.is(vdev)) else { return };
        self.stop(&b.vdev, Teardown::Unregister(b.transport));
        let s = &self.stats;
        pr_info!(
            "device removed; since load: rx {} pkts {} bytes ({} copied, {} bad used len, {} bad hdr len, {} unwritten, {} small-buffer fallbacks, {} alloc failures, buffers grown {} shrunk {}), tx {} pkts {} bytes ({} queued, {} dropped), events {} resets {} bad\n",
            get(&s.rx_pkts),
            get(&s.rx_bytes),
            get(&s.rx_copied),
            get(&s.rx_bad_used_len),
            get(&s.rx_bad_hdr_len),
            get(&s.rx_unwritten),
            get(&s.rx_small),
            get(&s.rx_alloc_fail),
            get(&s.rx_grow),
            get(&s.rx_shrink),
            get(&s.tx_pkts),
            get(&s.tx_bytes),
            get(&s.tx_queued),
            get(&s.tx_dropped),
            get(&s.ev_reset),
            get(&s.ev_bad)
        );
    }

    /// Stops every direction and releases the rings (`dev` held by the caller); `t` says what
    /// becomes of the transport and its sockets.
    fn stop(&self, vdev: &VDev, t: Teardown) {
        // Receive and events first, so that nothing is delivered to the core any more and
        // no connection can be created on the transport while it is being unregistered.
        let rxq = self.rx.lock().vq.take();
        let evq = {
            let mut ev = self.ev.lock();
            ev.vdev = None;
            ev.vq.take()
        };
        self.rx_work.cancel_sync();
        self.ev_work.cancel_sync();
        // Transmit next: from here `send` fails with ENODEV. A packet posted later would be
        // lost in the device reset below unnoticed (a connect's REQUEST: its socket, missed by
        // the resets that follow, would wait out its timeout instead of failing at once).
        // The resets send nothing, so nothing is lost by stopping first.
        let (txq, pending) = {
            let mut tx = self.tx.lock();
            tx.replies = 0;
            tx.kick_owed = false;
            tx.inflight = 0;
            tx.zc_inflight = 0;
            (tx.vq.take(), core::mem::replace(&mut tx.pending, PktQueue::new()))
        };
        drop(pending);
        self.queued_replies.store(0, Ordering::Relaxed);
        match t {
            Teardown::Keep => {}
            // SAFETY: registered in `probe`.
            Teardown::Unregister(t) => unsafe { abi::rvsock_transport_unregister(t.get()) },
            // SAFETY: registered in `probe`; process context, as for the unregistering above
            // (a reset sends no packet; the core may call `cancel_pkt`, which takes only the
            // tx lock, not held here).
            Teardown::Reset(t) => unsafe { abi::rvsock_transport_reset(t.get(), u32::MAX, abi::NS_ANY) },
        }
        self.transport.store(core::ptr::null_mut(), Ordering::Release);
        self.guest_cid.store(VMADDR_CID_ANY, Ordering::Relaxed);

        // The device stops using every buffer and no callback runs after this.
        vdev.reset();
        // Work queued by callbacks meanwhile finds no ring and returns; wait for it.
        self.rx_work.cancel_sync();
        self.tx_work.cancel_sync();
        self.ev_work.cancel_sync();

        let recycled = core::mem::replace(&mut self.rx.lock().bufs.recycle, PktQueue::new());
        drop(recycled);
        if let (Some(mut rx), Some(mut tx), Some(mut ev)) = (rxq, txq, evq) {
            // SAFETY: the device was reset above.
            unsafe {
                while rx.detach().is_some() {}
                while tx.detach().is_some() {}
                ev.detach_all();
            }
            vdev.del_vqs(Vqs { rx, tx, ev });
        }
        self.rx.lock().posted = 0;
        self.rx_stalled.store(false, Ordering::Relaxed);
    }

    // ---- receive -------------------------------------------------------------------------

    /// Allocates one rx buffer: a small one unless `large`; a large one if that is possible
    /// without direct reclaim or compaction (a high-order allocation must not stall the
    /// receive path), else a small one.
    fn rx_alloc(&self, large: bool) -> Option<Pkt> {
        use kernel::bindings as b;
        if !large {
            return Pkt::alloc(SMALL_CAP, false).ok();
        }
        let direct_reclaim: b::gfp_t = 1 << b::___GFP_DIRECT_RECLAIM_BIT;
        let gfp = (b::GFP_KERNEL & !direct_reclaim) | b::__GFP_NOWARN;
        // SAFETY: plain allocation; a null result is handled.
        let p = unsafe { Pkt::from_raw(abi::rvsock_pkt_alloc(self.rx_cap, gfp)) };
        if p.is_some() || self.rx_cap <= SMALL_CAP {
            return p;
        }
        inc(&self.stats.rx_small);
        Pkt::alloc(SMALL_CAP, false).ok()
    }

    /// Buffers to keep posted: the ring size, or fewer if they are large (`RX_LARGE_BYTES`).
    fn rx_target(&self, rx: &Rx) -> u32 {
        if rx.bufs.large {
            rx.size.min((RX_LARGE_BYTES / self.rx_cap.max(1)).max(8))
        } else {
            rx.size
        }
    }

    /// Tops the rx ring up to `rx_target` (recycled buffers first) and notifies the device.
    fn rx_fill(&self, rx: &mut Rx) {
        let target = self.rx_target(rx);
        let Rx { vq, size: _, posted, bufs } = rx;
        let Some(vq) = vq.as_mut() else { return };
        let mut added = false;
        while *posted < target {
            let Some(p) = bufs.recycle.pop_front().or_else(|| self.rx_alloc(bufs.large)) else {
                inc(&self.stats.rx_alloc_fail);
                break;
            };
            match vq.post(p) {
                Ok(()) => {
                    *posted += 1;
                    added = true;
                }
                Err((_, p)) => {
                    bufs.recycle.push_front(p);
                    break;
                }
            }
        }
        if added {
            vq.0.kick();
        }
    }

    /// Sizes the buffers posted from now on by what the device writes into them (issue 17):
    /// small (one 4 KiB allocation) while the peer sends small packets, large (`rx_cap`, 64 KiB
    /// by default) once a buffer comes back full (the device split a larger packet over
    /// several of ours), small again after two rings' worth in a row held at most a small
    /// buffer's payload. At most 2 MiB of large buffers are posted (`RX_LARGE_BYTES`); a ring of
    /// 128 small ones pins 512 KiB (in-tree posts 4 KiB buffers always: more packets per byte
    /// under bulk traffic). Buffers of the other size are freed as they come back instead of reposted.
    fn rx_size(&self, b: &mut RxBufs, size: u32, cap: u32, len: u32) {
        if self.rx_cap <= SMALL_CAP {
            return;
        }
        if len > SMALL_CAP || len == cap {
            b.small_run = 0;
            if len == cap && !b.large {
                b.large = true;
                inc(&self.stats.rx_grow);
            }
            return;
        }
        b.small_run = b.small_run.saturating_add(1);
        if b.large && b.small_run >= 2 * size {
            b.large = false;
            inc(&self.stats.rx_shrink);
        }
    }

    /// Keeps a used buffer for posting again if it has the size new buffers have; frees it
    /// otherwise.
    fn rx_recycle(&self, b: &mut RxBufs, pkt: Pkt) {
        let want = if b.large { self.rx_cap } else { SMALL_CAP };
        if pkt.cap() == want {
            b.recycle.push_back(pkt);
        }
    }

    /// Checks one used rx buffer; returns the packet to deliver, or recycles/drops it.
    fn rx_take(&self, b: &mut RxBufs, size: u32, mut pkt: Pkt, used: u32) -> Option<Pkt> {
        let cap = pkt.cap();
        let hdr_len = crate::abi::HDR_LEN as u32;
        let Some(payload) = used.checked_sub(hdr_len).filter(|&n| n <= cap) else {
            if inc(&self.stats.rx_bad_used_len) < 8 {
                pr_warn!("dropping rx buffer: device reports {} bytes used of {}\n", used, cap + hdr_len);
            }
            self.rx_recycle(b, pkt);
            return None;
        };
        let h = pkt.hdr();
        if h.op == 0 {
            // Zeroed before posting: the device did not write this buffer.
            if inc(&self.stats.rx_unwritten) < 8 {
                pr_warn!("dropping rx buffer: device reports {} bytes used but wrote no header\n", used);
            }
            self.rx_recycle(b, pkt);
            return None;
        }
        if h.len > payload {
            if inc(&self.stats.rx_bad_hdr_len) < 8 {
                pr_warn!("dropping packet: header length {} but {} payload bytes written\n", h.len, payload);
            }
            self.rx_recycle(b, pkt);
            return None;
        }
        pkt.set_len(h.len);
        inc(&self.stats.rx_pkts);
        add(&self.stats.rx_bytes, u64::from(h.len));
        self.rx_size(b, size, cap, h.len);
        if cap <= 2 * RX_COPYBREAK || h.len > RX_COPYBREAK.max(cap / 8) {
            return Some(pkt);
        }
        // Small payload in a large buffer: hand the core an exact-size copy (bounded memory per
        // queued byte) and reuse the large buffer.
        let Ok(mut small) = Pkt::alloc(h.len, false) else { return Some(pkt) };
        small.set_hdr(&h);
        small.append(pkt.unread());
        pkt.set_len(0);
        self.rx_recycle(b, pkt);
        inc(&self.stats.rx_copied);
        Some(small)
    }

    /// Whether rx must pause because too many replies wait for tx ring space. Registers the
    /// stall so that the tx work restarts rx; handles the race with that restart.
    fn rx_must_stall(&self) -> bool {
        let limit = self.reply_limit.load(Ordering::Relaxed);
        if self.queued_replies.load(Ordering::SeqCst) < limit {
            return false;
        }
        self.rx_stalled.store(true, Ordering::SeqCst);
        if self.queued_replies.load(Ordering::SeqCst) >= limit {
            return true;
        }
        // The tx side drained meanwhile: continue, unless it already requeued us (it cleared
        // the flag), in which case the requeued run continues.
        !self.rx_stalled.swap(false, Ordering::SeqCst)
    }

    /// The rx work.
    ///
    /// The rx callback stays disabled while the batches taken are delivered, and is enabled
    /// again only once the ring has nothing more (as in-tree, whose rx work receives with the
    /// callback off): packets the device adds meanwhile are taken by the next batch of this
    /// run instead of each raising an interrupt and another run (issue 17: with the callback
    /// enabled before delivery, an rvsock guest took 2.6 interrupts per host-to-guest
    /// connection against in-tree's 0.75). Only this work touches the rx callback state.
    pub(crate) fn rx_work(&self) {
        for _ in 0..RX_ROUNDS {
            let mut batch = PktQueue::new();
            // The ring had nothing: Some(true) once the callback is on with nothing pending.
            let mut idle = None;
            {
                let mut g = self.rx.lock();
                let rx = &mut *g;
                if rx.vq.is_none() || self.rx_must_stall() {
                    return;
                }
                {
                    let Rx { vq, size, posted, bufs } = &mut *rx;
                    let Some(vq) = vq.as_mut() else { return };
                    vq.0.disable_cb();
                    let mut n = 0;
                    while n < RX_BATCH {
                        let Some((pkt, used)) = vq.get() else { break };
                        n += 1;
                        *posted = posted.saturating_sub(1);
                        if let Some(p) = self.rx_take(bufs, *size, pkt, used) {
                            batch.push_back(p);
                        }
                    }
                    // Nothing more: callback on, and done unless a buffer came in between.
                    if n == 0 {
                        idle = Some(vq.0.enable_cb());
                    }
                }
                // Refill once half the ring is used, as in-tree: each refill notifies the
                // device (a trap to the hypervisor), and an idle vhost asks for a notification
                // on every buffer added. Safe against a stall: every refill notifies, so the
                // device knows all posted buffers, and a starved device means `posted` is 0
                // once its used buffers are taken.
                if rx.posted * 2 < self.rx_target(rx) {
                    self.rx_fill(rx);
                }
            }
            match idle {
                Some(true) => return,
                Some(false) => continue,
                None => {}
            }
            // Tx completions first: the device finished these tx buffers before it produced
            // the packets below (a host reads our data, then answers), so a MSG_ZEROCOPY
            // sender sees its completion before, say, the peer's SHUTDOWN that followed it
            // (upstream vsock_test 18 polls for POLLERR and fails on a bare POLLHUP). The tx
            // interrupt may still be on its way. Only while such a packet is in flight: taking
            // buffers re-arms the tx interrupt (`tx_reclaim`).
            if !batch.is_empty() {
                self.reclaim_zerocopy();
            }
            // Events next: a TRANSPORT_RESET the device published before these packets is
            // complete before they reach the core (module doc, "event work").
            if !batch.is_empty() && self.ev_state.load(Ordering::SeqCst) != 0 {
                self.ev_work();
            }
            let t = self.transport.load(Ordering::Acquire);
            while let Some(p) = batch.pop_front() {
                if t.is_null() {
                    continue; // not reachable: rx runs only while registered
                }
                // Captured as it comes off the wire (in-tree: the same point).
                p.tap();
                // SAFETY: `t` is our registered transport; no lock is held; the core takes
                // ownership of the packet.
                unsafe { abi::rvsock_recv_pkt(t, p.into_raw()) };
            }
        }
        // Still busy: yield to other work and continue in a fresh run.
        self.kick_rx();
    }

    // ---- transmit ------------------------------------------------------------------------

    /// Takes back the packets the device has finished sending into `done`, to be freed once
    /// the tx lock is released (freeing a zerocopy packet releases the user pages and may
    /// complete the sendmsg's notification, which wakes the socket up).
    ///
    /// With the tx callback enabled, taking a buffer also asks the device for an interrupt on
    /// the next one it returns (the used-event index moves on): so only the tx work (which
    /// the interrupt runs), a full ring and a waiting MSG_ZEROCOPY sender reclaim, as in-tree
    /// reclaims in its tx work only. `send` reclaiming every time (and the rx work enabling its
    /// callback before delivering) cost an rvsock guest 2.6 interrupts per host-to-guest
    /// connection against in-tree's 0.73; with both changed, 0.60 (issue 17, docs/benchmarks.md).
    fn tx_reclaim(tx: &mut Tx, done: &mut PktQueue) {
        let Tx { vq, inflight, zc_inflight, .. } = tx;
        let Some(vq) = vq.as_mut() else { return };
        while let Some(p) = vq.get() {
            if p.notifies() {
                *zc_inflight = zc_inflight.saturating_sub(1);
            }
            done.push_back(p);
            *inflight = inflight.saturating_sub(1);
        }
    }

    /// Frees the packets the device has finished sending when a MSG_ZEROCOPY packet is among
    /// them (tx lock only; posting what is pending stays the tx work's, which the device's
    /// interrupt still runs).
    fn reclaim_zerocopy(&self) {
        let mut done = PktQueue::new();
        {
            let mut tx = self.tx.lock();
            if tx.zc_inflight > 0 {
                Self::tx_reclaim(&mut tx, &mut done);
            }
        }
        drop(done);
    }

    /// Posts pending packets while the ring has room and notifies the device, at once
    /// (`kick_now`) or by the tx work (`kick_owed`). Packets that can never be sent go to
    /// `done` (freed by the caller once the lock is released).
    fn tx_flush(&self, tx: &mut Tx, done: &mut PktQueue, kick_now: bool) {
        let mut added = false;
        let mut reclaimed = false;
        while let Some(p) = tx.pending.pop_front() {
            let reply = is_reply(&p.hdr());
            let len = p.len();
            let zc = !p.ext().is_null();
            let notifies = p.notifies();
            let Tx { vq, sg, .. } = &mut *tx;
            let Some(vq) = vq.as_mut() else {
                tx.pending.push_front(p);
                return;
            };
            // Captured once the ring took the packet (in-tree: the same point); the copy
            // is taken before, while the packet is ours (the lock order allows the tap lock
            // inside ours: the capture devices send nothing back to us).
            let copy = p.capture();
            let r = if zc { vq.post_ext(p, sg) } else { vq.post(p) };
            match r {
                Ok(()) => {
                    if let Some(c) = copy {
                        c.deliver();
                    }
                    added = true;
                    tx.inflight += 1;
                    if notifies {
                        tx.zc_inflight += 1;
                    }
                    inc(&self.stats.tx_pkts);
                    add(&self.stats.tx_bytes, u64::from(len));
                }
                // Ring full, or no memory to map the packet (a bounce buffer under swiotlb,
                // `VIRTIO_F_ACCESS_PLATFORM`, which our own packets in flight may hold): take
                // back what the device returned (once), else wait for the device to return
                // buffers. Dropping the packet would lose stream bytes already counted as
                // sent; in-tree puts a refused packet back whatever the error, too. One
                // refused with nothing in flight is tried again by the next `send` (no
                // interrupt is owed then); only a ring with nothing in flight and no room
                // can never take it: drop it below rather than block the queue.
                Err((e, p)) if tx.inflight > 0 || e != ENOSPC => {
                    tx.pending.push_front(p);
                    if reclaimed || tx.inflight == 0 {
                        break;
                    }
                    reclaimed = true;
                    Self::tx_reclaim(tx, done);
                    continue;
                }
                Err((e, p)) => {
                    // A packet the ring can never take.
                    if inc(&self.stats.tx_dropped) < 8 {
                        pr_warn!("dropping tx packet: {:?}\n", e);
                    }
                    done.push_back(p);
                }
            }
            if reply {
                tx.replies = tx.replies.saturating_sub(1);
            }
        }
        // Publish what was added. A device at work on the ring (it asked not to be notified)
        // finds it before it sleeps again: nothing is owed, and `send` wakes no tx work for it
        // (in-tree's fast path, too, notifies only a device that asked). A device that asked is
        // owed one notification for everything posted until it is given.
        if added {
            if let Some(vq) = tx.vq.as_mut() {
                tx.kick_owed |= vq.0.kick_prepare();
            }
        }
        if tx.kick_owed && kick_now {
            if let Some(vq) = tx.vq.as_mut() {
                vq.0.notify();
                tx.kick_owed = false;
            }
        }
        self.queued_replies.store(tx.replies, Ordering::SeqCst);
    }

    /// Drops the packets charged to socket `owner` that still wait for ring space
    /// (`cancel_pkt`); those on the ring are the device's.
    pub(crate) fn cancel(&self, owner: *mut core::ffi::c_void) {
        let gone = {
            let mut tx = self.tx.lock();
            let gone = tx.pending.extract(|p| p.owner() == owner);
            let mut replies = 0;
            gone.for_each(|p| {
                replies += u32::from(is_reply(&p.hdr()));
                true
            });
            tx.replies = tx.replies.saturating_sub(replies);
            self.queued_replies.store(tx.replies, Ordering::SeqCst);
            gone
        };
        // Freed unlocked: freeing uncharges the socket and may wake its writers.
        drop(gone);
    }

    /// Sends one packet (`send_pkt` callback): consumes it.
    pub(crate) fn send(&self, pkt: Pkt) -> Result {
        if pkt.ext().is_null() && pkt.len() > pkt.cap() {
            inc(&self.stats.tx_dropped);
            return Err(EINVAL);
        }
        let h = pkt.hdr();
        if h.dst_cid == u64::from(self.guest_cid.load(Ordering::Relaxed)) {
            // Our own CID is not reachable through the device (in-tree answers the same).
            return Err(ENODEV);
        }
        let mut done = PktQueue::new();
        let zerocopy = pkt.notifies();
        let mut g = self.tx.lock();
        let tx = &mut *g;
        if tx.vq.is_none() {
            return Err(ENODEV);
        }
        // A backlog: packets already wait for ring space, so the ring was full with packets
        // in flight when they were last tried (`tx_flush`), whose interrupt will post them.
        // Packets the ring refused with nothing in flight (no memory to map them) are owed
        // no interrupt: flush them now.
        let backlog = !tx.pending.is_empty() && tx.inflight > 0;
        tx.pending.push_back(pkt);
        if is_reply(&h) {
            tx.replies += 1;
        }
        // Kick batching: the packet goes on the ring now (no copy, no queueing when there is
        // room); a device that is at work on the ring needs no notification (`tx_flush`), one
        // that asked for it is notified by the tx work, once for every packet posted until it
        // runs. A notification is a trap to the hypervisor, far dearer than the work
        // hop: measured in the nested topology, kicking here for each packet halved the
        // SEQPACKET 64 B rate and cut the connect rate by a third, even when kicking only an
        // idle ring; request/response latency did not change. SHUTDOWN and RST are kicked at
        // once (with everything posted before them): they end shutdown(2)/close(2), and an
        // application may tell the peer so on another channel right after (upstream
        // vsock_test does, over TCP); the peer must already see the vsock side of it.
        // RESPONSE too: the peer's connect(2) waits for it, and the rx pass that sends it
        // wakes our accept(2)er next, which on a small guest runs before the tx work does
        // (measured: host-to-guest connect rate 480 -> 840 per second).
        // And a MSG_ZEROCOPY packet (pinned user pages): its sender waits for the completion,
        // which needs the device to finish the buffer; the tx work hop before the kick cost
        // an L2 guest ~1.9 ms per completion (g2h p50; 46 us in-tree), at once it is 43 us.
        // Such packets are large (up to 64 KiB), so one trap each is cheap.
        // Not REQUEST: its connect(2)er sleeps right after posting it, so the tx work runs at
        // once anyway. Notifying it here was measured (7.3 nested, connect rate, three runs of
        // 2-4 rounds each way, same hours): guest-to-host 1.28 / 1.19 / 1.47 against 1.09 /
        // 1.35 / 1.18 without, notifications per connection 1.98 either way: no gain to keep.
        let urgent = h.op == Op::Shutdown as u16 || h.op == Op::Rst as u16 || h.op == Op::Response as u16 || zerocopy;
        if backlog && !urgent {
            // Ours joins the backlog: the device returns the packets in flight with an
            // interrupt, whose tx work posts the backlog as one batch and notifies once
            // (in-tree does the same). Posting here into each slot as it frees, with the tx
            // work's notification following a few packets later, had the device woken for
            // every ~8 packets of a SEQPACKET 64 B flood (g2h, 7.3 nested: 7,987 guest
            // notifications for ~66,000 packets against in-tree's ~1,100; each a trap).
            inc(&self.stats.tx_queued);
            self.queued_replies.store(tx.replies, Ordering::SeqCst);
            return Ok(());
        }
        self.tx_flush(tx, &mut done, urgent);
        if !tx.pending.is_empty() {
            // Ours is the last pending packet: it waits for ring space.
            inc(&self.stats.tx_queued);
        }
        let owed = tx.kick_owed;
        drop(g);
        drop(done);
        if owed {
            self.kick_tx();
        }
        Ok(())
    }

    /// The tx work: reclaim finished buffers, post what is pending, restart a stalled rx.
    pub(crate) fn tx_work(&self) {
        let mut done = PktQueue::new();
        let replies = {
            let mut g = self.tx.lock();
            let tx = &mut *g;
            loop {
                let Some(vq) = tx.vq.as_mut() else { return };
                vq.0.disable_cb();
                Self::tx_reclaim(tx, &mut done);
                if tx.vq.as_mut().is_none_or(|vq| vq.0.enable_cb()) {
                    break;
                }
            }
            self.tx_flush(tx, &mut done, true);
            tx.replies
        };
        drop(done);
        if replies < self.reply_limit.load(Ordering::Relaxed) && self.rx_stalled.swap(false, Ordering::SeqCst) {
            self.kick_rx();
        }
    }
}
