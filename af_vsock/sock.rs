// SPDX-License-Identifier: GPL-2.0
//! The vsock socket: `VSock` extends `struct sock` with the connection state (`VState`,
//! under one spinlock); the pattern every socket call follows (take `st`, ask `Conn` for
//! `Actions`, mirror them into `struct sock`, drop `st`, carry out the rest: `apply` and
//! `run_after`); the tables' hash/unhash; socket options. The socket calls themselves live by
//! concern in `connect` (bind, listen, connect, accept), `io` (send, receive, poll, ioctls)
//! and `close` (shutdown, close, lingering, resets), and are re-exported here.
//!
//! Locks: `lock_sock` (the socket lock) serialises the system calls of one socket and is
//! dropped while they sleep; `VSock::st` (a spinlock) protects the connection state and is
//! what the receive path takes, so packets can be delivered in the sender's context. A
//! transport's `send_pkt` is never called with `st` held. `VSock::tx_order` (a spinlock) keeps
//! a socket's packets on a queueing transport in the order their credit fields were stamped.

use crate::abi::{RawTransport, TRANSPORT_F_SEQPACKET};
use crate::ffi;
use crate::net::{self, state, DelayedWork, Sk, SkRef, Work};
use crate::pkt::{Pkt, PktQueue};
use crate::proto::conn::{Actions, Conn, Ctl, State};
use crate::proto::hdr::{
    Addr, Hdr, SockType, DEFAULT_BUF_MAX_SIZE, DEFAULT_BUF_MIN_SIZE, DEFAULT_BUF_SIZE, VMADDR_CID_ANY,
    VMADDR_PORT_ANY,
};
use crate::stats::{self, Ctr};
use crate::table::{global, TransportPtr};
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::sync::SpinLock;

pub(crate) use crate::close::{release, release_child, reset, shutdown};
pub(crate) use crate::connect::{accept, bind, connect, getname, listen};
pub(crate) use crate::io::{ioctl_queue, poll_mask, recvmsg, sendmsg};

/// `struct socket` states (`SS_*`).
pub(crate) mod ss {
    /// Not connected.
    pub(crate) const UNCONNECTED: u8 = 1;
    /// Connect in progress.
    pub(crate) const CONNECTING: u8 = 2;
    /// Connected.
    pub(crate) const CONNECTED: u8 = 3;
    /// Shutdown called.
    pub(crate) const DISCONNECTING: u8 = 4;
}

/// `VMADDR_FLAG_TO_HOST`.
pub(crate) const FLAG_TO_HOST: u8 = 1;

/// A transport a socket uses, with a reference on its module.
pub(crate) struct TransportRef(TransportPtr);

impl TransportRef {
    /// Pins `t`'s module; `None` if it is going away.
    pub(crate) fn get(t: TransportPtr) -> Option<Self> {
        // SAFETY: `t` is registered, so `owner` is valid: either the caller holds the global
        // lock (connect's `assign_transport`), or `t` is the transport that is delivering the
        // packet being handled (the receive path), and a transport only delivers between its
        // register and unregister calls.
        let ok = unsafe { ffi::rvsock_try_module_get(t.get().owner) };
        ok.then_some(TransportRef(t))
    }

    /// The transport.
    pub(crate) fn ptr(&self) -> TransportPtr {
        self.0
    }

    /// Our CID on this transport.
    pub(crate) fn local_cid(&self) -> u32 {
        self.0.local_cid()
    }

    /// Whether SEQPACKET may be used towards `cid` from namespace `ns`.
    pub(crate) fn seqpacket_allow(&self, cid: u32, ns: u64) -> bool {
        let t = self.0.get();
        match t.seqpacket_allow {
            // SAFETY: the transport's own callback, its descriptor pinned by our module ref.
            Some(f) => unsafe { f(self.0 .0, cid, ns) },
            None => t.features & TRANSPORT_F_SEQPACKET != 0,
        }
    }

}

