// SPDX-License-Identifier: GPL-2.0
//! Socket calls and events that take a connection down: shutdown(2), close (release, with
//! SO_LINGER and the close timeout of a socket waiting for its peer), children nobody
//! accepted, a bind that ends another socket's lingering close early, and resets from the
//! transport side.

use crate::ffi;
use crate::net::{self, DelayedWork, Sk, SkRef};
use crate::proto::conn::{Actions, Ctl, State};
use crate::proto::hdr::Addr;
use crate::sock::{apply, mirror, purge_rx, run_after, unhash, vsk, ss, VSock};
use crate::table::global;
use kernel::prelude::*;

/// If `addr` is held by a closed socket that only waits for its peer's RST (it sent
/// SHUTDOWN both ways, its file is gone, the close timer is armed), ends that wait now as
/// the close timeout would (RST to the peer, unhash), so the port can be bound again.
///
/// In-tree answers EADDRINUSE until the RST arrives or the 8 s timer fires; an application
/// that closes, hears from its peer on another channel and binds the same port again
/// (upstream vsock_test `double_bind_connect`) then depends on which of the two messages
/// the peer's machine delivers first. Nothing can reach the closed socket any more; but the
/// peer's RST it waited for is usually on its way already (the peer sends it when it sees our
/// SHUTDOWN, before it tells anyone), and it comes to the same address: `me` remembers that
/// peer (`VState::stale_rst`) so that the RST does not reset `me`'s connect() to it (a
/// nested `vsock_test` run failed so: `double bind connect...connect: Connection reset by
/// peer`, its server had accepted).
pub(crate) fn reclaim_lingering(me: Sk, addr: Addr) {
    let ns = vsk(me).ns;
    let Some(old) = global().lock().find_bound(addr, ns).cloned() else { return };
    let o = old.sk();
    if o.as_ptr() == me.as_ptr() || !o.flag(net::SOCK_DEAD) {
        return;
    }
    let (armed, lingering, done, peer) = {
        let s = vsk(o).st.lock();
        (s.close_armed, s.conn.local_shutdown() == net::SHUTDOWN_MASK, s.conn.is_done(), s.remote)
    };
    if !done && armed && lingering {
        vsk(me).st.lock().stale_rst = Some(peer);
    }
    if done {
        // Its close is over (the peer's RST came) and its unhash is about to run on the
        // path that finished it (receive path, timer) but may not have yet (a preemptible
        // kernel can stop that path in between): the binding is dead, drop it here.
        unhash(o);
        return;
    }
    if !armed || !lingering {
        return;
    }
    // Cancelling the pending timer hands us its reference. A timer that is already running
    // finishes the close itself; its unhash may come after our bind, so unhash now.
    if !vsk(o).close_work.cancel() {
        unhash(o);
        return;
    }
    // SAFETY: the timer's reference, leaked in `release` when it armed the timer.
    let timer_ref = unsafe { SkRef::from_raw(o.as_ptr()) };
    close_timed_out(o);
    drop(timer_ref);
}

/// The close timeout's work (the timer fired, or `reclaim_lingering` ended the wait early):
/// RST to the peer and finish the close. The caller holds the timer's reference, which is
/// not finish_close's to drop.
fn close_timed_out(sk: Sk) {
    let mut s = vsk(sk).st.lock();
    let mut a = s.conn.close_timeout();
    let fin = a.finish_close;
    a.finish_close = false;
    s.close_armed = false;
    let mut after = apply(sk, &mut s, &a, None);
    after.unhash |= fin;
    drop(s);
    if fin {
        purge_rx(sk);
    }
    run_after(sk, after);
}

pub(crate) unsafe extern "C" fn close_work_fn(w: *mut ffi::work_struct) {
    // SAFETY: `w` is the work item of `VSock::close_work`, embedded in a live VSock whose
    // reference the timer holds (taken in `release`).
    let sk = unsafe {
        let dw = DelayedWork::from_work(w);
        let p = (dw as *mut u8).sub(core::mem::offset_of!(VSock, close_work)) as *mut ffi::sock;
        SkRef::from_raw(p)
    };
    let s_ = sk.sk();
    let _g = s_.lock();
    close_timed_out(s_);
}

