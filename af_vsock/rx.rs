// SPDX-License-Identifier: GPL-2.0
//! Receive path: a packet handed over by a transport is validated, matched to a socket and
//! run through that socket's [`Conn`] state machine, all under the socket's state spinlock
//! only, so a transport may deliver in the sender's own context (loopback).

use crate::family;
use crate::pkt::{Pkt, PktQueue};
use crate::proto::conn::State;
use crate::proto::hdr::{
    rst_reply, validate, Addr, Hdr, Op, SockType, ValidateCtx, MAX_PKT_BUF_SIZE, SEQ_EOM, VMADDR_CID_HOST,
};
use crate::sock::{self, apply, run_after, send_on, vsk, After, TransportRef};
use crate::stats::{self, Ctr};
use crate::table::{global, TransportPtr};
use crate::transport::MERGE_CAP;
use kernel::prelude::*;

/// Answers `h` with an RST from no socket (in-tree `virtio_transport_reset_no_sock`),
/// counting why (`why`) on `t`.
fn reset_no_sock(t: TransportPtr, h: &Hdr, why: Ctr, ns: u64) {
    stats::inc(t, why);
    if let Some(r) = rst_reply(h) {
        match Pkt::alloc(0, false) {
            Ok(mut p) => {
                p.set_hdr(&r);
                let _ = send_on(t, p, ns);
            }
            Err(_) => stats::inc(t, Ctr::AllocFail),
        }
    }
}

/// recvmsg's exit hurries the first this many packets it leaves queued; every sync send's
/// pinned payload further back was hurried before (its reader lags): on arrival at position
/// `HURRY_DEPTH - 1` or later (one below the bound: a reader copying a packet holds it out of
/// the queue and puts it back in front, `io::stream_dequeue`), and when a reader puts the
/// packets it took out back in front of those that arrived meanwhile (`io::restore`).
/// Positions only move forward otherwise.
pub(crate) const HURRY_DEPTH: u32 = 8;

/// Whether a pinned payload queued at `pos` is hurried: it is out of recvmsg's reach.
pub(crate) fn hurry_at(pos: u32) -> bool {
    pos + 1 >= HURRY_DEPTH
}

