// SPDX-License-Identifier: GPL-2.0
//! Socket calls that set a socket up: bind(2) (explicit and automatic, with the address and
//! permission rules), getsockname/getpeername, listen(2), connect(2) (transport choice,
//! REQUEST, waiting for the RESPONSE, the connect timeout) and accept(2).

use crate::ffi;
use crate::net::{self, state, DelayedWork, Sk, SkRef};
use crate::proto::conn::{Conn, State};
use crate::proto::hdr::{Addr, SockType, VMADDR_CID_ANY, VMADDR_PORT_ANY};
use crate::sock::{apply, mirror, run_after, sock_type, ss, vsk, TransportRef, VSock, FLAG_TO_HOST};
use crate::table::{global, vec_pop_front};
use kernel::ffi::c_long;
use kernel::prelude::*;

/// A new connection state for another connect attempt, keeping what the user set on the
/// socket that it holds (SO_RCVLOWAT: the credit policy's low-water mark; the buffer size is
/// `buffer_size`). Not connected: nothing to send.
fn fresh_conn(sk: Sk, buffer_size: u64) -> Conn {
    let mut c = Conn::new(sock_type(sk), buffer_size);
    let _ = c.set_rcvlowat(sk.rcvlowat(false, i32::MAX).max(1) as u32);
    c
}

/// bind(2) core (`addr` already validated as a sockaddr_vm).
fn do_bind(sk: Sk, addr: Addr) -> Result {
    let ns = vsk(sk).ns;
    let mut g = global().lock();
    let mut s = vsk(sk).st.lock();
    if s.local.port != VMADDR_PORT_ANY {
        return Err(EINVAL);
    }
    bind_allowed(&g, addr)?;
    let port = if addr.port == VMADDR_PORT_ANY {
        let pick = |c: &core::sync::atomic::AtomicU32| g.pick_port(addr.cid, ns, c);
        let port = crate::netns::with_port_cursor(sk, pick).unwrap_or_else(|| pick(&g.port_cursor));
        port.ok_or(errno!(EADDRNOTAVAIL))?
    } else {
        if g.find_bound(addr, ns).is_some() {
            return Err(errno!(EADDRINUSE));
        }
        addr.port
    };
    let a = Addr { cid: addr.cid, port };
    g.insert_bound(a, sk)?;
    s.local = a;
    s.bound = true;
    // Off the unbound list; its reference is dropped once the locks are released.
    let listed = if core::mem::take(&mut s.unbound) { g.remove_unbound(sk) } else { None };
    drop(s);
    drop(g);
    drop(listed);
    Ok(())
}

/// Whether the caller may bind `addr` at all (in-tree order: the CID must be ours, then a
/// privileged port needs CAP_NET_BIND_SERVICE). Checked before anything else happens.
fn bind_allowed(g: &crate::table::Global, addr: Addr) -> Result {
    if addr.cid != VMADDR_CID_ANY && !g.is_local_cid(addr.cid) {
        return Err(errno!(EADDRNOTAVAIL));
    }
    if addr.port != VMADDR_PORT_ANY && addr.port <= crate::proto::hdr::LAST_RESERVED_PORT && !net::capable_net_bind() {
        return Err(EACCES);
    }
    Ok(())
}

/// Parses a user sockaddr_vm (in-tree `vsock_addr_cast` + `vsock_addr_validate`).
pub(crate) fn parse_addr(raw: &[u8]) -> Result<(Addr, u8)> {
    // struct sockaddr_vm: family u16, reserved1 u16, port u32, cid u32, flags u8, zero[3]
    if raw.len() < 16 {
        return Err(EFAULT);
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    if family != ffi::AF_VSOCK as u16 {
        return Err(errno!(EAFNOSUPPORT));
    }
    if raw[12] & !FLAG_TO_HOST != 0 {
        return Err(EINVAL);
    }
    let port = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    let cid = u32::from_ne_bytes([raw[8], raw[9], raw[10], raw[11]]);
    Ok((Addr { cid, port }, raw[12]))
}

/// Encodes a sockaddr_vm.
pub(crate) fn encode_addr(a: Addr, flags: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..2].copy_from_slice(&(ffi::AF_VSOCK as u16).to_ne_bytes());
    b[4..8].copy_from_slice(&a.port.to_ne_bytes());
    b[8..12].copy_from_slice(&a.cid.to_ne_bytes());
    b[12] = flags;
    b
}

