// SPDX-License-Identifier: GPL-2.0
//! `/proc/sys/net/vsock/`: the settings of the core (in-tree 7.x names and semantics, on
//! every kernel line).
//!
//! `g2h_fallback` (0 or 1, default 1): a connect to a CID above the host's that no H2G
//! device has goes to the host over the G2H transport when there is one (the host may
//! forward it to a sibling VM), instead of failing with ENODEV. One value for the machine
//! until the core is namespace-aware (it is read by `Global::pick_transport`).

use crate::family::KStatic;
use crate::ffi;
use core::sync::atomic::{AtomicI32, Ordering};
use kernel::ffi::c_void;
use kernel::prelude::*;

/// The value behind `g2h_fallback`: the sysctl handler writes it as a C `int` through
/// `ctl_table::data` (an `AtomicI32` has the layout of an `i32`), we read it atomically.
static G2H_FALLBACK: AtomicI32 = AtomicI32::new(1);
/// The bounds of the handler (`proc_dointvec_minmax`): 0 and 1.
static ZERO: i32 = 0;
static ONE: i32 = 1;

// SAFETY: an all-zero `ctl_table` is a valid (empty) entry; filled in `register`.
static TABLE: KStatic<[ffi::ctl_table; 1]> = unsafe { KStatic::zeroed() };

/// Whether `g2h_fallback` is on.
pub(crate) fn g2h_fallback() -> bool {
    G2H_FALLBACK.load(Ordering::Relaxed) != 0
}

/// The registered table; unregistered on drop.
pub(crate) struct Registration(*mut ffi::ctl_table_header);

// SAFETY: the header is only handed back to the kernel, from whichever thread drops us.
unsafe impl Send for Registration {}
// SAFETY: no method reads or writes through the pointer.
unsafe impl Sync for Registration {}

/// Registers `net/vsock` in the initial network namespace.
pub(crate) fn register() -> Result<Registration> {
    // SAFETY: the table is written only here, before registration publishes it; afterwards
    // only the sysctl core reads it (and writes `data` through its handler).
    let hdr = unsafe {
        let t = &mut (*TABLE.get())[0];
        t.procname = c"g2h_fallback".as_ptr().cast();
        t.data = G2H_FALLBACK.as_ptr().cast::<c_void>();
        t.maxlen = core::mem::size_of::<i32>() as _;
        t.mode = 0o644;
        t.proc_handler = Some(ffi::proc_dointvec_minmax);
        t.extra1 = (&ZERO as *const i32).cast_mut().cast::<c_void>();
        t.extra2 = (&ONE as *const i32).cast_mut().cast::<c_void>();
        ffi::register_net_sysctl_sz(
            core::ptr::addr_of_mut!(ffi::init_net),
            c"net/vsock".as_ptr().cast(),
            TABLE.get().cast::<ffi::ctl_table>(),
            1,
        )
    };
    if hdr.is_null() {
        return Err(ENOMEM);
    }
    Ok(Registration(hdr))
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: the header `register` got; unregistering waits for the handlers to finish.
        unsafe { ffi::unregister_net_sysctl_table(self.0) };
    }
}
