// SPDX-License-Identifier: GPL-2.0
//! sock_diag for AF_VSOCK, served by the core: `ss --vsock` and the upstream
//! `vsock_diag_test` see rvsock's sockets as they see in-tree ones (the same request and
//! `struct vsock_diag_msg` replies: type, state, shutdown, local and peer address, inode,
//! cookie; every socket of the requester's namespace, unbound ones included). Registered with
//! the family, so it is there whenever a vsock socket can exist (the kernel loads a sock_diag
//! module only for a registered family); the module also carries in-tree `vsock_diag`'s alias.
//!
//! Beyond in-tree: a request with `RVSOCK_DIAG_SHOW_CREDIT` in `vdiag_show` (a field in-tree
//! ignores) gets an `RVSOCK_DIAG_CREDIT` attribute after each message: the connection's
//! credit state ([`CreditInfo`], uapi layout in include/uapi/linux/rvsock_diag.h), so an
//! operator can see why a connection stalls. `rvsock-tests ss` reads it.

use crate::ffi;
use crate::family::KStatic;
use crate::net::{self, Sk};
use crate::netlink::{check_request, Dump};
use crate::sock::{vsk, VState};
use crate::table::{global, Table};
use kernel::ffi::c_int;
use kernel::prelude::*;

/// `vdiag_show` bit: add the credit attribute.
pub(crate) const SHOW_CREDIT: u32 = 1;
/// Attribute type of [`CreditInfo`].
pub(crate) const ATTR_CREDIT: u16 = 1;

/// [`CreditInfo::flags`]: closed, waiting for the peer's RST (the close timer runs).
pub(crate) const CREDIT_CLOSE_TIMER: u32 = 1 << 0;
/// A connect() is waiting for the RESPONSE (the connect timer runs).
pub(crate) const CREDIT_CONNECT_TIMER: u32 = 1 << 1;
/// The file is closed (`SOCK_DEAD`): only the kernel holds the socket.
pub(crate) const CREDIT_ORPHAN: u32 = 1 << 2;
/// The peer will send no more (its SHUTDOWN had SEND).
pub(crate) const CREDIT_PEER_SHUT_SEND: u32 = 1 << 3;
/// The peer will read no more (its SHUTDOWN had RCV).
pub(crate) const CREDIT_PEER_SHUT_RCV: u32 = 1 << 4;
/// The connection is over (RST sent or received).
pub(crate) const CREDIT_DONE: u32 = 1 << 5;

/// The credit state of one socket (uapi `struct rvsock_diag_credit`; all counters of the
/// virtio-vsock credit scheme wrap at 2^32).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct CreditInfo {
    /// The peer's receive buffer, as it last told us.
    pub(crate) peer_buf_alloc: u32,
    /// Bytes the peer's reader has consumed, as it last told us.
    pub(crate) peer_fwd_cnt: u32,
    /// Bytes we have sent (or reserved for sending).
    pub(crate) tx_cnt: u32,
    /// `tx_cnt - peer_fwd_cnt`: sent and not yet read by the peer.
    pub(crate) in_flight: u32,
    /// Reserved and not yet handed to the transport (SIOCOUTQ).
    pub(crate) unsent: u32,
    /// Our receive buffer size (what we advertise).
    pub(crate) buf_alloc: u32,
    /// Bytes our reader has consumed.
    pub(crate) fwd_cnt: u32,
    /// The `fwd_cnt` the peer last heard from us.
    pub(crate) last_fwd_cnt: u32,
    /// Bytes queued for our reader (SIOCINQ).
    pub(crate) rx_bytes: u32,
    /// Packets queued for our reader.
    pub(crate) rx_pkts: u32,
    /// Kernel memory charged for them.
    pub(crate) rx_mem: u32,
    /// Memory the queue may use before the connection is reset.
    pub(crate) rx_mem_budget: u32,
    /// Listener: children waiting for accept().
    pub(crate) accept_q: u32,
    /// `CREDIT_*` bits.
    pub(crate) flags: u32,
}

// The uapi struct is 14 __u32s.
const _: () = assert!(core::mem::size_of::<CreditInfo>() == 14 * 4);