/// bind(2).
pub(crate) fn bind(sk: Sk, raw: &[u8]) -> Result {
    let (addr, _) = parse_addr(raw).map_err(|_| EINVAL)?;
    let _g = sk.lock();
    if addr.port != VMADDR_PORT_ANY && vsk(sk).st.lock().local.port == VMADDR_PORT_ANY {
        // Only a bind that would be allowed may end another socket's wait: an unprivileged
        // bind of a privileged port must fail without touching its holder.
        bind_allowed(&global().lock(), addr)?;
        crate::close::reclaim_lingering(sk, addr);
    }
    do_bind(sk, addr)
}

fn auto_bind(sk: Sk) -> Result {
    if vsk(sk).st.lock().local.port != VMADDR_PORT_ANY {
        return Ok(());
    }
    do_bind(sk, Addr { cid: VMADDR_CID_ANY, port: VMADDR_PORT_ANY })
}

/// getsockname/getpeername.
pub(crate) fn getname(sk: Sk, peer: bool) -> Result<[u8; 16]> {
    let _g = sk.lock();
    let s = vsk(sk).st.lock();
    if peer {
        if s.ss != ss::CONNECTED {
            return Err(errno!(ENOTCONN));
        }
        Ok(encode_addr(s.remote, s.remote_flags))
    } else {
        Ok(encode_addr(s.local, 0))
    }
}

/// listen(2).
pub(crate) fn listen(sk: Sk, backlog: i32) -> Result {
    let _g = sk.lock();
    let mut s = vsk(sk).st.lock();
    if s.ss != ss::UNCONNECTED {
        return Err(EINVAL);
    }
    if s.local.port == VMADDR_PORT_ANY {
        return Err(EINVAL);
    }
    sk.set_max_ack_backlog(backlog.max(0) as u32);
    if s.conn.state() != State::Listen && !s.conn.listen() {
        return Err(EINVAL);
    }
    mirror(sk, &s);
    Ok(())
}

/// Picks and pins the transport for a connect to `s.remote` (in-tree
/// `vsock_assign_transport`).
fn assign_transport(sk: Sk) -> Result {
    let fallback = crate::netns::g2h_fallback(sk);
    let ns = vsk(sk).ns;
    let g = global().lock();
    let mut s = vsk(sk).st.lock();
    let to_host = s.remote_flags & FLAG_TO_HOST != 0;
    let (t, via_host) = g.pick_transport(s.remote.cid, to_host, ns, fallback).ok_or(ENODEV)?;
    // The guest side of vsock is global (in-tree 7.x: the G2H transport's `stream_allow`
    // refuses sockets of local namespaces, and before it, for SEQPACKET, its
    // `seqpacket_allow`: ESOCKTNOSUPPORT).
    if t.get().kind == crate::abi::TRANSPORT_G2H && ns & crate::abi::NS_LOCAL != 0 {
        return Err(if sock_type(sk) == SockType::Seqpacket { errno!(ESOCKTNOSUPPORT) } else { errno!(ENETUNREACH) });
    }
    if via_host {
        s.remote_flags |= FLAG_TO_HOST;
    }
    if let Some(cur) = &s.transport {
        if cur.ptr().0 == t.0 {
            return Ok(());
        }
    }
    let r = TransportRef::get(t).ok_or(ENODEV)?;
    if sock_type(sk) == SockType::Seqpacket && !r.seqpacket_allow(s.remote.cid, ns) {
        return Err(errno!(ESOCKTNOSUPPORT));
    }
    let old = s.transport.replace(r);
    // The transport's limit on the buffer size applies from now on (in-tree
    // `virtio_transport_do_socket_init` clamps at assignment).
    s.buffer_size = s.buffer_size.min(u64::from(crate::proto::hdr::MAX_BUF_SIZE));
    drop(s);
    drop(g);
    drop(old);
    Ok(())
}