/// shutdown(2).
pub(crate) fn shutdown(sk: Sk, how: i32) -> Result {
    let mode = (how as u32).wrapping_add(1);
    if mode & !net::SHUTDOWN_MASK != 0 || mode == 0 {
        return Err(EINVAL);
    }
    let _g = sk.lock();
    let (out, ok) = {
        let mut s = vsk(sk).st.lock();
        if s.ss == ss::UNCONNECTED {
            return Err(errno!(ENOTCONN));
        }
        s.ss = ss::DISCONNECTING;
        let c = s.conn.shutdown(mode);
        mirror(sk, &s);
        sk.set_shutdown(sk.shutdown() | mode);
        (c.and_then(|c| s.ctl(c, None)), true)
    };
    if ok {
        sk.state_change();
    }
    if let Some(o) = out {
        let _ = o.send(sk);
    }
    Ok(())
}

/// close(2) of the socket (`struct socket` release).
pub(crate) fn release(sk: Sk) {
    let g = sk.lock();
    // Shut the socket down and take the accept queue in one step: the receive path re-checks
    // the shutdown under the same lock before queueing a child (`rx::new_child`), so no child
    // can land in a queue nobody will ever accept from.
    let (children, r) = {
        let mut s = vsk(sk).st.lock();
        let children = core::mem::replace(&mut s.accept_q, KVec::new());
        // Uncounted under the lock they were counted under (rx.rs `new_child`).
        for _ in children.iter() {
            sk.acceptq_removed();
        }
        let connecting = s.conn.state() == State::Connecting;
        let r = s.conn.release();
        mirror(sk, &s);
        let out = r.send.and_then(|c| s.ctl(c, None));
        (children, (r.wait_for_peer, out, connecting))
    };
    // Listener: reset every child nobody accepted.
    for c in children.iter() {
        release_child(c.sk());
    }
    drop(children);
    // A handshake given up (an interrupted connect, which goes on, or a non-blocking one):
    // its REQUEST, if the transport still queues it, is taken back as after a timeout.
    if r.2 {
        crate::connect::cancel_queued(sk);
    }
    if let Some(o) = r.1 {
        let _ = o.send(sk);
    }
    let mut wait_for_peer = r.0;
    if wait_for_peer && sk.flag(net::SOCK_LINGER) && !net::current_exiting() {
        // SO_LINGER waits until what we sent has left (SIOCOUTQ 0: the transport took it,
        // and a queueing one has freed it), not for the peer to read it or to close
        // (upstream semantics since 6.16: close() on unread data does not linger). Not in
        // an exiting task (as in-tree): after a SIGKILL no signal could end that wait.
        let unsent = || crate::sock::outq(sk, &vsk(sk).st.lock()) == 0;
        let mut t = sk.lingertime();
        while t > 0 && !unsent() && !net::signal_pending() {
            t = sk.wait(&g, t, unsent);
        }
        wait_for_peer = !vsk(sk).st.lock().conn.is_done();
    }
    sk.orphan();
    sk.purge_errqueue();
    if wait_for_peer {
        let mut s = vsk(sk).st.lock();
        if s.conn.start_close_timer() && !s.close_armed {
            s.close_armed = true;
            // Armed under the state lock: a RST handled on another CPU right after it (its
            // `finish_close` cancels the timer) must find the timer queued, or the closed
            // socket would wait the whole timeout to be freed.
            let _ = sk.hold().into_raw();
            vsk(sk).close_work.schedule(net::msecs_to_jiffies(crate::proto::hdr::CLOSE_TIMEOUT_MS));
            drop(s);
            purge_rx(sk);
            drop(g);
            return;
        }
    }
    drop(g);
    purge_rx(sk);
    unhash(sk);
    // A pending connect timeout holds a reference; cancel it (the fn would do nothing).
    crate::connect::cancel_connect_timer(sk);
}

/// Resets and unhashes a child that will never be accepted.
pub(crate) fn release_child(c: Sk) {
    let out = {
        let mut s = vsk(c).st.lock();
        let _ = s.conn.release();
        let o = s.ctl(Ctl::Rst, None);
        mirror(c, &s);
        o
    };
    if let Some(o) = out {
        let _ = o.send(c);
    }
    purge_rx(c);
    unhash(c);
}

/// Resets a connection from our side because its transport or peer went away (device
/// reset, VMM exit, transport unload): readers and writers see errno!(ECONNRESET).
pub(crate) fn reset(sk: Sk) {
    let after = {
        let mut s = vsk(sk).st.lock();
        let a = s.conn.reset();
        if a == Actions::default() {
            return;
        }
        apply(sk, &mut s, &a, None)
    };
    // Nothing queued is delivered after a reset (`Conn::reset` forgot it already).
    purge_rx(sk);
    run_after(sk, after);
}
