// SPDX-License-Identifier: GPL-2.0
//! Data path socket calls: sendmsg(2) (credit waits, packetising, MSG_ZEROCOPY),
//! recvmsg(2) for STREAM and SEQPACKET (peek, per-packet credit accounting, MSG_ERRQUEUE),
//! poll(2) and the SIOCINQ/SIOCOUTQ ioctls.

use crate::ffi;
use crate::net::{self, state, Msg, Sk, SockGuard};
use crate::pkt::{Pkt, PktQueue};
use crate::proto::hdr::{SockType, MAX_PKT_BUF_SIZE, SEQ_EOM, SEQ_EOR, VMADDR_PORT_ANY};
use crate::sock::{send_on, sock_type, src_addr, vsk, VState};
use kernel::ffi::c_long;
use kernel::prelude::*;

/// sendmsg(2).
pub(crate) fn sendmsg(sk: Sk, msg: &mut Msg, len: usize) -> Result<usize> {
    let flags = msg.flags();
    if flags & ffi::MSG_OOB != 0 {
        return Err(errno!(EOPNOTSUPP));
    }
    let g = sk.lock();
    let seq = sock_type(sk) == SockType::Seqpacket;
    let r = send_locked(sk, &g, msg, len, flags, seq);
    match r {
        // STREAM, as in-tree: a pending socket error replaces EPIPE (and is cleared), with or
        // without MSG_NOSIGNAL; SIGPIPE for a bare EPIPE without it.
        Err(e) if e == EPIPE && !seq => {
            // SAFETY: `sk` is our live socket, locked (`g`); `sk_stream_error` takes its
            // pending error (`sock_error`), may send SIGPIPE to current and returns the errno.
            let e2 = unsafe { ffi::sk_stream_error(sk.as_ptr(), flags as i32, -(ffi::EPIPE as i32)) };
            Err(Error::from_errno(e2))
        }
        r => r,
    }
}