/// Sends a packet of namespace `ns` on a transport (consumed).
pub(crate) fn send_on(t: TransportPtr, mut p: Pkt, ns: u64) -> Result {
    p.set_ns(ns);
    let h = p.hdr();
    let len = u64::from(h.len);
    crate::trace::alloc_pkt(&h, crate::zerocopy::user_pages(p.ext()));
    // SAFETY: `t` is registered or pinned by the caller; `send_pkt` takes ownership of `p`.
    let r = unsafe { (t.get().send_pkt)(t.0, p.into_raw()) };
    if r < 0 {
        stats::inc(t, Ctr::TxErrors);
        return Err(Error::from_errno(r));
    }
    stats::inc(t, Ctr::TxPackets);
    stats::add(t, Ctr::TxBytes, len);
    Ok(())
}

impl Drop for TransportRef {
    fn drop(&mut self) {
        // SAFETY: pairs with the try_module_get in `get`.
        unsafe { ffi::rvsock_module_put(self.0.get().owner) };
    }
}

/// Connection state of a socket, under `VSock::st`.
pub(crate) struct VState {
    /// Protocol state machine and credit.
    pub(crate) conn: Conn,
    /// Local address (`VMADDR_PORT_ANY` port: unbound).
    pub(crate) local: Addr,
    /// Remote address.
    pub(crate) remote: Addr,
    /// Remote address flags (`VMADDR_FLAG_TO_HOST`).
    pub(crate) remote_flags: u8,
    /// `struct socket` state (`SS_*`).
    pub(crate) ss: u8,
    /// Transport in use.
    pub(crate) transport: Option<TransportRef>,
    /// Received packets not yet read.
    pub(crate) rxq: PktQueue,
    /// Memory of the receive queue a reader took out to copy from without this lock (peek,
    /// SEQPACKET; `io::take_rxq`): still charged to the queue's budget until it is back.
    pub(crate) rx_lent: u32,
    /// Listener: established children waiting for accept().
    pub(crate) accept_q: KVec<SkRef>,
    /// Whether the socket is in the bound table.
    pub(crate) bound: bool,
    /// Whether the socket is in the unbound list (created, never bound).
    pub(crate) unbound: bool,
    /// Whether the socket is in the connected table (key: remote, local).
    pub(crate) connected_key: Option<(Addr, Addr)>,
    /// SO_VM_SOCKETS_BUFFER_SIZE / _MIN / _MAX.
    pub(crate) buffer_size: u64,
    /// Minimum buffer size.
    pub(crate) buffer_min: u64,
    /// Maximum buffer size.
    pub(crate) buffer_max: u64,
    /// Connect timeout in jiffies.
    pub(crate) connect_timeout: i64,
    /// The delayed close is armed (the timer holds a socket reference).
    pub(crate) close_armed: bool,
    /// The connect timeout is armed (the timer holds a socket reference).
    pub(crate) connect_armed: bool,
    /// A reader is in recvmsg (set on entry, cleared on exit; with two readers at once the
    /// first to leave clears it): a sync send's pinned pages delivered now will be read at
    /// once (`rx::recv_pkt`, `zerocopy::SyncPin`).
    pub(crate) reading: bool,
    /// A credit update that `read_sock` could not send in its (possibly atomic) context;
    /// `credit_work` sends it.
    pub(crate) credit_due: Option<Ctl>,
    /// The peer of a closed socket whose port this one took over while it still waited for
    /// that peer's RST (`close::reclaim_lingering`): that RST may still be on its way, and
    /// to the same local port it would reset our own connect() to the same peer.
    pub(crate) stale_rst: Option<Addr>,
}

/// What a child socket inherits from its listener (read under the listener's state lock,
/// so that the child can be allocated after it is dropped, with GFP_KERNEL).
pub(crate) struct Inherit {
    buffer_size: u64,
    buffer_min: u64,
    buffer_max: u64,
    connect_timeout: i64,
}

impl VState {
    /// The settings a child of this listener inherits.
    pub(crate) fn inherit(&self) -> Inherit {
        Inherit {
            buffer_size: self.buffer_size,
            buffer_min: self.buffer_min,
            buffer_max: self.buffer_max,
            connect_timeout: self.connect_timeout,
        }
    }
}