/// Entry point for every received packet (consumed).
pub(crate) fn recv_pkt(t: TransportPtr, mut pkt: Pkt) {
    let h = pkt.hdr();
    let ns = pkt.ns();
    let seqpacket = t.get().features & crate::abi::TRANSPORT_F_SEQPACKET != 0;
    let ctx = ValidateCtx { max_len: MAX_PKT_BUF_SIZE.min(pkt.len()), seqpacket, src_cid: None, dst_cid: None };
    stats::inc(t, Ctr::RxPackets);
    crate::trace::recv_pkt(&h);
    let v = match validate(&h, &ctx) {
        Ok(v) => v,
        Err(e) => {
            if e.wants_rst() {
                reset_no_sock(t, &h, Ctr::BadHeader, ns);
            } else {
                stats::inc(t, Ctr::BadHeader);
            }
            return;
        }
    };
    stats::add(t, Ctr::RxBytes, u64::from(v.len));
    // The payload is exactly what the header says (the transport gave us at least that).
    pkt.set_len(v.len);
    let src = v.src;
    let dst = v.dst;
    let sk = {
        let g = global().lock();
        match g.find_connected(src, dst, ns).or_else(|| g.find_bound(dst, ns)) {
            Some(s) => s.clone(),
            None => {
                drop(g);
                reset_no_sock(t, &h, Ctr::NoSocket, ns);
                return;
            }
        }
    };
    let s_ = sk.sk();
    let mut s = vsk(s_).st.lock();
    let listening = s.conn.state() == State::Listen;
    let same_transport = s.transport.as_ref().map(|r| r.ptr().0) == Some(t.0);
    // In-tree `vsock_check_source`: a connection takes packets only from its peer (client
    // sockets are found through the bound table, by local port alone). Loopback packets
    // always carry the local CID as source, also for a connection to a CID alias.
    let from_peer = src.port == s.remote.port
        && (src.cid == s.remote.cid || t.local_cid() == crate::proto::hdr::VMADDR_CID_LOCAL);
    if s.conn.is_done() || (!listening && (!same_transport || !from_peer)) {
        drop(s);
        reset_no_sock(t, &h, Ctr::WrongPeer, ns);
        return;
    }
    // The RST a closed socket waited for, arriving after this socket took over its port
    // (`close::reclaim_lingering`): it ends that old connection, not our connect(). The peer
    // sent it before it could see our REQUEST, so it comes before the answer to it; once we
    // hear anything else from the peer, it is no longer expected.
    if s.stale_rst.is_some() {
        if s.stale_rst == Some(src) && v.op == Op::Rst && s.conn.state() == State::Connecting {
            s.stale_rst = None;
            drop(s);
            stats::inc(t, Ctr::WrongPeer);
            return;
        }
        s.stale_rst = None;
    }
    // A payload for an established connection: decide how it joins the receive queue and
    // check the queue's memory budget before the state machine accounts it.
    let seq = v.ty == SockType::Seqpacket;
    let mut append = false;
    if v.op == Op::Rw && (v.len > 0 || v.flags & SEQ_EOM != 0) && s.conn.state() == State::Established {
        append = tail_takes(&mut s.rxq, &pkt, seq);
        if !append {
            if let Some(c) = compact(&pkt, seq, s.rxq.is_empty() && s.rx_lent == 0) {
                pkt = c;
            }
        }
        let extra = if append { 0 } else { pkt.mem_cost() };
        if u64::from(s.rxq.mem()) + u64::from(s.rx_lent) + u64::from(extra) > s.conn.rx().mem_budget() {
            stats::inc(t, Ctr::MemOverrun);
            let a = s.conn.on_mem_overrun(&v);
            let after = apply(s_, &mut s, &a, Some(&h));
            drop(s);
            run_after(s_, after);
            return;
        }
    }
    let a = s.conn.on_packet(&v, &h);
    if a.new_child {
        drop(s);
        new_child(s_, t, &v, &h, ns);
        return;
    }
    if a.enqueue {
        if append {
            let flags = v.flags;
            s.rxq.with_back(|tail| {
                tail.append(pkt.unread());
                if flags != 0 {
                    let mut th = tail.hdr();
                    th.flags |= flags;
                    tail.set_hdr(&th);
                }
            });
        } else {
            // A plain send's pinned pages, delivered in place (loopback), for a socket with no
            // reader in recv(2) (an event loop between its epoll_wait(2) and its read, a reader
            // busy elsewhere, nobody) or behind a long queue: the sender copies them now
            // instead of waiting for the reader (`zerocopy::SyncPin`).
            if !pkt.ext().is_null() && !crate::sock::queueing(t) && (!s.reading || hurry_at(s.rxq.count())) {
                crate::zerocopy::hurry(pkt.ext());
            }
            s.rxq.push_back(pkt);
        }
    }
    let after = if listening {
        // Listener answering a non-REQUEST: the reply goes to the packet's sender.
        if a.send.is_some() {
            drop(s);
            reset_no_sock(t, &h, Ctr::WrongPeer, ns);
            return;
        }
        After::NONE
    } else {
        apply(s_, &mut s, &a, Some(&h))
    };
    drop(s);
    run_after(s_, after);
}

/// Whether `p`'s payload fits in the tail room of the last queued packet, which may take
/// it: STREAM always, SEQPACKET only within one message (the tail does not end one).
fn tail_takes(q: &mut PktQueue, p: &Pkt, seqpacket: bool) -> bool {
    if !p.ext().is_null() {
        return false;
    }
    let n = p.remaining();
    q.with_back(|t| t.room() >= n && (!seqpacket || t.hdr().flags & SEQ_EOM == 0)).unwrap_or(false)
}

/// A compact copy of `p` for a queue whose reader lags (`queue_empty` false): a small payload
/// moves to a fresh merge buffer (later small payloads are appended to it), a payload that
/// uses little of a large buffer (a virtio rx buffer) to an exact-size one. `None` when the
/// reader keeps up (it will take the packet at once), or when copying saves nothing.
fn compact(p: &Pkt, seqpacket: bool, queue_empty: bool) -> Option<Pkt> {
    if queue_empty || !p.ext().is_null() {
        return None;
    }
    let n = p.remaining();
    let h = p.hdr();
    let ends_msg = seqpacket && h.flags & SEQ_EOM != 0;
    // A merge buffer pays for itself over the small payloads that follow (appended to it by
    // `tail_takes`); an exact-size copy only when it saves memory now.
    let merge = n < MERGE_CAP / 2 && !ends_msg;
    let cap = if merge { MERGE_CAP } else { n };
    if !merge && crate::pkt::alloc_size(cap) >= p.mem_cost() {
        return None;
    }
    let mut c = if merge { crate::transport::pkt_alloc_merge(kernel::bindings::GFP_ATOMIC)? } else { Pkt::alloc(cap, true).ok()? };
    c.set_hdr(&h);
    c.append(p.unread());
    Some(c)
}