fn send_locked(sk: Sk, g: &SockGuard, msg: &mut Msg, len: usize, flags: u32, seq: bool) -> Result<usize> {
    {
        let s = vsk(sk).st.lock();
        if msg.namelen() != 0 {
            return Err(if sk.state() == state::ESTABLISHED { errno!(EISCONN) } else { errno!(EOPNOTSUPP) });
        }
        if s.conn.local_shutdown() & net::SEND_SHUTDOWN != 0 || s.conn.peer_shutdown() & net::RCV_SHUTDOWN != 0 {
            return Err(EPIPE);
        }
        if s.conn.is_reset() {
            return Err(errno!(ECONNRESET));
        }
        if s.transport.is_none() || sk.state() != state::ESTABLISHED || s.local.port == VMADDR_PORT_ANY {
            return Err(errno!(ENOTCONN));
        }
    }
    let mut timeout = sk.sndtimeo(flags & ffi::MSG_DONTWAIT != 0);
    // MSG_ZEROCOPY: with the caller's own completion (io_uring SEND_ZC), or once SO_ZEROCOPY
    // is on (in-tree behaviour, as tcp_sendmsg_locked).
    let zc = if flags & ffi::MSG_ZEROCOPY != 0 && (!msg.ubuf().is_null() || sk.flag(net::SOCK_ZEROCOPY)) {
        let (credit, pages_ok) = {
            let s = vsk(sk).st.lock();
            let f = features(&s);
            (s.conn.has_space(), f & crate::abi::TRANSPORT_F_ZEROCOPY != 0)
        };
        Some(crate::zerocopy::ZcSend::begin(sk, msg, len, credit, pages_ok)?)
    } else {
        None
    };
    // A plain blocking send of a large buffer to a copy-out transport goes by pinned pages
    // and returns once the transport has copied them (`zerocopy::SyncPin`).
    let (sync, local) = if zc.is_none() && timeout != 0 && len >= crate::zerocopy::SYNC_MIN && msg.user_backed() {
        let (f, kind) = {
            let s = vsk(sk).st.lock();
            (features(&s), s.transport.as_ref().map_or(0, |t| t.ptr().get().kind))
        };
        let want = crate::abi::TRANSPORT_F_ZEROCOPY | crate::abi::TRANSPORT_F_COPY_OUT;
        if f & want == want { (crate::zerocopy::SyncPin::new().ok(), kind == crate::abi::TRANSPORT_LOCAL) } else { (None, false) }
    } else {
        (None, false)
    };
    // Over loopback the reader copies a pinned chunk out while the sender would only wait:
    // every other chunk (half of what is left) is pinned, the next one the sender copies
    // itself meanwhile, so the two copies overlap.
    let mut pin_turn = true;
    let mut sent = 0usize;
    let total = len;
    let mut err: Result = Ok(());
    while sent < total {
        // Wait for credit.
        loop {
            let (space, stop) = {
                let s = vsk(sk).st.lock();
                let stop = sk.err() != 0
                    || s.conn.local_shutdown() & net::SEND_SHUTDOWN != 0
                    || s.conn.peer_shutdown() & net::RCV_SHUTDOWN != 0;
                (writable(sk, &s), stop)
            };
            if space > 0 || stop {
                break;
            }
            if timeout == 0 {
                err = Err(EAGAIN);
                break;
            }
            // Nothing of ours stays pinned while we wait for the peer (over loopback the
            // reader needs our socket lock, which we hold until the wait: copy at once).
            if let Some(s) = &sync {
                if local { s.detach_all() } else { s.settle(timeout) }
            }
            timeout = sk.wait(g, timeout, || {
                let s = vsk(sk).st.lock();
                writable(sk, &s) > 0 || sk.err() != 0 || s.conn.peer_shutdown() & net::RCV_SHUTDOWN != 0
            });
            if net::signal_pending() {
                err = Err(net::intr_errno(timeout));
                break;
            }
            if timeout == 0 && writable(sk, &vsk(sk).st.lock()) == 0 {
                err = Err(EAGAIN);
                break;
            }
        }
        if err.is_err() {
            break;
        }
        let e = sk.err();
        if e != 0 {
            err = Err(Error::from_errno(-e));
            break;
        }
        {
            let s = vsk(sk).st.lock();
            if s.conn.local_shutdown() & net::SEND_SHUTDOWN != 0 || s.conn.peer_shutdown() & net::RCV_SHUTDOWN != 0 {
                err = Err(EPIPE);
                break;
            }
            // A message larger than the window can never go: EMSGSIZE, decided once there is
            // credit, as in-tree's seqpacket_enqueue (a non-blocking send into a full window
            // gets EAGAIN first, a blocking one waits).
            if seq && sent == 0 && len as u64 > u64::from(s.conn.tx().buf_size()) {
                err = Err(errno!(EMSGSIZE));
                break;
            }
        }
        if let Some(s) = sync.as_ref().filter(|s| !s.has_room()) {
            if local { s.detach_all() } else { s.settle(timeout) }
        }
        let (want, pin) = match sync.as_ref() {
            Some(s) if local && pin_turn => ((total - sent).div_ceil(2).next_multiple_of(4096).max(crate::zerocopy::SYNC_MIN), Some(s)),
            Some(_) if local => (total - sent, None),
            s => (total - sent, s),
        };
        pin_turn = !pin_turn;
        match send_chunk(sk, msg, want.min(total - sent), seq, flags, zc.as_ref().filter(|z| z.zerocopy), pin) {
            Ok(n) => sent += n,
            Err(e) => {
                err = Err(e);
                break;
            }
        }
    }
    if let Some(s) = sync {
        // Over loopback the reader may need our socket lock (the other direction of a
        // connection with a writer and a reader at each end): wait without it.
        if local { g.unlocked(|| s.settle(timeout)) } else { s.settle(timeout) }
        let (pinned, copied) = s.counts();
        if let Some(t) = vsk(sk).st.lock().transport.as_ref().map(|t| t.ptr()) {
            crate::stats::add(t, crate::stats::Ctr::SyncPinned, pinned);
            crate::stats::add(t, crate::stats::Ctr::SyncCopied, copied);
        }
    }
    if let Some(z) = zc {
        z.end(sent > 0);
    }
    if sent > 0 && (!seq || sent == total) {
        return Ok(sent);
    }
    err.map(|_| sent)
}