/// Our socket: `struct sock` first, so a `struct sock *` of our proto is a `VSock *`.
///
/// # Invariants
/// Allocated by `sk_alloc` with `obj_size == size_of::<VSock>()` and initialised by
/// [`VSock::init`] before first use; the Rust fields are dropped by `destruct`.
#[repr(C)]
pub(crate) struct VSock {
    /// Never read or written through the Rust field: C changes it behind `&VSock`.
    sk: kernel::types::Opaque<ffi::sock>,
    /// Connection state.
    pub(crate) st: SpinLock<VState>,
    /// Held from stamping a packet's credit fields (`Conn::stamp`, under `st`) until a
    /// queueing transport has it in its FIFO (`send_pkt` returned), so the peer sees our
    /// `fwd_cnt` only grow. Without it the receive path's answer to a CREDIT_REQUEST (one
    /// CPU) and the reader's CREDIT_UPDATE (another) could overtake each other: the peer then
    /// sees `fwd_cnt` go back, and peers that compute their credit as `buf_alloc - (tx_cnt -
    /// fwd_cnt)` in wrapping u32 arithmetic (vhost-device-vsock 0.3; in-tree clamps) get a huge
    /// credit and overrun our buffer (we reset with ENOBUFS). In-tree gets this order from
    /// `lock_sock`, which its receive path takes. Not taken for a transport that delivers in
    /// place (loopback: its peer is rvsock, which ignores a packet whose `fwd_cnt` goes back,
    /// its `buf_alloc` too, and the delivery may answer on the same socket). Order:
    /// `tx_order` → `st`; `tx_order` → the transport's locks. Process context only. A
    /// spinlock: nothing in the hold sleeps (the transports' `send_pkt` only queue, under
    /// spinlocks of their own; a tap copies with GFP_ATOMIC), and 4 bytes against a mutex's
    /// 24 keep `VSock` at 1,208 bytes, in-tree's object size step (1,216 with the cache's
    /// 64-byte alignment; one step more cost every idle connection 64 bytes).
    pub(crate) tx_order: SpinLock<()>,
    /// Payload bytes of our packets that a queueing transport still holds (charged by
    /// `charge_tx`, not yet freed: waiting for ring space or guest buffers, or on the ring):
    /// SIOCOUTQ counts them and SO_LINGER waits for them, as in-tree's `bytes_unsent` (which
    /// falls only when the device or vhost has taken the packet). Changed by the packet free,
    /// in any context: an atomic. (Placed beside `tx_order` to fill its padding.)
    pub(crate) tx_queued: AtomicU32,
    pub(crate) close_work: DelayedWork,
    pub(crate) connect_work: DelayedWork,
    /// Sends `VState::credit_due` from process context (queued with a socket reference).
    pub(crate) credit_work: Work,
    /// The socket's namespace tag (`netns`): fixed at creation, so read without `st` (the
    /// table lookups read it under the table lock alone).
    pub(crate) ns: u64,
}

/// The `VSock` of a socket of our proto.
pub(crate) fn vsk(sk: Sk) -> &'static VSock {
    // SAFETY: every `Sk` is a socket of our proto (type invariant of `Sk`), whose memory is a
    // `VSock` (type invariant of `VSock`). The reference is only used while the caller keeps
    // the socket alive; the 'static lifetime is a simplification of that rule.
    unsafe { &*(sk.as_ptr() as *const VSock) }
}

pub(crate) fn sock_type(sk: Sk) -> SockType {
    if sk.ty() == net::SOCK_SEQPACKET { SockType::Seqpacket } else { SockType::Stream }
}