fn credit_info(sk: Sk, s: &VState) -> CreditInfo {
    let (tx, rx) = (s.conn.tx(), s.conn.rx());
    let peer = s.conn.peer_shutdown();
    let mut flags = 0;
    for (on, bit) in [
        (s.close_armed, CREDIT_CLOSE_TIMER),
        (s.connect_armed, CREDIT_CONNECT_TIMER),
        (sk.flag(net::SOCK_DEAD), CREDIT_ORPHAN),
        (peer & net::SEND_SHUTDOWN != 0, CREDIT_PEER_SHUT_SEND),
        (peer & net::RCV_SHUTDOWN != 0, CREDIT_PEER_SHUT_RCV),
        (s.conn.is_done(), CREDIT_DONE),
    ] {
        if on {
            flags |= bit;
        }
    }
    CreditInfo {
        peer_buf_alloc: tx.peer_buf_alloc(),
        peer_fwd_cnt: tx.peer_fwd_cnt(),
        tx_cnt: tx.tx_cnt(),
        in_flight: tx.in_flight(),
        unsent: crate::sock::outq(sk, s),
        buf_alloc: rx.buf_alloc(),
        fwd_cnt: rx.fwd_cnt(),
        last_fwd_cnt: rx.last_fwd_cnt(),
        rx_bytes: rx.rx_bytes(),
        rx_pkts: s.rxq.count(),
        rx_mem: s.rxq.mem(),
        rx_mem_budget: rx.mem_budget().min(u64::from(u32::MAX)) as u32,
        accept_q: s.accept_q.len() as u32,
        flags,
    }
}

/// One reply message for `sk` (in-tree `sk_diag_fill`), read under its state lock.
fn message(sk: Sk, s: &VState) -> ffi::vsock_diag_msg {
    ffi::vsock_diag_msg {
        vdiag_type: sk.ty() as u8,
        vdiag_state: sk.state(),
        vdiag_shutdown: sk.shutdown() as u8,
        vdiag_src_cid: s.local.cid,
        vdiag_src_port: s.local.port,
        vdiag_dst_cid: s.remote.cid,
        vdiag_dst_port: s.remote.port,
        ..Default::default()
    }
}

/// Fills the reply buffer from where the last call stopped; the tables stay locked
/// meanwhile (lock order: global, then each socket's state), so every socket met is alive.
fn dump(d: &mut Dump) {
    let mut pos = d.pos();
    let (states, credit) = (d.states(), d.show() & SHOW_CREDIT != 0);
    {
        let g = global().lock();
        g.walk(&mut pos, |table, sk| {
            if !d.same_net(sk) || states & (1u32 << (sk.state() & 31)) == 0 {
                return true;
            }
            let s = vsk(sk).st.lock();
            // A socket in both tables was listed with the bound ones (as in-tree).
            if table == Table::Connected && s.bound {
                return true;
            }
            let msg = message(sk, &s);
            let r = if credit {
                let c = credit_info(sk, &s);
                d.put(sk, msg, Some((ATTR_CREDIT, &c)))
            } else {
                d.put::<CreditInfo>(sk, msg, None)
            };
            r.is_ok()
        });
    }
    d.set_pos(pos);
}

unsafe extern "C" fn dump_cb(skb: *mut ffi::sk_buff, cb: *mut ffi::netlink_callback) -> c_int {
    // SAFETY: netlink calls us with its reply skb and the callback state of a dump that
    // `handler_dump` started after `check_request`.
    let mut d = unsafe { Dump::new(skb, cb) };
    dump(&mut d);
    d.len()
}

unsafe extern "C" fn handler_dump(skb: *mut ffi::sk_buff, nlh: *mut ffi::nlmsghdr) -> c_int {
    // SAFETY: the sock_diag core passes the request it received.
    if let Err(e) = unsafe { check_request(nlh) } {
        return e.to_errno();
    }
    // SAFETY: the request skb and message as received; `dump_cb` is ours and lives as long
    // as the registration, which holds a reference on this module for the dump (the shim
    // names THIS_MODULE).
    unsafe { ffi::rvsock_diag_dump_start(skb, nlh, Some(dump_cb)) }
}

// SAFETY: all-zero is a valid `sock_diag_handler` (no callbacks); filled in `register`.
static HANDLER: KStatic<ffi::sock_diag_handler> = unsafe { KStatic::zeroed() };

/// The sock_diag registration; dropped at module exit.
pub(crate) struct Registration(bool);

/// Registers the AF_VSOCK sock_diag handler. A handler already registered (the in-tree
/// `vsock_diag` of a kernel whose own vsock was loaded first) leaves rvsock without one:
/// sockets still work, `ss` just does not see them; the kernel log says why.
pub(crate) fn register(owner: *mut ffi::module) -> Registration {
    // SAFETY: the static is only written here, before registration publishes it.
    unsafe {
        let h = &mut *HANDLER.get();
        h.owner = owner;
        h.family = ffi::AF_VSOCK as u8;
        h.dump = Some(handler_dump);
    }
    // SAFETY: HANDLER is a fully set up static that outlives the registration.
    let r = unsafe { ffi::sock_diag_register(HANDLER.get()) };
    if r != 0 {
        pr_warn!("sock_diag for AF_VSOCK not registered ({r}): ss --vsock will not list rvsock sockets\n");
    }
    Registration(r == 0)
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: registered in `register`.
            unsafe { ffi::sock_diag_unregister(HANDLER.get()) };
        }
    }
}