/// The `TRANSPORT_F_*` bits of the socket's transport (none without one).
fn features(s: &VState) -> u32 {
    s.transport.as_ref().map_or(0, |t| t.ptr().get().features)
}

/// Credit the writer may use now: none while its packets still in a queueing transport take
/// up the credit window in memory (`sock::charge_tx`).
fn writable(sk: Sk, s: &VState) -> u32 {
    let space = s.conn.has_space();
    if space > 0 && crate::sock::tx_mem_ok(sk, s.conn.tx().buf_size()) { space } else { 0 }
}

/// Sends up to `want` bytes (bounded by credit and the packet size) as one packet.
fn send_chunk(
    sk: Sk,
    msg: &mut Msg,
    want: usize,
    seq: bool,
    flags: u32,
    zc: Option<&crate::zerocopy::ZcSend>,
    sync: Option<&kernel::sync::Arc<crate::zerocopy::SyncPin>>,
) -> Result<usize> {
    // Inline packets stay within one 64 KiB allocation, header included. A MSG_ZEROCOPY
    // packet's payload is the user's pinned pages, so it carries a whole packet's worth: a
    // 64 KiB zerocopy send is one packet, as in-tree (and one buffer for the device to finish
    // before the completion, not two). A copied send larger than an inline payload is copied
    // into pages of its own (`zerocopy::fill_pages`) on every transport that takes page
    // payloads: one packet per 64 KiB, and no order-4 allocation.
    let inline = MAX_PKT_BUF_SIZE as usize - core::mem::size_of::<crate::abi::RawPkt>();
    // A sync send's chunk (`sync`: the transport takes page payloads) may be a whole packet.
    let sync = sync.filter(|_| zc.is_none() && want >= crate::zerocopy::SYNC_MIN);
    // A splice into the socket (sendfile(2)) of a page or more goes by page reference
    // (`zerocopy::fill_spliced`) on every transport that takes page payloads.
    let spliced = zc.is_none() && flags & ffi::MSG_SPLICE_PAGES != 0 && want >= 4096 && msg.is_bvec();
    let (paged_ok, mut n) = {
        let mut s = vsk(sk).st.lock();
        let paged_ok = zc.is_none()
            && (want > inline || sync.is_some() || spliced)
            && features(&s) & crate::abi::TRANSPORT_F_ZEROCOPY != 0;
        let cap = if zc.is_some() || paged_ok { MAX_PKT_BUF_SIZE as usize } else { inline };
        (paged_ok, s.conn.take_credit(want.min(cap) as u32))
    };
    if n == 0 {
        return Ok(0);
    }
    let sync = sync.filter(|_| paged_ok && n as usize >= crate::zerocopy::SYNC_MIN);
    let paged = paged_ok && (n as usize > inline || sync.is_some() || spliced);
    let mut p = match Pkt::alloc(if zc.is_some() || paged { 0 } else { n }, false) {
        Ok(p) => p,
        Err(e) => {
            vsk(sk).st.lock().conn.put_back_credit(n);
            return Err(e);
        }
    };
    let mut by_ref = false;
    let filled = match zc {
        Some(z) => z.fill(&mut p, msg, n as usize).map(|got| got as u32),
        // Pinning failed or the send has enough in flight: copy this chunk instead.
        None if sync.is_some() => sync
            .and_then(|s| crate::zerocopy::fill_sync(s, &mut p, msg, n as usize).ok())
            .map_or_else(|| crate::zerocopy::fill_pages(&mut p, msg.iter_ptr(), n as usize), Ok)
            .map(|got| got as u32),
        None if paged && spliced => crate::zerocopy::fill_spliced(&mut p, msg, n as usize)
            .inspect(|_| by_ref = true)
            .or_else(|_| crate::zerocopy::fill_pages(&mut p, msg.iter_ptr(), n as usize))
            .map(|got| got as u32),
        None if paged => crate::zerocopy::fill_pages(&mut p, msg.iter_ptr(), n as usize).map(|got| got as u32),
        None => p.buf_mut().get_mut(..n as usize).ok_or(EINVAL).and_then(|b| msg.copy_from_user(b)).map(|_| n),
    };
    match filled {
        Ok(got) => {
            if got < n {
                vsk(sk).st.lock().conn.put_back_credit(n - got);
                n = got;
            }
        }
        Err(e) => {
            vsk(sk).st.lock().conn.put_back_credit(n);
            return Err(e);
        }
    }
    p.set_len(n);
    let last = msg.left() == 0;
    let mut pflags = 0;
    if seq && last {
        pflags |= SEQ_EOM;
        if flags & ffi::MSG_EOR != 0 {
            pflags |= SEQ_EOR;
        }
    }
    // Stamp and hand over in one `tx_order` hold (see `VSock::tx_order`); a transport that
    // delivers in place does not need it.
    let order = vsk(sk).tx_order.lock();
    let t = {
        let mut s = vsk(sk).st.lock();
        let Some(t) = s.transport.as_ref() else {
            s.conn.put_back_credit(n);
            return Err(errno!(ENOTCONN));
        };
        let tp = t.ptr();
        let src = src_addr(&s, t);
        let remote = s.remote;
        let h = s.conn.data_packet(n, pflags, src, remote);
        p.set_hdr(&h);
        (tp, vsk(sk).ns)
    };
    let order = crate::sock::queueing(t.0).then_some(order);
    if order.is_some() {
        crate::sock::charge_tx(sk, &mut p);
    }
    let sent = send_on(t.0, p, t.1);
    drop(order);
    if let Err(e) = sent {
        // The packet never left: its credit and `unsent` bytes are ours again.
        vsk(sk).st.lock().conn.put_back_credit(n);
        return Err(e);
    }
    if by_ref {
        crate::stats::inc(t.0, crate::stats::Ctr::Spliced);
    }
    vsk(sk).st.lock().conn.on_tx_done(n);
    Ok(n as usize)
}