impl VSock {
    /// Initialises the Rust part of a freshly allocated socket (`parent`: the settings of the
    /// listener a child inherits).
    ///
    /// # Safety
    /// `sk` was just returned by `sk_alloc` for our proto and is not yet visible to others.
    pub(crate) unsafe fn init(sk: Sk, parent: Option<&Inherit>) -> Result {
        let p = sk.as_ptr() as *mut VSock;
        let (bs, bmin, bmax, cto) = match parent {
            Some(ps) => (ps.buffer_size, ps.buffer_min, ps.buffer_max, ps.connect_timeout),
            None => (
                DEFAULT_BUF_SIZE as u64,
                DEFAULT_BUF_MIN_SIZE as u64,
                DEFAULT_BUF_MAX_SIZE as u64,
                2 * net::msecs_to_jiffies(1000) as i64,
            ),
        };
        let ns = crate::netns::tag_of_sk(sk);
        let st = VState {
            conn: Conn::new(sock_type(sk), bs),
            local: Addr { cid: VMADDR_CID_ANY, port: VMADDR_PORT_ANY },
            remote: Addr { cid: VMADDR_CID_ANY, port: VMADDR_PORT_ANY },
            remote_flags: 0,
            ss: ss::UNCONNECTED,
            transport: None,
            rxq: PktQueue::new(),
            rx_lent: 0,
            accept_q: KVec::new(),
            bound: false,
            unbound: false,
            connected_key: None,
            buffer_size: bs,
            buffer_min: bmin,
            buffer_max: bmax,
            connect_timeout: cto,
            close_armed: false,
            connect_armed: false,
            reading: false,
            credit_due: None,
            stale_rst: None,
        };
        let init = kernel::new_spinlock!(st, "rvsock_sock");
        // SAFETY: `p` is our freshly allocated, exclusively owned socket; the fields are
        // uninitialised (zeroed) memory that we initialise in place exactly once.
        unsafe {
            ffi::pin_init_at(init, core::ptr::addr_of_mut!((*p).st)).map_err(|_| ENOMEM)?;
            let order = kernel::new_spinlock!((), "rvsock_tx_order");
            ffi::pin_init_at(order, core::ptr::addr_of_mut!((*p).tx_order)).map_err(|_| ENOMEM)?;
            core::ptr::addr_of_mut!((*p).ns).write(ns);
            core::ptr::addr_of_mut!((*p).tx_queued).write(AtomicU32::new(0));
            DelayedWork::init(core::ptr::addr_of_mut!((*p).close_work), crate::close::close_work_fn);
            DelayedWork::init(core::ptr::addr_of_mut!((*p).connect_work), crate::connect::connect_work_fn);
            Work::init(core::ptr::addr_of_mut!((*p).credit_work), credit_work_fn);
        }
        Ok(())
    }

    /// Drops the Rust part (from `sk_destruct`, last reference gone).
    ///
    /// # Safety
    /// Called once, when no other reference to the socket exists.
    pub(crate) unsafe fn destruct(sk: Sk) {
        let p = sk.as_ptr() as *mut VSock;
        // SAFETY: per the contract nobody else uses the socket; `st` and `tx_order` were
        // initialised by `init`.
        unsafe {
            core::ptr::drop_in_place(core::ptr::addr_of_mut!((*p).st));
            core::ptr::drop_in_place(core::ptr::addr_of_mut!((*p).tx_order));
        }
    }


    /// Whether the socket uses transport `t`.
    pub(crate) fn uses_transport(&self, t: *const RawTransport) -> bool {
        self.st.lock().transport.as_ref().map(|r| r.ptr().0) == Some(t)
    }
}

/// A packet to send after the state lock is dropped.
pub(crate) struct Out {
    t: TransportPtr,
    pub(crate) h: Hdr,
    /// Carries this socket's credit fields (everything but an RST answering a packet).
    stamped: bool,
}

/// Whether `t` hands packets to a queue (virtio, vhost) rather than delivering them in the
/// sender's context (loopback): only then does `VSock::tx_order` apply.
pub(crate) fn queueing(t: TransportPtr) -> bool {
    t.get().kind != crate::abi::TRANSPORT_LOCAL
}

