// SPDX-License-Identifier: GPL-2.0
//! rvsock loopback transport (`rvsock_loopback.ko`): CID 1. A packet sent to CID 1 is handed
//! straight back to the core's receive path in the sender's context: no queue, no worker,
//! no copy. The core never calls `send_pkt` with a spinlock held, so this is safe.
//! `TRANSPORT_F_COPY_OUT`: every other chunk of a plain blocking send of 32 KiB or more
//! reaches the reader as the sender's pinned pages, which the reader copies out itself while
//! the sender copies the next chunk (the core's `zerocopy::SyncPin`).

use core::cell::UnsafeCell;
use kernel::prelude::*;

#[allow(unreachable_pub)]
#[path = "../include/ffi.rs"]
mod ffi;
#[allow(dead_code, unreachable_pub)]
#[path = "../include/abi.rs"]
mod abi;

use abi::{RawPkt, RawTransport, TRANSPORT_F_COPY_OUT, TRANSPORT_F_SEQPACKET, TRANSPORT_F_ZEROCOPY, TRANSPORT_LOCAL};

module! {
    type: Loopback,
    name: "rvsock_loopback",
    description: "AF_VSOCK loopback transport (Rust)",
    license: "GPL",
    alias: ["vsock_loopback", "net-pf-40"],
}

struct TransportCell(UnsafeCell<RawTransport>);

// SAFETY: written once in `init` before registration publishes it, read-only afterwards.
unsafe impl Sync for TransportCell {}

/// The descriptor carries the in-tree transport's symbol name, so tools that look for the
/// registered transports in /proc/kallsyms (upstream vsock_test; needs CONFIG_KALLSYMS_ALL
/// for module data) find ours.
#[export_name = "loopback_transport"]
static TRANSPORT: TransportCell = TransportCell(UnsafeCell::new(RawTransport {
    owner: core::ptr::null_mut(),
    name: c"loopback".as_ptr().cast(),
    kind: TRANSPORT_LOCAL,
    features: TRANSPORT_F_SEQPACKET | TRANSPORT_F_ZEROCOPY | TRANSPORT_F_COPY_OUT,
    local_cid,
    send_pkt,
    seqpacket_allow: None,
    has_remote_cid: None,
    cancel_pkt: None,
    priv_: core::ptr::null_mut(),
}));

unsafe extern "C" fn local_cid(_t: *const RawTransport) -> u32 {
    1
}

unsafe extern "C" fn send_pkt(t: *const RawTransport, pkt: *mut RawPkt) -> kernel::ffi::c_int {
    // Captured once, as it is delivered (in-tree: loopback's worker, before delivering).
    // SAFETY: the core hands us the live packet; it is lent (read only) for the call.
    let copy = unsafe { abi::rvsock_tap_copy(pkt) };
    if !copy.is_null() {
        // SAFETY: a copy from `rvsock_tap_copy`, given away; no rvsock spinlock is held.
        unsafe { abi::rvsock_tap_deliver(copy) };
    }
    // SAFETY: the core hands us ownership of `pkt` and calls us without locks held (ABI
    // contract), so delivering in place is allowed; `rvsock_recv_pkt` consumes the packet.
    unsafe { abi::rvsock_recv_pkt(t, pkt) };
    0
}

struct Loopback;

impl kernel::Module for Loopback {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let t = TRANSPORT.0.get();
        // SAFETY: not yet registered, so nobody else reads it; THIS_MODULE of this module.
        unsafe { (*t).owner = ffi::rvsock_this_module() };
        // SAFETY: `t` is a static that outlives the registration (undone in `drop`).
        kernel::error::to_result(unsafe { abi::rvsock_transport_register(t) })?;
        Ok(Loopback)
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        // SAFETY: registered in `init`.
        unsafe { abi::rvsock_transport_unregister(TRANSPORT.0.get()) };
    }
}