/// Copies the first `n` unread payload bytes of `p` to the user.
fn copy_pkt(p: &Pkt, n: usize, msg: &mut Msg) -> Result {
    let ext = p.ext();
    if ext.is_null() {
        msg.copy_to_user(p.unread().get(..n).ok_or(EINVAL)?)
    } else {
        crate::zerocopy::copy_out(p, ext, 0, n, msg)
    }
}

/// Waits until there is something to read, an error, or a shutdown; returns false on a
/// shutdown/error with nothing queued.
fn wait_data(sk: Sk, g: &SockGuard, timeout: &mut c_long) -> Result<bool> {
    loop {
        let (data, stop) = {
            let s = vsk(sk).st.lock();
            let stop = sk.err() != 0
                || s.conn.local_shutdown() & net::RCV_SHUTDOWN != 0
                || s.conn.peer_shutdown() & net::SEND_SHUTDOWN != 0;
            (s.readable_bytes(), stop)
        };
        if data > 0 {
            return Ok(true);
        }
        if stop {
            return Ok(false);
        }
        if *timeout == 0 {
            return Err(EAGAIN);
        }
        *timeout = sk.wait(g, *timeout, || {
            let s = vsk(sk).st.lock();
            s.readable_bytes() > 0
                || sk.err() != 0
                || s.conn.peer_shutdown() & net::SEND_SHUTDOWN != 0
                || s.conn.local_shutdown() & net::RCV_SHUTDOWN != 0
        });
        if net::signal_pending() {
            return Err(net::intr_errno(*timeout));
        }
        if *timeout == 0 && vsk(sk).st.lock().readable_bytes() == 0 {
            return Err(EAGAIN);
        }
    }
}