impl Out {
    /// Sends it on behalf of `sk` (the socket it was made for, kept alive by the caller). On
    /// a queueing transport the credit fields are stamped again under `sk`'s `tx_order`, so
    /// they reach the peer in order. An allocation failure drops the control packet (as
    /// in-tree does on OOM) and counts as sent; a transport error (e.g. -ENODEV: no device
    /// for the CID) is returned, and only `connect` acts on it.
    pub(crate) fn send(mut self, sk: Sk) -> Result {
        let Ok(mut p) = Pkt::alloc(0, false) else {
            stats::inc(self.t, Ctr::AllocFail);
            return Ok(());
        };
        let v = vsk(sk);
        if !(self.stamped && queueing(self.t)) {
            p.set_hdr(&self.h);
            return send_on(self.t, p, v.ns);
        }
        if self.h.op == crate::proto::hdr::Op::Request as u16 {
            // Charged like data (in-tree charges every packet, `skb_set_owner_w`): freeing it
            // once the transport has sent it wakes the connect()er, which finds itself still
            // connecting and sleeps again. That wake is what keeps the host's client from
            // being preempted at its close(2) by the vhost worker its SHUTDOWN wakes: measured
            // (7.3 nested, h2g connect_rate, KVMTRACE=h2g) the rvsock client was preempted
            // 0.73 times per connection without it (in-tree 0.17), 0.18-0.20 with it, and the
            // worker then sends the SHUTDOWN and the next REQUEST in one pass. Likely the
            // scheduler (EEVDF) placing the briefly woken task afresh; both kernel lines.
            charge_tx(sk, &mut p);
        }
        let _order = v.tx_order.lock();
        {
            let mut s = v.st.lock();
            // Still the transport the packet was made for: its credit state is ours to stamp.
            if s.transport.as_ref().map(|r| r.ptr().0) == Some(self.t.0) {
                s.conn.stamp(&mut self.h);
            }
        }
        p.set_hdr(&self.h);
        send_on(self.t, p, v.ns)
    }
}

/// Below this many bytes of a socket's packets left in its transport, a freed packet wakes the
/// writers (and when none is left at all): with a 64 KiB packet or two still queued the
/// transport stays busy while a woken writer fills it again.
const TX_WAKE_AT: u32 = 64 * 1024;

/// Charges a data packet (or a REQUEST, `Out::send`) to `sk` while a queueing transport holds it:
/// `alloc_size(cap)` bytes of the socket's `sk_wmem_alloc` (which also keeps the socket's memory
/// until the transport frees the packet, as `skb_set_owner_w` does), released by `rvsock_pkt_free`
/// through [`uncharge_tx`]. Writers wait while the charge is at the credit window ([`tx_mem_ok`]):
/// credit bounds the payload bytes in flight, this bounds the memory of the packets carrying them,
/// which a flood of one-byte writes towards a peer that reads slowly (or a guest that does not
/// take its receive buffers) would otherwise make ~128 times the credit (a one-byte write is a
/// 128-byte packet), all of it waiting in the transport.
pub(crate) fn charge_tx(sk: Sk, p: &mut Pkt) {
    let cost = crate::pkt::alloc_size(p.cap());
    // Released with the charge, by the same packet's length (transports consume a packet by
    // its offset and never change its length).
    vsk(sk).tx_queued.fetch_add(p.len(), Ordering::Relaxed);
    // SAFETY: live socket (the caller holds a reference); the charge is released exactly once,
    // by `rvsock_pkt_free` of this packet.
    unsafe { ffi::rvsock_wmem_charge(sk.as_ptr(), cost) };
    p.set_owner(sk.as_ptr().cast());
}

/// SIOCOUTQ: payload bytes a send has not handed to the transport yet, and those a queueing
/// transport still holds (`VSock::tx_queued`); SO_LINGER waits for 0.
pub(crate) fn outq(sk: Sk, s: &VState) -> u32 {
    s.conn.tx().unsent().saturating_add(vsk(sk).tx_queued.load(Ordering::Relaxed))
}

/// Whether `sk`'s packets in its transport leave room for another under `window` bytes.
pub(crate) fn tx_mem_ok(sk: Sk, window: u32) -> bool {
    // SAFETY: live socket; a plain read of its write-memory counter.
    unsafe { ffi::rvsock_wmem_get(sk.as_ptr()) < window.max(1) }
}