/// connect(2).
pub(crate) fn connect(sk: Sk, raw: &[u8], nonblock: bool) -> Result {
    let g = sk.lock();
    let cur = vsk(sk).st.lock().ss;
    let err;
    match cur {
        ss::CONNECTED => return Err(errno!(EISCONN)),
        ss::DISCONNECTING => return Err(EINVAL),
        ss::CONNECTING => {
            if nonblock {
                return Err(errno!(EALREADY));
            }
            err = Err(errno!(EALREADY));
        }
        _ => {
            let (addr, flags) = parse_addr(raw).map_err(|_| EINVAL)?;
            if sk.state() == state::LISTEN {
                return Err(EINVAL);
            }
            {
                let mut s = vsk(sk).st.lock();
                s.remote = addr;
                s.remote_flags = flags;
            }
            assign_transport(sk)?;
            auto_bind(sk)?;
            // An earlier attempt's timer may still be pending (an interrupted connect arms
            // one, and the peer's RST ended that attempt without it): it must not end this
            // one at the old deadline. (One already running waits for the socket lock we
            // hold and then ends this attempt; in-tree's mod_delayed_work has that window
            // too.)
            cancel_connect_timer(sk);
            let out = {
                let mut s = vsk(sk).st.lock();
                // A previous attempt may have failed: start from a clean slate.
                if matches!(s.conn.state(), State::Closing) || s.conn.is_done() {
                    s.conn = fresh_conn(sk, s.buffer_size);
                }
                let c = s.conn.connect();
                sk.set_err(0);
                mirror(sk, &s);
                s.ss = ss::CONNECTING;
                c.and_then(|c| s.ctl(c, None))
            };
            let sent = match out {
                Some(o) => o.send(sk),
                None => Err(EINVAL),
            };
            if let Err(e) = sent {
                // The request never left (in-tree: the transport's connect fails, e.g. ENODEV
                // for a CID without a device): fail now instead of waiting for the timeout.
                let mut s = vsk(sk).st.lock();
                s.conn = fresh_conn(sk, s.buffer_size);
                s.ss = ss::UNCONNECTED;
                mirror(sk, &s);
                return Err(e);
            }
            err = Err(errno!(EINPROGRESS));
        }
    }
    let mut timeout = vsk(sk).st.lock().connect_timeout as c_long;
    if nonblock {
        // A non-blocking connect answers EINPROGRESS even when the reply was delivered in
        // place (loopback) and the outcome is already known: in-tree it always is, and the
        // result is then read with poll + SO_ERROR.
        if sk.state() != state::ESTABLISHED && sk.err() == 0 {
            arm_connect_timeout(sk, timeout as u64);
        }
        return err;
    }
    // Done once the RESPONSE came (`ss` CONNECTED), even if the peer has closed or reset
    // since: packets are delivered in place, so RESPONSE and the peer's SHUTDOWN can both
    // land before this task runs; the caller then reads EOF, as with TCP.
    let done = || sk.state() == state::ESTABLISHED || sk.err() != 0 || vsk(sk).st.lock().ss == ss::CONNECTED;
    loop {
        if done() {
            break;
        }
        timeout = sk.wait(&g, timeout, done);
        // An established connection wins over a signal or a timeout that came with it:
        // reporting EINTR/ETIMEDOUT for a connection the peer has accepted would leave it
        // half-open (upstream CVE-2025-40248 class).
        if done() {
            break;
        }
        let sig = net::signal_pending();
        if sig || timeout == 0 {
            let mut s = vsk(sk).st.lock();
            // Decided under the lock the receive path takes: the RESPONSE (or an RST) may have
            // been handled on another CPU since `done()` above, and then it wins. Going on
            // would mark an established connection unconnected, and the retried connect()
            // found it neither connecting nor new (EINVAL).
            if s.ss == ss::CONNECTED || sk.err() != 0 {
                break;
            }
            if timeout != 0 {
                // Interrupted (EINTR), with time left: the handshake goes on, as TCP's does.
                // A retried connect() waits for the same RESPONSE (`ss` CONNECTING), poll and
                // SO_ERROR tell the outcome, the connect timer ends it. In-tree goes back to
                // unconnected: the peer's RESPONSE then meets a closed socket and is answered
                // with an RST that closes the peer's new connection, and the retry's REQUEST,
                // from the same port, reaches that closed connection and is reset. io_uring
                // interrupts a connect without any signal (task work for a zero-copy
                // completion); upstream vsock_uring_test failed so.
                drop(s);
                arm_connect_timeout(sk, timeout as u64);
                return Err(net::intr_errno(timeout));
            }
            // Timed out: back to unconnected, keeping the binding and the transport so that
            // user space may retry. A RESPONSE that comes later is answered with an RST.
            let _ = s.conn.connect_timeout();
            s.ss = ss::UNCONNECTED;
            mirror(sk, &s);
            drop(s);
            unhash_connected(sk);
            cancel_queued(sk);
            return Err(errno!(ETIMEDOUT));
        }
    }
    let e = sk.err();
    if e != 0 {
        sk.set_err(0);
        let mut s = vsk(sk).st.lock();
        s.ss = ss::UNCONNECTED;
        sk.set_state(state::CLOSE);
        return Err(Error::from_errno(-e));
    }
    Ok(())
}