/// A listener got a REQUEST: create the child, answer RESPONSE, then queue it for accept().
///
/// Order matters: the child is published (accept queue) only after its RESPONSE has been
/// handed to the transport, so nothing the accepting application sends can reach the peer
/// before the peer's connect() has seen the RESPONSE; and `child` keeps our own reference
/// until we are done with it, because once queued, a concurrent accept() + close() or the
/// listener's close may drop every other reference.
fn new_child(lsk: crate::net::Sk, t: TransportPtr, v: &crate::proto::hdr::Valid, h: &Hdr, ns: u64) {
    let Some(slot) = BacklogSlot::take(lsk) else {
        reset_no_sock(t, h, Ctr::Refused, ns);
        return;
    };
    // The transport a connect() towards the peer would pick must be the one the REQUEST came
    // on (in-tree assigns the child's transport and resets on a mismatch): a packet cannot
    // claim an address that another transport serves.
    let to_host = v.dst.cid > VMADDR_CID_HOST && v.src.cid > VMADDR_CID_HOST;
    // The child lives in the listener's namespace (which `ns`, the packet's, reaches) and
    // inherits its settings: one look at the listener.
    let lns = vsk(lsk).ns;
    let inherit = vsk(lsk).st.lock().inherit();
    let fallback = crate::netns::g2h_fallback(lsk);
    let expected = global().lock().pick_transport(v.src.cid, to_host, lns, fallback);
    let Some((_, via_host)) = expected.filter(|(e, _)| e.0 == t.0) else {
        reset_no_sock(t, h, Ctr::Refused, ns);
        return;
    };
    let Some(tref) = TransportRef::get(t) else {
        reset_no_sock(t, h, Ctr::Refused, ns);
        return;
    };
    // A peer that did not negotiate SEQPACKET gets no SEQPACKET connection.
    if v.ty == SockType::Seqpacket && !tref.seqpacket_allow(v.src.cid, lns) {
        reset_no_sock(t, h, Ctr::Refused, ns);
        return;
    }
    let child = family::new_child(lsk, &inherit);
    let Ok(child) = child else {
        reset_no_sock(t, h, Ctr::AllocFail, ns);
        return;
    };
    let c = child.sk();
    let after = {
        let (conn, a) = vsk(lsk).st.lock().conn.accept_request(v, h);
        let mut s = vsk(c).st.lock();
        s.conn = conn;
        s.local = Addr { cid: v.dst.cid, port: v.dst.port };
        s.remote = Addr { cid: v.src.cid, port: v.src.port };
        if to_host || via_host {
            s.remote_flags |= sock::FLAG_TO_HOST;
        }
        s.transport = Some(tref);
        // The transport's limit on the inherited buffer size (as at connect).
        s.buffer_size = s.buffer_size.min(u64::from(crate::proto::hdr::MAX_BUF_SIZE));
        s.ss = sock::ss::CONNECTED;
        apply(c, &mut s, &a, Some(h))
    };
    if sock::hash_connected(c).is_err() {
        reset_no_sock(t, h, Ctr::AllocFail, ns);
        return;
    }
    // RESPONSE first (with loopback the peer's connect completes inside this call).
    run_after(c, after);
    {
        let mut ls = vsk(lsk).st.lock();
        // The listener may have been closed since the check above: `release` marks it shut
        // down and empties the queue under this lock, so checking here closes the race.
        let closed = ls.conn.local_shutdown() == crate::net::SHUTDOWN_MASK;
        if closed || ls.accept_q.push(child.clone(), GFP_ATOMIC).is_err() {
            drop(ls);
            sock::release_child(c);
            return;
        }
        // Queued: the slot's count now belongs to the queue entry (accept() or the
        // listener's release uncounts it).
        slot.keep();
    }
    lsk.data_ready();
}

/// A listener's backlog slot held by a child being made: counted in `sk_ack_backlog` from
/// the check until the child is queued (`keep`) or given up (dropped: uncounted). Checking
/// and counting in one hold of the listener's state lock keeps REQUESTs arriving on several
/// CPUs at once (loopback senders, two vhost workers) from all passing a backlog with one
/// slot left (in-tree checks and counts under `lock_sock`). The count moves under that lock
/// everywhere: `sk_ack_backlog` is a plain read-modify-write, and an accept() on another CPU
/// takes the child the moment it is queued.
struct BacklogSlot(Option<crate::net::Sk>);

impl BacklogSlot {
    /// Counts a slot, or `None` when the listener's backlog is full or it is shut down.
    fn take(lsk: crate::net::Sk) -> Option<Self> {
        let _ls = vsk(lsk).st.lock();
        if lsk.acceptq_is_full() || lsk.shutdown() == crate::net::SHUTDOWN_MASK {
            return None;
        }
        lsk.acceptq_added();
        Some(BacklogSlot(Some(lsk)))
    }

    /// The child was queued; call with the listener's state lock held.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for BacklogSlot {
    fn drop(&mut self) {
        if let Some(lsk) = self.0.take() {
            let _ls = vsk(lsk).st.lock();
            lsk.acceptq_removed();
        }
    }
}