/// Releases the charge of a freed packet (`rvsock_pkt_free`) and wakes the writers when the
/// socket's charge fell to `TX_WAKE_AT` or to nothing.
///
/// # Safety
/// `sk` was charged `cost` bytes by [`charge_tx`] for that packet (of `len` payload bytes),
/// not yet released: those units of `sk_wmem_alloc` keep its memory valid (`sk_free` frees a
/// socket only when `sk_wmem_alloc` reaches zero).
pub(crate) unsafe fn uncharge_tx(sk: *mut ffi::sock, cost: u32, len: u32) {
    // SAFETY: live (our units of `sk_wmem_alloc`), and a socket of our proto (only
    // `charge_tx` sets a packet's owner).
    let v = vsk(unsafe { Sk::from_raw(sk) });
    v.tx_queued.fetch_sub(len, Ordering::Relaxed);
    let cost = cost.max(1);
    // Keep one unit across the wake-up, so the socket outlives it (as `sock_wfree`).
    // SAFETY: per the contract we hold `cost` units; `cost - 1` leaves ours.
    let left = unsafe { ffi::rvsock_wmem_sub_return(sk, cost - 1) };
    // What stays charged without our unit and the socket's own (`sk_alloc`'s; gone once
    // the socket is released, when nobody waits to write anyway).
    let after = (left as u32).saturating_sub(2);
    let before = after.saturating_add(cost);
    if after == 0 || (before > TX_WAKE_AT && after <= TX_WAKE_AT) {
        // SAFETY: our unit keeps `sk` valid; the callback handles an orphaned socket.
        unsafe { ffi::rvsock_write_space(sk) };
    }
    // SAFETY: drops our last unit; frees the socket if the owner's reference went first.
    unsafe { ffi::sk_free(sk) };
}

/// Has `credit_work` send `VState::credit_due` (callable in atomic context). The queued work
/// holds a socket reference; one already queued sends the latest credit state anyway.
pub(crate) fn schedule_credit_update(sk: Sk) {
    // Taken before queueing: the work may run (and drop it) at once.
    let r = sk.hold();
    if vsk(sk).credit_work.schedule() {
        // The reference travels into the work item, dropped by `credit_work_fn`.
        let _ = r.into_raw();
    }
    // Else `r` drops here: not the last reference (the caller holds one).
}

unsafe extern "C" fn credit_work_fn(w: *mut ffi::work_struct) {
    // SAFETY: `w` is the work item of `VSock::credit_work`, embedded in a live VSock whose
    // reference the work holds (taken in `schedule_credit_update`).
    let sk = unsafe {
        let cw = Work::from_work(w);
        let p = (cw as *mut u8).sub(core::mem::offset_of!(VSock, credit_work)) as *mut ffi::sock;
        SkRef::from_raw(p)
    };
    let out = {
        let mut s = vsk(sk.sk()).st.lock();
        let c = s.credit_due.take();
        if s.conn.state() == State::Established { c.and_then(|c| s.ctl(c, None)) } else { None }
    };
    if let Some(o) = out {
        let _ = o.send(sk.sk());
    }
}

/// Source address of our packets: the transport's own CID (never the bound one: a socket
/// bound to CID 2 that talks over loopback must not appear as the host to its peer; in-tree
/// stamps the transport's CID too) and our port.
pub(crate) fn src_addr(s: &VState, t: &TransportRef) -> Addr {
    Addr { cid: t.local_cid(), port: s.local.port }
}

impl VState {
    /// A stamped control packet to our peer, if we have a transport.
    pub(crate) fn ctl(&mut self, c: Ctl, reply_to: Option<&Hdr>) -> Option<Out> {
        let t = self.transport.as_ref()?;
        let tp = t.ptr();
        let (h, stamped) = match (c, reply_to) {
            (Ctl::RstReply, Some(h)) => (crate::proto::hdr::rst_reply(h)?, false),
            _ => {
                let src = src_addr(self, t);
                (self.conn.packet(c, src, self.remote), true)
            }
        };
        Some(Out { t: tp, h, stamped })
    }

    /// Whether the socket's transport delivers payloads in place (loopback): only then can
    /// its queue hold a sync send's pinned pages (`zerocopy::hurry` has work to do).
    pub(crate) fn in_place(&self) -> bool {
        self.transport.as_ref().is_some_and(|t| !queueing(t.ptr()))
    }

    pub(crate) fn readable_bytes(&self) -> u32 {
        match self.conn.ty() {
            SockType::Stream => self.conn.has_data(),
            SockType::Seqpacket => self.conn.seq_has_data(),
        }
    }
}