/// recvmsg(2).
pub(crate) fn recvmsg(sk: Sk, msg: &mut Msg, len: usize, flags: u32) -> Result<usize> {
    if flags & ffi::MSG_ERRQUEUE != 0 {
        // SAFETY: live socket and msghdr of the current call.
        let r = unsafe {
            ffi::sock_recv_errqueue(sk.as_ptr(), msg.as_ptr(), len as i32, ffi::SOL_VSOCK as i32, ffi::VSOCK_RECVERR as i32)
        };
        return if r < 0 { Err(Error::from_errno(r)) } else { Ok(r as usize) };
    }
    let g = sk.lock();
    vsk(sk).st.lock().reading = true;
    let r = recv_locked(sk, &g, msg, len, flags);
    let mut s = vsk(sk).st.lock();
    s.reading = false;
    // A sync send's pinned pages left unread (a short read, MSG_PEEK, a timeout): its sender
    // stops waiting for us. Those further back than the first `rx::HURRY_DEPTH` packets
    // were hurried already. Only loopback queues such pages.
    if s.in_place() {
        let mut n = 0;
        s.rxq.for_each(|p| {
            crate::zerocopy::hurry(p.ext());
            n += 1;
            n < crate::rx::HURRY_DEPTH
        });
    }
    drop(s);
    r
}

/// `recvmsg` under the socket lock `g`.
fn recv_locked(sk: Sk, g: &SockGuard, msg: &mut Msg, len: usize, flags: u32) -> Result<usize> {
    {
        let s = vsk(sk).st.lock();
        if s.transport.is_none() || sk.state() != state::ESTABLISHED {
            // An orderly end from the peer reads as 0 (in-tree: `SOCK_DONE`, which its
            // shutdown(2) and a reconnect clear, as `Conn` clears `done`). Read from `Conn`,
            // under the lock its receive path holds, not from `sk_flags`: setsockopt's
            // non-atomic updates of those under lock_sock alone could undo a bit set there.
            return if s.conn.is_done() && !s.conn.is_reset() {
                Ok(0)
            } else if s.conn.is_reset() {
                Err(errno!(ECONNRESET))
            } else {
                Err(errno!(ENOTCONN))
            };
        }
    }
    if flags & ffi::MSG_OOB != 0 {
        return Err(errno!(EOPNOTSUPP));
    }
    if sk.shutdown() & net::RCV_SHUTDOWN != 0 || len == 0 {
        return Ok(0);
    }
    if sock_type(sk) == SockType::Stream {
        stream_recv(sk, g, msg, len, flags)
    } else {
        seq_recv(sk, g, msg, len, flags)
    }
}

fn stream_recv(sk: Sk, g: &SockGuard, msg: &mut Msg, len: usize, flags: u32) -> Result<usize> {
    let mut target = sk.rcvlowat(flags & ffi::MSG_WAITALL != 0, len.min(i32::MAX as usize) as i32).max(1) as usize;
    if target as u64 >= vsk(sk).st.lock().buffer_size.max(1) {
        return Err(ENOMEM);
    }
    let mut timeout = sk.rcvtimeo(flags & ffi::MSG_DONTWAIT != 0);
    let mut copied = 0usize;
    let mut res: Result<usize> = Ok(0);
    loop {
        match wait_data(sk, g, &mut timeout) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                res = Err(e);
                break;
            }
        }
        let r = if flags & ffi::MSG_PEEK != 0 {
            stream_peek(sk, msg, len - copied)
        } else {
            stream_dequeue(sk, msg, len - copied)
        };
        match r {
            Ok(n) => {
                copied += n;
                if n >= target || flags & ffi::MSG_PEEK != 0 {
                    break;
                }
                target -= n;
            }
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    let e = sk.err();
    if e != 0 {
        res = Err(Error::from_errno(-e));
    } else if sk.shutdown() & net::RCV_SHUTDOWN != 0 {
        res = Ok(0);
    }
    if copied > 0 {
        return Ok(copied);
    }
    res
}

/// Takes the whole receive queue out to copy from it without the state lock (only the reader
/// under lock_sock removes packets); its memory still counts against the budget (`rx_lent`)
/// until [`restore`] puts it back: a copy may sleep in a page fault for as long as user space
/// likes, and the peer's packets meanwhile must not get a second budget.
fn take_rxq(s: &mut VState) -> PktQueue {
    let q = core::mem::replace(&mut s.rxq, PktQueue::new());
    s.rx_lent = q.mem();
    q
}

