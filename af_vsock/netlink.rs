// SPDX-License-Identifier: GPL-2.0
//! Binding layer for sock_diag: a safe type over one call of a netlink dump (the reply skb,
//! the request and the resume state in `cb->args`). All raw FFI of `diag.rs` lives here.

use crate::ffi;
use crate::net::Sk;
use crate::table::WalkPos;
use kernel::ffi::c_int;
use kernel::prelude::*;

/// One call of a sock_diag dump callback for AF_VSOCK.
///
/// # Invariants
/// `skb` is the dump's reply buffer and `cb` its live callback state, both owned by the
/// netlink core for the duration of the callback; the request `cb->nlh` holds at least a
/// `struct vsock_diag_req` (checked by [`check_request`] before the dump was started).
pub(crate) struct Dump {
    skb: *mut ffi::sk_buff,
    cb: *mut ffi::netlink_callback,
    portid: u32,
    seq: u32,
    req: ffi::vsock_diag_req,
    net: *mut ffi::net,
}

/// Whether a SOCK_DIAG_BY_FAMILY request for AF_VSOCK is a dump we serve: `Ok(())`, or the
/// in-tree answer (EINVAL: shorter than `struct vsock_diag_req`; EOPNOTSUPP: not a dump).
///
/// # Safety
/// `nlh` is the request the sock_diag core hands to our handler.
pub(crate) unsafe fn check_request(nlh: *const ffi::nlmsghdr) -> Result {
    // SAFETY: per the contract, `nlh` is a valid netlink message.
    let (len, flags) = unsafe { (ffi::rvsock_nlmsg_len(nlh), (*nlh).nlmsg_flags) };
    if len < core::mem::size_of::<ffi::vsock_diag_req>() as c_int {
        return Err(EINVAL);
    }
    if u32::from(flags) & ffi::NLM_F_DUMP == 0 {
        return Err(errno!(EOPNOTSUPP));
    }
    Ok(())
}

impl Dump {
    /// Wraps the arguments of a dump callback.
    ///
    /// # Safety
    /// `skb` and `cb` are the arguments netlink passed to the dump callback started for a
    /// request that passed [`check_request`].
    pub(crate) unsafe fn new(skb: *mut ffi::sk_buff, cb: *mut ffi::netlink_callback) -> Dump {
        // SAFETY: per the contract: `cb->nlh` is the checked request, `cb->skb` the request's
        // skb (its netlink control block names the requester), `skb` the reply buffer whose
        // socket is the diag socket of the requester's namespace. The request may be
        // unaligned for `vsock_diag_req` only in theory (netlink aligns to 4, its alignment);
        // read it unaligned anyway.
        unsafe {
            let nlh = (*cb).nlh;
            Dump {
                skb,
                cb,
                portid: ffi::rvsock_netlink_portid((*cb).skb),
                seq: (*nlh).nlmsg_seq,
                req: core::ptr::read_unaligned(ffi::rvsock_nlmsg_data(nlh) as *const ffi::vsock_diag_req),
                net: ffi::rvsock_skb_net(skb),
            }
        }
    }

    /// The `sk_state` bitmap asked for (`1 << TCP_LISTEN`, ...).
    pub(crate) fn states(&self) -> u32 {
        self.req.vdiag_states
    }

    /// The `vdiag_show` bits (reserved upstream; rvsock's extensions).
    pub(crate) fn show(&self) -> u32 {
        self.req.vdiag_show
    }

    /// Whether `sk` lives in the requester's network namespace.
    pub(crate) fn same_net(&self, sk: Sk) -> bool {
        // SAFETY: `sk` is live (caller's reference or table lock); reading its namespace.
        unsafe { ffi::rvsock_sock_net(sk.as_ptr()) == self.net }
    }

    /// Where the previous call of this dump stopped.
    pub(crate) fn pos(&self) -> WalkPos {
        // SAFETY: `cb->args` has 6 longs, zero when the dump starts; we use the first three.
        let a = unsafe { core::slice::from_raw_parts(ffi::rvsock_nl_cb_args(self.cb), 3) };
        WalkPos { table: a[0] as usize, bucket: a[1] as usize, index: a[2] as usize }
    }

    /// Saves where this call stopped, for the next one.
    pub(crate) fn set_pos(&mut self, p: WalkPos) {
        // SAFETY: as in `pos`; netlink does not touch `args` between calls.
        let a = unsafe { core::slice::from_raw_parts_mut(ffi::rvsock_nl_cb_args(self.cb), 3) };
        a[0] = p.table as _;
        a[1] = p.bucket as _;
        a[2] = p.index as _;
    }

    /// Appends one `SOCK_DIAG_BY_FAMILY` reply for `sk` with the fields `msg` sets (family,
    /// inode and cookie are filled here) and, if given, one attribute of type `attr.0` whose
    /// payload is `attr.1`. EMSGSIZE when the reply buffer is full (nothing appended then).
    pub(crate) fn put<A: Copy>(&mut self, sk: Sk, mut msg: ffi::vsock_diag_msg, attr: Option<(u16, &A)>) -> Result {
        let size = core::mem::size_of::<ffi::vsock_diag_msg>() as c_int;
        // SAFETY: `skb` is the reply buffer (type invariant); nlmsg_put checks the room.
        let nlh = unsafe {
            ffi::rvsock_nlmsg_put(self.skb, self.portid, self.seq, ffi::SOCK_DIAG_BY_FAMILY as c_int, size, ffi::NLM_F_MULTI as c_int)
        };
        if nlh.is_null() {
            return Err(errno!(EMSGSIZE));
        }
        msg.vdiag_family = ffi::AF_VSOCK as u8;
        // SAFETY: `sk` is live (the caller holds the table lock, whose entry references it);
        // sock_i_ino takes only the socket's callback lock.
        msg.vdiag_ino = unsafe { ffi::rvsock_sock_i_ino(sk.as_ptr()) } as u32;
        // SAFETY: as above; the cookie is two u32s, as sock_diag_save_cookie writes.
        unsafe { ffi::sock_diag_save_cookie(sk.as_ptr(), msg.vdiag_cookie.as_mut_ptr()) };
        // SAFETY: nlmsg_put reserved `size` bytes of payload after `nlh`, 4-byte aligned
        // (netlink's alignment, also `vsock_diag_msg`'s).
        unsafe { core::ptr::write(ffi::rvsock_nlmsg_data(nlh) as *mut ffi::vsock_diag_msg, msg) };
        if let Some((ty, val)) = attr {
            let len = core::mem::size_of::<A>() as c_int;
            // SAFETY: `val` is `len` readable bytes; nla_put copies them or fails for room.
            let r = unsafe { ffi::nla_put(self.skb, ty as c_int, len, (val as *const A).cast()) };
            if r != 0 {
                // SAFETY: `nlh` is the message we just started in this skb.
                unsafe { ffi::rvsock_nlmsg_cancel(self.skb, nlh) };
                return Err(errno!(EMSGSIZE));
            }
        }
        // SAFETY: as above: closes the message we started (its length now covers the attribute).
        unsafe { ffi::rvsock_nlmsg_end(self.skb, nlh) };
        Ok(())
    }

    /// What the dump callback returns: the bytes in the reply buffer (0 ends the dump).
    pub(crate) fn len(&self) -> c_int {
        // SAFETY: `skb` is the live reply buffer.
        unsafe { ffi::rvsock_skb_len(self.skb) as c_int }
    }
}