/// Applies the sk-level effects of `Actions` (state mirror, errors, flags); returns what
/// must happen after the lock is dropped.
pub(crate) struct After {
    /// Packet to send.
    pub(crate) out: Option<Out>,
    /// Wake readers.
    pub(crate) readers: bool,
    /// Wake writers.
    pub(crate) writers: bool,
    /// State changed.
    pub(crate) state: bool,
    /// Error to report.
    pub(crate) error: bool,
    /// Remove from the tables.
    pub(crate) unhash: bool,
    /// Complete a delayed close.
    pub(crate) finish_close: bool,
}

impl After {
    /// Nothing to do.
    pub(crate) const NONE: After = After {
        out: None,
        readers: false,
        writers: false,
        state: false,
        error: false,
        unhash: false,
        finish_close: false,
    };
}

/// Mirrors `Conn`'s state into `struct sock` (state, shutdown, SOCK_DONE).
pub(crate) fn mirror(sk: Sk, s: &VState) {
    let st = match s.conn.state() {
        State::Closed => state::CLOSE,
        State::Listen => state::LISTEN,
        State::Connecting => state::SYN_SENT,
        State::Established => state::ESTABLISHED,
        State::Closing => state::CLOSING,
    };
    let old = sk.state();
    if old != st {
        crate::trace::sk_state(sk, s, old, st, s.conn.local_shutdown() as u8);
    }
    sk.set_state(st);
    sk.set_shutdown(s.conn.local_shutdown());
    // A transport reset is no end of file (`SOCK_DONE` makes recv return 0). The flag is for
    // whoever inspects the socket; rvsock itself reads `Conn` (recvmsg).
    if s.conn.is_done() && !s.conn.is_reset() {
        sk.set_flag(net::SOCK_DONE);
    }
}

/// Turns `Actions` into sk effects under the state lock; returns the deferred part.
pub(crate) fn apply(sk: Sk, s: &mut VState, a: &Actions, reply_to: Option<&Hdr>) -> After {
    mirror(sk, s);
    if a.connected {
        s.ss = ss::CONNECTED;
    }
    if let Some(e) = a.error {
        sk.set_err(e.errno());
    }
    let out = a.send.and_then(|c| s.ctl(c, reply_to));
    if a.finish_close {
        s.close_armed = false;
    }
    After {
        out,
        readers: a.wake_readers,
        writers: a.wake_writers,
        state: a.state_change || a.connected || a.done,
        error: a.error.is_some(),
        unhash: a.unhash || a.finish_close,
        finish_close: a.finish_close,
    }
}

/// Runs the deferred part of `apply` with no lock held.
pub(crate) fn run_after(sk: Sk, a: After) {
    if a.finish_close {
        // The close timer may still be pending: cancelling it hands us its reference.
        if vsk(sk).close_work.cancel() {
            // SAFETY: the timer's reference was leaked into it in `release`.
            drop(unsafe { SkRef::from_raw(sk.as_ptr()) });
        }
        purge_rx(sk);
    }
    if a.unhash {
        unhash(sk);
    }
    if let Some(o) = a.out {
        let _ = o.send(sk);
    }
    if a.error {
        sk.error_report();
    }
    if a.state {
        sk.state_change();
    }
    if a.readers {
        sk.data_ready();
    }
    if a.writers {
        sk.write_space();
    }
}

/// Removes the socket from the connected table, and from the bound table once it is closed
/// (`SOCK_DEAD`): while user space holds the socket, its port stays bound, whatever happened
/// to the connection (peer shutdown, reset, credit overrun), so nobody else can bind it and a
/// connect() retried on the same socket keeps a hashed port (upstream "keep the binding until
/// socket destruction", CVE-2025-21756 class).
pub(crate) fn unhash(sk: Sk) {
    let mut drops: [Option<SkRef>; 3] = [None, None, None];
    let dead = sk.flag(net::SOCK_DEAD);
    {
        let mut g = global().lock();
        let mut s = vsk(sk).st.lock();
        if s.bound && dead {
            s.bound = false;
            drops[0] = g.remove_bound(sk, s.local.port);
        }
        if s.unbound && dead {
            s.unbound = false;
            drops[2] = g.remove_unbound(sk);
        }
        if let Some((r, l)) = s.connected_key.take() {
            drops[1] = g.remove_connected(sk, r, l);
        }
    }
    drop(drops);
}

