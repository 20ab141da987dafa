// SPDX-License-Identifier: GPL-2.0
//! `proto_ops.read_sock` for kernel users of a STREAM socket (an in-kernel RPC transport, a
//! record parser), with `tcp_read_sock`'s contract: the actor gets the payload in order as
//! `(skb, offset, len)` pieces and returns how much it consumed (0 or less stops the read); what
//! it consumed is accounted to credit as recvmsg(2) accounts it (a CREDIT_UPDATE when the policy
//! wants one, sent from the socket's credit work: this context may be atomic); the read stops when `desc->count` reaches 0 or the queue is empty. Returns the
//! bytes consumed, else the actor's error, else 0; EOF and reset are not returned but seen as
//! with TCP (`sk_shutdown & RCV_SHUTDOWN`, `sk_err`, the state-change callback).
//!
//! Callable from the socket's data-ready callback (rvsock calls it with none of its locks held,
//! in process context) or in process context. Readers exclude each other through the state
//! lock: each packet is taken, offered and put back (if partly consumed) under it, so the actor
//! runs in atomic context, as TCP's runs under the socket spinlock: it must not sleep.
//!
//! rvsock's packets are not skbs: each offered piece is a fresh skb (page frags, atomic
//! allocation) holding a copy of the packet's unread payload, one kernel-to-kernel copy that
//! the actor may clone or keep. Pinned MSG_ZEROCOPY pages are copied too, never handed on: the
//! sender's completion fires when the packet is freed, and a page still referenced by the
//! consumer after that could change under it.

use crate::ffi;
use crate::net::{state, Sk};
use crate::pkt::Pkt;
use crate::proto::hdr::SockType;
use crate::sock::{sock_type, vsk};
use kernel::ffi::c_int;

/// A `read_descriptor_t` of the caller.
struct Desc(*mut ffi::read_descriptor_t);

impl Desc {
    fn count(&self) -> usize {
        // SAFETY: the caller of read_sock passes a live descriptor for the whole call.
        unsafe { (*self.0).count }
    }
}

/// A copy of `n` unread payload bytes of `p` in a new skb, or None if the atomic allocation
/// failed.
fn pkt_skb(p: &Pkt, n: usize) -> Option<*mut ffi::sk_buff> {
    // SAFETY: allocates an skb of `n` bytes in order-0 page frags (no linear part).
    let skb = unsafe { ffi::rvsock_alloc_skb_frags(n as _, kernel::bindings::GFP_ATOMIC | kernel::bindings::__GFP_NOWARN) };
    if skb.is_null() {
        return None;
    }
    let ext = p.ext();
    let ok = if ext.is_null() {
        match p.unread().get(..n) {
            // SAFETY: `skb` has `n` bytes of frags; `b` is `n` readable bytes.
            Some(b) => unsafe { ffi::skb_store_bits(skb, 0, b.as_ptr().cast(), n as c_int) == 0 },
            None => false,
        }
    } else {
        let mut done = 0usize;
        let mut ok = true;
        crate::zerocopy::for_each_piece(p, ext, 0, n, |page, off, len| {
            // SAFETY: the page is held while `for_each_piece` hands it out (its `CopyOut`);
            // `done + len <= n` fits the skb.
            ok = unsafe { ffi::rvsock_skb_store_page(skb, done as c_int, page, off, len as c_int) } == 0;
            done += len;
            ok
        });
        ok && done == n
    };
    if !ok {
        // SAFETY: the skb is ours and unused.
        unsafe { ffi::rvsock_consume_skb(skb) };
        return None;
    }
    Some(skb)
}

/// `proto_ops.read_sock` (see the module documentation).
///
/// # Safety
/// `desc` is the caller's live descriptor; `actor` is callable with it.
pub(crate) unsafe fn read_sock(sk: Sk, desc: *mut ffi::read_descriptor_t, actor: ffi::sk_read_actor_t) -> c_int {
    let Some(actor) = actor else { return -(ffi::EINVAL as c_int) };
    if desc.is_null() {
        return -(ffi::EINVAL as c_int);
    }
    if sock_type(sk) != SockType::Stream {
        return -(ffi::EOPNOTSUPP as c_int);
    }
    if sk.state() == state::LISTEN {
        return -(ffi::ENOTCONN as c_int);
    }
    let d = Desc(desc);
    let mut copied: c_int = 0;
    while d.count() > 0 {
        let mut s = vsk(sk).st.lock();
        let Some(mut p) = s.rxq.pop_front() else { break };
        let n = p.remaining() as usize;
        let Some(skb) = pkt_skb(&p, n) else {
            s.rxq.push_front(p);
            if copied == 0 {
                copied = -(ffi::ENOMEM as c_int);
            }
            break;
        };
        // SAFETY: per the contract; `skb` holds `n` bytes; the actor runs under our spinlock,
        // as TCP's runs under the socket's.
        let used = unsafe { actor(desc, skb, 0, n) };
        // SAFETY: our reference to the skb (the actor took its own if it keeps it).
        unsafe { ffi::rvsock_consume_skb(skb) };
        if used <= 0 {
            s.rxq.push_front(p);
            if copied == 0 {
                copied = used;
            }
            break;
        }
        let used = (used as usize).min(n);
        p.consume(used as u32);
        copied = copied.saturating_add(used as c_int);
        let done = if p.remaining() > 0 {
            s.rxq.push_front(p);
            None
        } else {
            Some(p)
        };
        // Sending may sleep (allocation, loopback delivery): the credit update goes out from
        // the socket's credit work, as TCP's ACK would from softirq context.
        let due = s.conn.on_consume(used as u32).is_some_and(|c| {
            s.credit_due = Some(c);
            true
        });
        drop(s);
        // A finished packet is freed with no spinlock held (a zerocopy one may wake its sender).
        drop(done);
        if due {
            crate::sock::schedule_credit_update(sk);
        }
    }
    copied
}