fn unhash_connected(sk: Sk) {
    let r = {
        let mut g = global().lock();
        let mut s = vsk(sk).st.lock();
        s.connected_key.take().and_then(|(r, l)| g.remove_connected(sk, r, l))
    };
    drop(r);
}

/// Cancels a pending connect timer and drops the reference it held.
pub(crate) fn cancel_connect_timer(sk: Sk) {
    if vsk(sk).connect_work.cancel() {
        vsk(sk).st.lock().connect_armed = false;
        // SAFETY: the timer's reference, leaked in `arm_connect_timeout`; cancelling the
        // pending timer handed it to us. The caller's own reference keeps the socket.
        drop(unsafe { SkRef::from_raw(sk.as_ptr()) });
    }
}

fn arm_connect_timeout(sk: Sk, timeout: u64) {
    let mut s = vsk(sk).st.lock();
    if s.connect_armed {
        // This handshake's timer (a retried connect of an interrupted one): its deadline
        // stands.
        return;
    }
    s.connect_armed = true;
    let r = sk.hold().into_raw();
    let _ = r;
    vsk(sk).connect_work.schedule(timeout);
}

pub(crate) unsafe extern "C" fn connect_work_fn(w: *mut ffi::work_struct) {
    // SAFETY: `w` is the work item of `VSock::connect_work`, embedded in a live VSock whose
    // reference the timer holds (taken in `arm_connect_timeout`).
    let sk = unsafe {
        let dw = DelayedWork::from_work(w);
        let p = (dw as *mut u8).sub(core::mem::offset_of!(VSock, connect_work)) as *mut ffi::sock;
        SkRef::from_raw(p)
    };
    let s_ = sk.sk();
    let _g = s_.lock();
    let mut s = vsk(s_).st.lock();
    s.connect_armed = false;
    if s.conn.state() == State::Connecting && s.conn.local_shutdown() != net::SHUTDOWN_MASK {
        let a = s.conn.connect_timeout();
        s.ss = ss::UNCONNECTED;
        let after = apply(s_, &mut s, &a, None);
        drop(s);
        run_after(s_, after);
        cancel_queued(s_);
    }
}

/// A connect that timed out (or a connecting socket closed) takes back what its transport
/// still queues for the peer (its REQUEST), as in-tree's `vsock_transport_cancel_pkt`: a
/// guest that took it late would accept a connection the host has given up. Called with the
/// socket lock held, which keeps the socket's transport (and its module) while the callback
/// runs; no spinlock held.
pub(crate) fn cancel_queued(sk: Sk) {
    let (t, cid) = {
        let s = vsk(sk).st.lock();
        match &s.transport {
            Some(r) => (r.ptr(), s.remote.cid),
            None => return,
        }
    };
    if let Some(f) = t.get().cancel_pkt {
        // SAFETY: the transport's own callback with its own descriptor, pinned as above.
        unsafe { f(t.0, sk.as_ptr().cast(), cid, vsk(sk).ns) };
    }
}

/// accept(2): returns the child socket (referenced), grafted onto `newsock` by the caller.
pub(crate) fn accept(sk: Sk, nonblock: bool) -> Result<SkRef> {
    let g = sk.lock();
    if sk.state() != state::LISTEN {
        return Err(EINVAL);
    }
    let mut timeout = sk.rcvtimeo(nonblock);
    loop {
        let child = {
            let mut s = vsk(sk).st.lock();
            let c = vec_pop_front(&mut s.accept_q);
            if c.is_some() {
                // Under the lock that `new_child` counts under (rx.rs).
                sk.acceptq_removed();
            }
            c
        };
        if let Some(c) = child {
            // The listener's own error (e.g. the ETIMEDOUT of a non-blocking connect it made
            // before listen(), never read) does not fail the accept: in-tree (6.12, 7.3)
            // ignores it here too. Failing it left the child established and unserved.
            vsk(c.sk()).st.lock().ss = ss::CONNECTED;
            return Ok(c);
        }
        if timeout == 0 {
            return Err(EAGAIN);
        }
        timeout = sk.wait(&g, timeout, || !vsk(sk).st.lock().accept_q.is_empty());
        if net::signal_pending() {
            return Err(net::intr_errno(timeout));
        }
        if timeout == 0 && vsk(sk).st.lock().accept_q.is_empty() {
            return Err(EAGAIN);
        }
    }
}