/// Puts the packets a reader took out of the queue (to copy them without the state lock)
/// back in front of it, before any that arrived meanwhile. A transport reset purges the
/// queue and nothing queued may outlive it: then they come back, for the caller to drop
/// once the lock is released (freeing a zerocopy packet may wake its sender).
fn restore(s: &mut VState, mut q: PktQueue) -> Option<PktQueue> {
    s.rx_lent = 0;
    if s.conn.is_reset() {
        return Some(q);
    }
    let in_place = s.in_place();
    while let Some(p) = s.rxq.pop_front() {
        // Arrived while the reader had the queue out: now further back (`rx::HURRY_DEPTH`).
        if in_place && crate::rx::hurry_at(q.count()) {
            crate::zerocopy::hurry(p.ext());
        }
        q.push_back(p);
    }
    s.rxq = q;
    None
}

/// [`restore`] for one packet.
fn restore_one(s: &mut VState, p: Pkt) -> Option<Pkt> {
    if s.conn.is_reset() {
        return Some(p);
    }
    s.rxq.push_front(p);
    None
}

fn stream_peek(sk: Sk, msg: &mut Msg, len: usize) -> Result<usize> {
    // Peek copies under the state lock would fault-sleep; take the whole queue out instead
    // (only this reader, under lock_sock, removes packets), copy, and put it back in front.
    let q = take_rxq(&mut vsk(sk).st.lock());
    let mut copied = 0usize;
    let mut res = Ok(());
    q.for_each(|p| {
        let n = (p.remaining() as usize).min(len - copied);
        if let Err(e) = copy_pkt(p, n, msg) {
            res = Err(e);
            return false;
        }
        copied += n;
        copied < len
    });
    let stale = restore(&mut vsk(sk).st.lock(), q);
    drop(stale);
    // A fault after whole packets were copied returns their bytes (in-tree's peek too).
    if copied > 0 {
        return Ok(copied);
    }
    res.map(|_| copied)
}

fn stream_dequeue(sk: Sk, msg: &mut Msg, len: usize) -> Result<usize> {
    let mut copied = 0usize;
    let mut res = Ok(());
    while copied < len {
        let Some(mut p) = vsk(sk).st.lock().rxq.pop_front() else { break };
        let n = (p.remaining() as usize).min(len - copied);
        if let Err(e) = copy_pkt(&p, n, msg) {
            let stale = restore_one(&mut vsk(sk).st.lock(), p);
            drop(stale);
            res = Err(e);
            break;
        }
        p.consume(n as u32);
        copied += n;
        // Consumption is accounted packet by packet, so that a writer waiting for credit
        // refills the buffer while this reader copies the rest of a large read (the policy
        // in `Conn::on_consume` speaks up only when the peer is starved or half a window
        // is free). Accounting once at the end left the writer idle for the whole copy.
        // A finished packet is freed here, with no spinlock held (freeing a zerocopy one
        // may wake its sender).
        let rest = if p.remaining() > 0 {
            Some(p)
        } else {
            drop(p);
            None
        };
        let (out, stale) = {
            let mut s = vsk(sk).st.lock();
            let stale = rest.and_then(|p| restore_one(&mut s, p));
            let c = s.conn.on_consume(n as u32);
            (c.and_then(|c| s.ctl(c, None)), stale)
        };
        drop(stale);
        if let Some(o) = out {
            let _ = o.send(sk);
        }
    }
    if copied == 0 {
        res.map(|_| 0)
    } else {
        Ok(copied)
    }
}