pub(crate) fn purge_rx(sk: Sk) {
    let q = core::mem::replace(&mut vsk(sk).st.lock().rxq, PktQueue::new());
    drop(q);
}

/// Lists a new socket for sock_diag until it is bound or closed. Without memory for the
/// entry the socket works all the same; `ss` just does not see it before its bind.
pub(crate) fn list_unbound(sk: Sk) {
    let mut g = global().lock();
    let mut s = vsk(sk).st.lock();
    s.unbound = g.insert_unbound(sk).is_ok();
}

/// Inserts the socket in the connected table under (remote, local).
pub(crate) fn hash_connected(sk: Sk) -> Result {
    let mut g = global().lock();
    let mut s = vsk(sk).st.lock();
    if s.connected_key.is_some() {
        return Ok(());
    }
    let key = (s.remote, s.local);
    g.insert_connected(key.0, key.1, sk)?;
    s.connected_key = Some(key);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Socket options.

/// SO_VM_SOCKETS_BUFFER_* updates (in-tree `vsock_update_buffer_size`).
pub(crate) fn set_buffer(sk: Sk, which: u32, val: u64) {
    let _g = sk.lock();
    let after = {
        let mut s = vsk(sk).st.lock();
        let mut size = s.buffer_size;
        match which {
            ffi::SO_VM_SOCKETS_BUFFER_SIZE => size = val,
            ffi::SO_VM_SOCKETS_BUFFER_MAX_SIZE => s.buffer_max = val,
            _ => s.buffer_min = val,
        }
        // The minimum first, then the maximum: the maximum wins (in-tree's order).
        if size < s.buffer_min {
            size = s.buffer_min;
        }
        if size > s.buffer_max {
            size = s.buffer_max;
        }
        // The transport's limit applies once there is one (in-tree `notify_buffer_size`).
        if size != s.buffer_size && s.transport.is_some() {
            size = size.min(crate::proto::hdr::MAX_BUF_SIZE as u64);
        }
        s.buffer_size = size;
        let a = s.conn.set_buf_alloc(size);
        apply(sk, &mut s, &a, None)
    };
    run_after(sk, after);
}

/// Reads a u64 buffer option.
pub(crate) fn get_buffer(sk: Sk, which: u32) -> u64 {
    let s = vsk(sk).st.lock();
    match which {
        ffi::SO_VM_SOCKETS_BUFFER_SIZE => s.buffer_size,
        ffi::SO_VM_SOCKETS_BUFFER_MAX_SIZE => s.buffer_max,
        _ => s.buffer_min,
    }
}

/// Sets the connect timeout (jiffies).
pub(crate) fn set_connect_timeout(sk: Sk, j: i64) {
    vsk(sk).st.lock().connect_timeout = j;
}

/// The connect timeout (jiffies).
pub(crate) fn connect_timeout(sk: Sk) -> i64 {
    vsk(sk).st.lock().connect_timeout
}

/// SO_RCVLOWAT: EINVAL above the buffer size (in-tree; the credit policy's liveness relies
/// on it); otherwise the peer may need a credit update to fill the new watermark. SEQPACKET:
/// stored as the socket layer stores it for a family without the callback (in-tree's
/// SEQPACKET ops have none): no bound, no credit effect. Its reads ignore it, and so does
/// rvsock's SEQPACKET poll (readable with a whole message queued), a deliberate difference:
/// in-tree's poll waits for rcvlowat queued bytes, message boundaries aside.
pub(crate) fn set_rcvlowat(sk: Sk, lowat: i32) -> Result {
    if sock_type(sk) == SockType::Seqpacket {
        sk.set_rcvlowat(if lowat != 0 { lowat } else { 1 });
        return Ok(());
    }
    let out = {
        let mut s = vsk(sk).st.lock();
        if i64::from(lowat) > s.buffer_size as i64 {
            return Err(EINVAL);
        }
        sk.set_rcvlowat(if lowat != 0 { lowat } else { 1 });
        let c = s.conn.set_rcvlowat(lowat.max(0) as u32);
        c.and_then(|c| s.ctl(c, None))
    };
    if let Some(o) = out {
        let _ = o.send(sk);
    }
    Ok(())
}

