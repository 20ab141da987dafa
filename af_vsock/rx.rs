// SPDX-License-Identifier: GPL-2.0
//! Receive path: a packet handed over by a transport is validated, matched to a socket and
//! run through that socket's [`Conn`] state machine, all under the socket's state spinlock
//! only, so a transport may deliver in the sender's own context (loopback).

use crate::family;
use crate::pkt::Pkt;
use crate::proto::conn::State;
use crate::proto::hdr::{rst_reply, validate, Addr, Hdr, Op, ValidateCtx, MAX_PKT_BUF_SIZE};
use crate::sock::{self, apply, run_after, send_on, vsk, After, TransportRef};
use crate::table::{global, TransportPtr};
use kernel::prelude::*;

/// Answers `h` with an RST from no socket (in-tree `virtio_transport_reset_no_sock`).
fn reset_no_sock(t: TransportPtr, h: &Hdr) {
    if let Some(r) = rst_reply(h) {
        if let Ok(mut p) = Pkt::alloc(0, false) {
            p.set_hdr(&r);
            let _ = send_on(t, p);
        }
    }
}

/// Entry point for every received packet (consumed).
pub(crate) fn recv_pkt(t: TransportPtr, mut pkt: Pkt) {
    let h = pkt.hdr();
    let seqpacket = t.get().features & crate::abi::TRANSPORT_F_SEQPACKET != 0;
    let ctx = ValidateCtx { max_len: MAX_PKT_BUF_SIZE.min(pkt.len()), seqpacket, src_cid: None, dst_cid: None };
    let v = match validate(&h, &ctx) {
        Ok(v) => v,
        Err(e) => {
            if e.wants_rst() {
                reset_no_sock(t, &h);
            }
            return;
        }
    };
    // The payload is exactly what the header says (the transport gave us at least that).
    pkt.set_len(v.len);
    let src = v.src;
    let dst = v.dst;
    let sk = {
        let g = global().lock();
        match g.find_connected(src, dst).or_else(|| g.find_bound(dst)) {
            Some(s) => s.clone(),
            None => {
                drop(g);
                reset_no_sock(t, &h);
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
        reset_no_sock(t, &h);
        return;
    }
    let a = s.conn.on_packet(&v, &h);
    if a.new_child {
        drop(s);
        new_child(s_, t, &v, &h);
        return;
    }
    if a.enqueue {
        s.rxq.push_back(pkt);
    }
    let after = if listening {
        // Listener answering a non-REQUEST: the reply goes to the packet's sender.
        if a.send.is_some() {
            drop(s);
            reset_no_sock(t, &h);
            return;
        }
        After::NONE
    } else {
        apply(s_, &mut s, &a, Some(&h))
    };
    drop(s);
    run_after(s_, after);
}

/// A listener got a REQUEST: create the child, queue it for accept(), answer RESPONSE.
fn new_child(lsk: crate::net::Sk, t: TransportPtr, v: &crate::proto::hdr::Valid, h: &Hdr) {
    if lsk.acceptq_is_full() || lsk.shutdown() == crate::net::SHUTDOWN_MASK {
        reset_no_sock(t, h);
        return;
    }
    let Some(tref) = TransportRef::get(t) else {
        reset_no_sock(t, h);
        return;
    };
    let child = {
        let ls = vsk(lsk).st.lock();
        family::new_child(lsk, &ls)
    };
    let Ok(child) = child else {
        reset_no_sock(t, h);
        return;
    };
    let c = child.sk();
    let after = {
        let (conn, a) = vsk(lsk).st.lock().conn.accept_request(v, h);
        let mut s = vsk(c).st.lock();
        s.conn = conn;
        s.local = Addr { cid: v.dst.cid, port: v.dst.port };
        s.remote = Addr { cid: v.src.cid, port: v.src.port };
        if s.local.cid > crate::proto::hdr::VMADDR_CID_HOST && s.remote.cid > crate::proto::hdr::VMADDR_CID_HOST {
            s.remote_flags |= sock::FLAG_TO_HOST;
        }
        s.transport = Some(tref);
        s.ss = sock::ss::CONNECTED;
        apply(c, &mut s, &a, Some(h))
    };
    if sock::hash_connected(c).is_err() {
        reset_no_sock(t, h);
        return;
    }
    {
        let mut ls = vsk(lsk).st.lock();
        // The listener may have been closed since the check above: `release` marks it shut
        // down and empties the queue under this lock, so checking here closes the race.
        let closed = ls.conn.local_shutdown() == crate::net::SHUTDOWN_MASK;
        if closed || ls.accept_q.push(child, GFP_ATOMIC).is_err() {
            drop(ls);
            sock::release_child(c);
            return;
        }
    }
    lsk.acceptq_added();
    run_after(c, after);
    lsk.data_ready();
    let _ = Op::Response;
}