fn seq_recv(sk: Sk, g: &SockGuard, msg: &mut Msg, len: usize, flags: u32) -> Result<usize> {
    let mut timeout = sk.rcvtimeo(flags & ffi::MSG_DONTWAIT != 0);
    if !wait_data(sk, g, &mut timeout)? {
        return Ok(0);
    }
    let peek = flags & ffi::MSG_PEEK != 0;
    // Take the queue out (only this reader removes packets), walk one message.
    let mut q = take_rxq(&mut vsk(sk).st.lock());
    let mut msg_len = 0usize;
    let mut copied = 0usize;
    let mut eor = false;
    let mut res = Ok(());
    // One packet of the message: copy what fits, count it all; false at its last packet.
    let mut step = |p: &Pkt| {
        let rem = p.remaining() as usize;
        let n = rem.min(len.saturating_sub(copied));
        if n > 0 && res.is_ok() {
            if let Err(e) = copy_pkt(p, n, msg) {
                res = Err(e);
            }
            copied += n;
        }
        msg_len += rem;
        let f = p.hdr().flags;
        if f & SEQ_EOM != 0 {
            eor = f & SEQ_EOR != 0;
            return false;
        }
        true
    };
    if peek {
        q.for_each(step);
    } else {
        while let Some(p) = q.pop_front() {
            if !step(&p) {
                break;
            }
        }
    }
    let (out, stale) = {
        let mut s = vsk(sk).st.lock();
        let stale = restore(&mut s, q);
        if peek {
            (None, stale)
        } else {
            let c = s.conn.on_seq_consume(msg_len as u32);
            (c.and_then(|c| s.ctl(c, None)), stale)
        }
    };
    drop(stale);
    if let Some(o) = out {
        let _ = o.send(sk);
    }
    res?;
    let e = sk.err();
    if e != 0 {
        return Err(Error::from_errno(-e));
    }
    if sk.shutdown() & net::RCV_SHUTDOWN != 0 {
        return Ok(0);
    }
    if eor {
        msg.add_flags(ffi::MSG_EOR);
    }
    if msg_len > len {
        msg.add_flags(ffi::MSG_TRUNC);
    }
    Ok(if flags & ffi::MSG_TRUNC != 0 { msg_len } else { copied })
}

/// poll(2) mask (EPOLL* bits), as in-tree `vsock_poll` for connectible sockets.
pub(crate) fn poll_mask(sk: Sk) -> u32 {
    const IN: u32 = 0x1 | 0x40; // EPOLLIN | EPOLLRDNORM
    const OUT: u32 = 0x4 | 0x100; // EPOLLOUT | EPOLLWRNORM
    const ERR: u32 = 0x8;
    const HUP: u32 = 0x10;
    const RDHUP: u32 = 0x2000;
    let _g = sk.lock();
    let s = vsk(sk).st.lock();
    let mut mask = 0;
    if sk.err() != 0 || !sk.errqueue_empty() {
        mask |= ERR;
    }
    let shut = s.conn.local_shutdown();
    let peer = s.conn.peer_shutdown();
    let st = sk.state();
    if st == state::LISTEN && !s.accept_q.is_empty() {
        mask |= IN;
    }
    let active = s.transport.is_some() && st == state::ESTABLISHED;
    if active && shut & net::RCV_SHUTDOWN == 0 {
        let target = sk.rcvlowat(false, i32::MAX).max(1) as u32;
        let ready = match s.conn.ty() {
            SockType::Stream => s.conn.has_data() >= target,
            SockType::Seqpacket => s.conn.seq_has_data() > 0,
        };
        if ready {
            mask |= IN;
        }
    }
    if shut == net::SHUTDOWN_MASK || (shut & net::SEND_SHUTDOWN != 0 && peer & net::SEND_SHUTDOWN != 0) {
        mask |= HUP;
    }
    if shut & net::RCV_SHUTDOWN != 0 || peer & net::SEND_SHUTDOWN != 0 {
        mask |= RDHUP | IN;
    }
    if s.transport.is_some() && st == state::ESTABLISHED && shut & net::SEND_SHUTDOWN == 0 && writable(sk, &s) > 0 {
        mask |= OUT;
    }
    if (st == state::CLOSE || st == state::CLOSING) && shut & net::SEND_SHUTDOWN == 0 {
        mask |= OUT;
    }
    mask
}

/// SIOCINQ / SIOCOUTQ.
pub(crate) fn ioctl_queue(sk: Sk, inq: bool) -> Result<i32> {
    let _g = sk.lock();
    let s = vsk(sk).st.lock();
    if s.transport.is_none() {
        return Err(errno!(EOPNOTSUPP));
    }
    if sk.state() == state::LISTEN {
        return Err(EINVAL);
    }
    Ok(if inq { s.conn.has_data() as i32 } else { crate::sock::outq(sk, &s).min(i32::MAX as u32) as i32 })
}
