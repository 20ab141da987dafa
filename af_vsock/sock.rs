// SPDX-License-Identifier: GPL-2.0
//! The vsock socket: `VSock` extends `struct sock` with the connection state (`VState`,
//! under one spinlock), and implements every socket call of AF_VSOCK STREAM and SEQPACKET
//! sockets on top of the protocol crate's [`Conn`] state machine.
//!
//! Locks: `lock_sock` (the socket lock) serialises the system calls of one socket and is
//! dropped while they sleep; `VSock::st` (a spinlock) protects the connection state and is
//! what the receive path takes, so packets can be delivered in the sender's context. A
//! transport's `send_pkt` is never called with `st` held.

use crate::abi::{RawTransport, TRANSPORT_F_SEQPACKET};
use crate::ffi;
use crate::net::{self, state, DelayedWork, Msg, Sk, SkRef, SockGuard};
use crate::pkt::{Pkt, PktQueue};
use crate::proto::conn::{Actions, Conn, Ctl, State};
use crate::proto::hdr::{
    Addr, Hdr, SockType, DEFAULT_BUF_MAX_SIZE, DEFAULT_BUF_MIN_SIZE, DEFAULT_BUF_SIZE, MAX_PKT_BUF_SIZE,
    SEQ_EOM, SEQ_EOR, VMADDR_CID_ANY, VMADDR_PORT_ANY,
};
use crate::table::{global, vec_pop_front, TransportPtr};
use kernel::ffi::c_long;
use kernel::prelude::*;
use kernel::sync::SpinLock;

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
        // SAFETY: `t` is registered (caller holds the global lock), so `owner` is valid.
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

    /// Whether SEQPACKET may be used towards `cid`.
    pub(crate) fn seqpacket_allow(&self, cid: u32) -> bool {
        let t = self.0.get();
        match t.seqpacket_allow {
            // SAFETY: the transport's own callback, its descriptor pinned by our module ref.
            Some(f) => unsafe { f(self.0 .0, cid) },
            None => t.features & TRANSPORT_F_SEQPACKET != 0,
        }
    }

}

/// Sends a packet on a transport (consumed).
pub(crate) fn send_on(t: TransportPtr, p: Pkt) -> Result {
    // SAFETY: `t` is registered or pinned by the caller; `send_pkt` takes ownership of `p`.
    let r = unsafe { (t.get().send_pkt)(t.0, p.into_raw()) };
    if r < 0 { Err(Error::from_errno(r)) } else { Ok(()) }
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
    /// Listener: established children waiting for accept().
    pub(crate) accept_q: KVec<SkRef>,
    /// Whether the socket is in the bound table.
    pub(crate) bound: bool,
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
    /// Accepted after the listener failed: to be dropped.
    pub(crate) rejected: bool,
    /// The delayed close is armed (the timer holds a socket reference).
    pub(crate) close_armed: bool,
    /// The connect timeout is armed (the timer holds a socket reference).
    pub(crate) connect_armed: bool,
}

/// Our socket: `struct sock` first, so a `struct sock *` of our proto is a `VSock *`.
///
/// # Invariants
/// Allocated by `sk_alloc` with `obj_size == size_of::<VSock>()` and initialised by
/// [`VSock::init`] before first use; the Rust fields are dropped by `destruct`.
#[repr(C)]
pub(crate) struct VSock {
    sk: ffi::sock,
    /// Connection state.
    pub(crate) st: SpinLock<VState>,
    close_work: DelayedWork,
    connect_work: DelayedWork,
}

/// The `VSock` of a socket of our proto.
pub(crate) fn vsk(sk: Sk) -> &'static VSock {
    // SAFETY: every `Sk` is a socket of our proto (type invariant of `Sk`), whose memory is a
    // `VSock` (type invariant of `VSock`). The reference is only used while the caller keeps
    // the socket alive; the 'static lifetime is a simplification of that rule.
    unsafe { &*(sk.as_ptr() as *const VSock) }
}

fn sock_type(sk: Sk) -> SockType {
    if sk.ty() == net::SOCK_SEQPACKET { SockType::Seqpacket } else { SockType::Stream }
}

impl VSock {
    /// Initialises the Rust part of a freshly allocated socket (`parent`: listener whose
    /// settings a child inherits).
    ///
    /// # Safety
    /// `sk` was just returned by `sk_alloc` for our proto and is not yet visible to others.
    pub(crate) unsafe fn init(sk: Sk, parent: Option<&VState>) -> Result {
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
        let st = VState {
            conn: Conn::new(sock_type(sk), bs),
            local: Addr { cid: VMADDR_CID_ANY, port: VMADDR_PORT_ANY },
            remote: Addr { cid: VMADDR_CID_ANY, port: VMADDR_PORT_ANY },
            remote_flags: 0,
            ss: ss::UNCONNECTED,
            transport: None,
            rxq: PktQueue::new(),
            accept_q: KVec::new(),
            bound: false,
            connected_key: None,
            buffer_size: bs,
            buffer_min: bmin,
            buffer_max: bmax,
            connect_timeout: cto,
            rejected: false,
            close_armed: false,
            connect_armed: false,
        };
        let init = kernel::new_spinlock!(st, "rvsock_sock");
        // SAFETY: `p` is our freshly allocated, exclusively owned socket; the fields are
        // uninitialised (zeroed) memory that we initialise in place exactly once.
        unsafe {
            init.__pinned_init(core::ptr::addr_of_mut!((*p).st)).map_err(|_| ENOMEM)?;
            DelayedWork::init(core::ptr::addr_of_mut!((*p).close_work), close_work_fn);
            DelayedWork::init(core::ptr::addr_of_mut!((*p).connect_work), connect_work_fn);
        }
        Ok(())
    }

    /// Drops the Rust part (from `sk_destruct`, last reference gone).
    ///
    /// # Safety
    /// Called once, when no other reference to the socket exists.
    pub(crate) unsafe fn destruct(sk: Sk) {
        let p = sk.as_ptr() as *mut VSock;
        // SAFETY: per the contract nobody else uses the socket; `st` was initialised by `init`.
        unsafe { core::ptr::drop_in_place(core::ptr::addr_of_mut!((*p).st)) };
    }


    /// Whether the socket uses transport `t`.
    pub(crate) fn uses_transport(&self, t: *const RawTransport) -> bool {
        self.st.lock().transport.as_ref().map(|r| r.ptr().0) == Some(t)
    }
}

/// A packet to send after the state lock is dropped.
pub(crate) struct Out {
    t: TransportPtr,
    h: Hdr,
}

impl Out {
    /// Sends it. An allocation failure drops the control packet (as in-tree does on OOM)
    /// and counts as sent; a transport error (e.g. -ENODEV: no device for the CID) is
    /// returned, and only `connect` acts on it.
    pub(crate) fn send(self) -> Result {
        match Pkt::alloc(0, false) {
            Ok(mut p) => {
                p.set_hdr(&self.h);
                send_on(self.t, p)
            }
            Err(_) => Ok(()),
        }
    }
}

/// Source address of our packets: the bound CID, or the transport's own.
fn src_addr(s: &VState, t: &TransportRef) -> Addr {
    let cid = if s.local.cid == VMADDR_CID_ANY { t.local_cid() } else { s.local.cid };
    Addr { cid, port: s.local.port }
}

impl VState {
    /// A stamped control packet to our peer, if we have a transport.
    pub(crate) fn ctl(&mut self, c: Ctl, reply_to: Option<&Hdr>) -> Option<Out> {
        let t = self.transport.as_ref()?;
        let tp = t.ptr();
        let h = match (c, reply_to) {
            (Ctl::RstReply, Some(h)) => crate::proto::hdr::rst_reply(h)?,
            _ => {
                let src = src_addr(self, t);
                self.conn.packet(c, src, self.remote)
            }
        };
        Some(Out { t: tp, h })
    }

    fn readable_bytes(&self) -> u32 {
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
    sk.set_state(st);
    sk.set_shutdown(s.conn.local_shutdown());
    if s.conn.is_done() {
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
        let _ = o.send();
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

/// Removes the socket from the bound and connected tables.
pub(crate) fn unhash(sk: Sk) {
    let mut drops: [Option<SkRef>; 2] = [None, None];
    {
        let mut g = global().lock();
        let mut s = vsk(sk).st.lock();
        if s.bound {
            s.bound = false;
            drops[0] = g.remove_bound(sk, s.local.port);
        }
        if let Some((r, l)) = s.connected_key.take() {
            drops[1] = g.remove_connected(sk, r, l);
        }
    }
    drop(drops);
}

fn purge_rx(sk: Sk) {
    let q = core::mem::replace(&mut vsk(sk).st.lock().rxq, PktQueue::new());
    drop(q);
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
// Socket calls.

/// bind(2) core (`addr` already validated as a sockaddr_vm).
fn do_bind(sk: Sk, addr: Addr) -> Result {
    let mut g = global().lock();
    let mut s = vsk(sk).st.lock();
    if s.local.port != VMADDR_PORT_ANY {
        return Err(EINVAL);
    }
    if addr.cid != VMADDR_CID_ANY && !g.is_local_cid(addr.cid) {
        return Err(errno!(EADDRNOTAVAIL));
    }
    let port = if addr.port == VMADDR_PORT_ANY {
        g.pick_port(addr.cid).ok_or(errno!(EADDRNOTAVAIL))?
    } else {
        if addr.port <= crate::proto::hdr::LAST_RESERVED_PORT && !net::capable_net_bind() {
            return Err(EACCES);
        }
        if g.find_bound(addr).is_some() {
            return Err(errno!(EADDRINUSE));
        }
        addr.port
    };
    let a = Addr { cid: addr.cid, port };
    g.insert_bound(a, sk)?;
    s.local = a;
    s.bound = true;
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
        reclaim_lingering(sk, addr);
    }
    do_bind(sk, addr)
}

/// If `addr` is held by a closed socket that only waits for its peer's RST (it sent
/// SHUTDOWN both ways, its file is gone, the close timer is armed), ends that wait now as
/// the close timeout would (RST to the peer, unhash), so the port can be bound again.
///
/// In-tree answers EADDRINUSE until the RST arrives or the 8 s timer fires; an application
/// that closes, hears from its peer on another channel and binds the same port again
/// (upstream vsock_test `double_bind_connect`) then depends on which of the two messages
/// the peer's machine delivers first. Nothing can reach the closed socket any more, so
/// finishing its close early changes nothing else.
fn reclaim_lingering(me: Sk, addr: Addr) {
    let Some(old) = global().lock().find_bound(addr).cloned() else { return };
    let o = old.sk();
    if o.as_ptr() == me.as_ptr() || !o.flag(net::SOCK_DEAD) {
        return;
    }
    {
        let s = vsk(o).st.lock();
        if !s.close_armed || s.conn.local_shutdown() != net::SHUTDOWN_MASK || s.conn.is_done() {
            return;
        }
    }
    // Cancelling the pending timer hands us its reference; a timer already running finishes
    // the close itself.
    if !vsk(o).close_work.cancel() {
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
    let g = global().lock();
    let mut s = vsk(sk).st.lock();
    let to_host = s.remote_flags & FLAG_TO_HOST != 0;
    let t = g.pick_transport(s.remote.cid, to_host).ok_or(ENODEV)?;
    if let Some(cur) = &s.transport {
        if cur.ptr().0 == t.0 {
            return Ok(());
        }
    }
    let r = TransportRef::get(t).ok_or(ENODEV)?;
    if sock_type(sk) == SockType::Seqpacket && !r.seqpacket_allow(s.remote.cid) {
        return Err(errno!(ESOCKTNOSUPPORT));
    }
    let old = s.transport.replace(r);
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
            let out = {
                let mut s = vsk(sk).st.lock();
                // A previous attempt may have failed: start from a clean slate.
                if matches!(s.conn.state(), State::Closing) || s.conn.is_done() {
                    s.conn = Conn::new(sock_type(sk), s.buffer_size);
                }
                let c = s.conn.connect();
                sk.set_err(0);
                mirror(sk, &s);
                s.ss = ss::CONNECTING;
                c.and_then(|c| s.ctl(c, None))
            };
            let sent = match out {
                Some(o) => o.send(),
                None => Err(EINVAL),
            };
            if let Err(e) = sent {
                // The request never left (in-tree: the transport's connect fails, e.g. ENODEV
                // for a CID without a device): fail now instead of waiting for the timeout.
                let mut s = vsk(sk).st.lock();
                s.conn = Conn::new(sock_type(sk), s.buffer_size);
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
        if net::signal_pending() {
            let mut s = vsk(sk).st.lock();
            let a = s.conn.connect_timeout();
            let _ = a;
            s.ss = ss::UNCONNECTED;
            mirror(sk, &s);
            drop(s);
            unhash_connected(sk);
            return Err(net::intr_errno(timeout));
        }
        if !done() && timeout == 0 {
            let mut s = vsk(sk).st.lock();
            let _ = s.conn.connect_timeout();
            sk.set_err(0);
            s.ss = ss::UNCONNECTED;
            mirror(sk, &s);
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

fn arm_connect_timeout(sk: Sk, timeout: u64) {
    let mut s = vsk(sk).st.lock();
    if s.connect_armed {
        return;
    }
    s.connect_armed = true;
    let r = sk.hold().into_raw();
    let _ = r;
    vsk(sk).connect_work.schedule(timeout);
}

unsafe extern "C" fn connect_work_fn(w: *mut ffi::work_struct) {
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
    }
}

unsafe extern "C" fn close_work_fn(w: *mut ffi::work_struct) {
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

/// accept(2): returns the child socket (referenced), grafted onto `newsock` by the caller.
pub(crate) fn accept(sk: Sk, nonblock: bool) -> Result<SkRef> {
    let g = sk.lock();
    if sk.state() != state::LISTEN {
        return Err(EINVAL);
    }
    let mut timeout = sk.rcvtimeo(nonblock);
    loop {
        let child = vec_pop_front(&mut vsk(sk).st.lock().accept_q);
        if let Some(c) = child {
            sk.acceptq_removed();
            let e = sk.err();
            if e != 0 {
                vsk(c.sk()).st.lock().rejected = true;
                return Err(Error::from_errno(-e));
            }
            vsk(c.sk()).st.lock().ss = ss::CONNECTED;
            return Ok(c);
        }
        let e = sk.err();
        if e != 0 {
            return Err(Error::from_errno(-e));
        }
        if timeout == 0 {
            return Err(EAGAIN);
        }
        timeout = sk.wait(&g, timeout, || !vsk(sk).st.lock().accept_q.is_empty() || sk.err() != 0);
        if net::signal_pending() {
            return Err(net::intr_errno(timeout));
        }
        if timeout == 0 && vsk(sk).st.lock().accept_q.is_empty() {
            return Err(EAGAIN);
        }
    }
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
        let _ = o.send();
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
        let r = s.conn.release();
        mirror(sk, &s);
        let out = r.send.and_then(|c| s.ctl(c, None));
        (children, (r.wait_for_peer, out))
    };
    // Listener: reset every child nobody accepted.
    for c in children.iter() {
        sk.acceptq_removed();
        release_child(c.sk());
    }
    drop(children);
    if let Some(o) = r.1 {
        let _ = o.send();
    }
    let mut wait_for_peer = r.0;
    if wait_for_peer && sk.flag(net::SOCK_LINGER) {
        let mut t = sk.lingertime();
        while t > 0 && !vsk(sk).st.lock().conn.is_done() && !net::signal_pending() {
            t = sk.wait(&g, t, || vsk(sk).st.lock().conn.is_done());
        }
        wait_for_peer = !vsk(sk).st.lock().conn.is_done();
    }
    sk.orphan();
    if wait_for_peer {
        let mut s = vsk(sk).st.lock();
        if s.conn.start_close_timer() && !s.close_armed {
            s.close_armed = true;
            drop(s);
            let _ = sk.hold().into_raw();
            vsk(sk).close_work.schedule(net::msecs_to_jiffies(crate::proto::hdr::CLOSE_TIMEOUT_MS));
            purge_rx(sk);
            drop(g);
            return;
        }
    }
    drop(g);
    purge_rx(sk);
    unhash(sk);
    // A pending connect timeout holds a reference; cancel it (the fn would do nothing).
    if vsk(sk).connect_work.cancel() {
        vsk(sk).st.lock().connect_armed = false;
        // SAFETY: the timer's reference, leaked in `arm_connect_timeout`.
        drop(unsafe { SkRef::from_raw(sk.as_ptr()) });
    }
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
        let _ = o.send();
    }
    purge_rx(c);
    unhash(c);
}

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
        Err(e) if e == EPIPE && !seq && flags & ffi::MSG_NOSIGNAL == 0 => {
            // SAFETY: `sk_stream_error` only sends SIGPIPE to current and returns the error.
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
        if s.transport.is_none() || sk.state() != state::ESTABLISHED || s.local.port == VMADDR_PORT_ANY {
            return Err(errno!(ENOTCONN));
        }
        if seq && len as u64 > s.conn.tx().buf_size() as u64 {
            return Err(errno!(EMSGSIZE));
        }
    }
    let mut timeout = sk.sndtimeo(flags & ffi::MSG_DONTWAIT != 0);
    // MSG_ZEROCOPY counts only once SO_ZEROCOPY is on (in-tree behaviour).
    let zc = if flags & ffi::MSG_ZEROCOPY != 0 && sk.flag(net::SOCK_ZEROCOPY) {
        let (credit, pages_ok) = {
            let s = vsk(sk).st.lock();
            let f = s.transport.as_ref().map(|t| t.ptr().get().features).unwrap_or(0);
            (s.conn.has_space(), f & crate::abi::TRANSPORT_F_ZEROCOPY != 0)
        };
        Some(crate::zerocopy::ZcSend::begin(sk, msg, len, credit, pages_ok)?)
    } else {
        None
    };
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
                (s.conn.has_space(), stop)
            };
            if space > 0 || stop {
                break;
            }
            if timeout == 0 {
                err = Err(EAGAIN);
                break;
            }
            timeout = sk.wait(g, timeout, || {
                let s = vsk(sk).st.lock();
                s.conn.has_space() > 0 || sk.err() != 0 || s.conn.peer_shutdown() & net::RCV_SHUTDOWN != 0
            });
            if net::signal_pending() {
                err = Err(net::intr_errno(timeout));
                break;
            }
            if timeout == 0 && vsk(sk).st.lock().conn.has_space() == 0 {
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
        }
        match send_chunk(sk, msg, total - sent, seq, flags, zc.as_ref().filter(|z| z.zerocopy)) {
            Ok(n) => sent += n,
            Err(e) => {
                err = Err(e);
                break;
            }
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

/// Sends up to `want` bytes (bounded by credit and the packet size) as one packet.
fn send_chunk(
    sk: Sk,
    msg: &mut Msg,
    want: usize,
    seq: bool,
    flags: u32,
    zc: Option<&crate::zerocopy::ZcSend>,
) -> Result<usize> {
    // Inline packets stay within one 64 KiB allocation, header included.
    let max = want.min(MAX_PKT_BUF_SIZE as usize - core::mem::size_of::<crate::abi::RawPkt>()) as u32;
    let mut n = vsk(sk).st.lock().conn.take_credit(max);
    if n == 0 {
        return Ok(0);
    }
    let mut p = match Pkt::alloc(if zc.is_some() { 0 } else { n }, false) {
        Ok(p) => p,
        Err(e) => {
            vsk(sk).st.lock().conn.put_back_credit(n);
            return Err(e);
        }
    };
    let filled = match zc {
        Some(z) => z.fill(&mut p, msg, n as usize).map(|got| got as u32),
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
        tp
    };
    send_on(t, p)?;
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
    {
        let s = vsk(sk).st.lock();
        if s.transport.is_none() || sk.state() != state::ESTABLISHED {
            return if sk.flag(net::SOCK_DONE) { Ok(0) } else { Err(errno!(ENOTCONN)) };
        }
    }
    if flags & ffi::MSG_OOB != 0 {
        return Err(errno!(EOPNOTSUPP));
    }
    if sk.shutdown() & net::RCV_SHUTDOWN != 0 || len == 0 {
        return Ok(0);
    }
    if sock_type(sk) == SockType::Stream {
        stream_recv(sk, &g, msg, len, flags)
    } else {
        seq_recv(sk, &g, msg, len, flags)
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

fn stream_peek(sk: Sk, msg: &mut Msg, len: usize) -> Result<usize> {
    // Peek copies under the state lock would fault-sleep; take the whole queue out instead
    // (only this reader, under lock_sock, removes packets), copy, and put it back in front.
    let mut q = core::mem::replace(&mut vsk(sk).st.lock().rxq, PktQueue::new());
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
    {
        let mut s = vsk(sk).st.lock();
        // New packets may have arrived meanwhile: append them after ours.
        while let Some(p) = s.rxq.pop_front() {
            q.push_back(p);
        }
        s.rxq = q;
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
            vsk(sk).st.lock().rxq.push_front(p);
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
        let out = {
            let mut s = vsk(sk).st.lock();
            if let Some(p) = rest {
                s.rxq.push_front(p);
            }
            let c = s.conn.on_consume(n as u32);
            c.and_then(|c| s.ctl(c, None))
        };
        if let Some(o) = out {
            let _ = o.send();
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
    let mut q = core::mem::replace(&mut vsk(sk).st.lock().rxq, PktQueue::new());
    let mut msg_len = 0usize;
    let mut copied = 0usize;
    let mut eor = false;
    let mut res = Ok(());
    if peek {
        q.for_each(|p| {
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
        });
    } else {
        while let Some(p) = q.pop_front() {
            let rem = p.remaining() as usize;
            let n = rem.min(len.saturating_sub(copied));
            if n > 0 && res.is_ok() {
                if let Err(e) = copy_pkt(&p, n, msg) {
                    res = Err(e);
                }
                copied += n;
            }
            msg_len += rem;
            let f = p.hdr().flags;
            if f & SEQ_EOM != 0 {
                eor = f & SEQ_EOR != 0;
                break;
            }
        }
    }
    let out = {
        let mut s = vsk(sk).st.lock();
        while let Some(p) = s.rxq.pop_front() {
            q.push_back(p);
        }
        s.rxq = q;
        if peek {
            None
        } else {
            let c = s.conn.on_seq_consume(msg_len as u32);
            c.and_then(|c| s.ctl(c, None))
        }
    };
    if let Some(o) = out {
        let _ = o.send();
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
    if s.transport.is_some() && st == state::ESTABLISHED && shut & net::SEND_SHUTDOWN == 0 && s.conn.has_space() > 0 {
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
    Ok(if inq { s.conn.has_data() as i32 } else { s.conn.tx().unsent() as i32 })
}

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
        if size > s.buffer_max {
            size = s.buffer_max;
        }
        if size < s.buffer_min {
            size = s.buffer_min;
        }
        let size = size.min(crate::proto::hdr::MAX_BUF_SIZE as u64);
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

/// SO_RCVLOWAT changed: the peer may need a credit update to fill the new watermark.
pub(crate) fn rcvlowat_changed(sk: Sk, lowat: i32) {
    let out = {
        let mut s = vsk(sk).st.lock();
        let c = s.conn.set_rcvlowat(lowat.max(0) as u32);
        c.and_then(|c| s.ctl(c, None))
    };
    if let Some(o) = out {
        let _ = o.send();
    }
}


/// Resets a connection from our side because its transport or peer went away (device
/// reset, VMM exit, transport unload): readers and writers see errno!(ECONNRESET).
pub(crate) fn reset(sk: Sk) {
    let after = {
        let mut s = vsk(sk).st.lock();
        if s.conn.is_done() {
            return;
        }
        let h = s.ctl(Ctl::Rst, None).map(|o| o.h);
        let mut a = Actions::default();
        if let Some(h) = h {
            // Feed ourselves the peer's RST: the state machine closes as if the peer reset.
            let ctx = crate::proto::hdr::ValidateCtx { seqpacket: true, ..Default::default() };
            let mut rh = h;
            core::mem::swap(&mut rh.src_cid, &mut rh.dst_cid);
            core::mem::swap(&mut rh.src_port, &mut rh.dst_port);
            if let Ok(v) = crate::proto::hdr::validate(&rh, &ctx) {
                a = s.conn.on_packet(&v, &rh);
            }
        }
        a.send = None;
        sk.set_err(errno!(ECONNRESET).to_errno().wrapping_neg());
        let mut after = apply(sk, &mut s, &a, None);
        after.error = true;
        after.state = true;
        after.unhash = true;
        after
    };
    run_after(sk, after);
}
