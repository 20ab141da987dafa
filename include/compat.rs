// SPDX-License-Identifier: GPL-2.0
// The kernel-version compatibility layer: every difference between the kernel lines rvsock
// builds on (6.12 LTS and 7.x) that the modules meet is bridged here, and nowhere else. The
// socket and protocol logic calls these items and never tests a kernel version.
//
// `rvsock_kernel_7` is set by include/bindgen.mk on Linux 7.0 and later. Included into the
// binding layer (`ffi`), so the items are `ffi::NAME`.

/// The address argument of `proto_ops::bind` and `connect`: `struct sockaddr_unsized` since
/// 7.0 (the socket layer tells the length separately), `struct sockaddr` before.
#[cfg(rvsock_kernel_7)]
pub type sockaddr_arg = sockaddr_unsized;
#[cfg(not(rvsock_kernel_7))]
pub type sockaddr_arg = sockaddr;

/// Bit number of `SOCK_CUSTOM_SOCKOPT` in `socket::flags` (`enum socket_flags` since 7.0, a
/// macro before).
#[cfg(rvsock_kernel_7)]
pub const SOCK_CUSTOM_SOCKOPT_BIT: u32 = socket_flags_SOCK_CUSTOM_SOCKOPT as u32;
#[cfg(not(rvsock_kernel_7))]
pub const SOCK_CUSTOM_SOCKOPT_BIT: u32 = SOCK_CUSTOM_SOCKOPT;

/// Bit number of `SOCK_SUPPORT_ZC` in `socket::flags` (io_uring's SEND_ZC requires it).
#[cfg(rvsock_kernel_7)]
pub const SOCK_SUPPORT_ZC_BIT: u32 = socket_flags_SOCK_SUPPORT_ZC as u32;
#[cfg(not(rvsock_kernel_7))]
pub const SOCK_SUPPORT_ZC_BIT: u32 = SOCK_SUPPORT_ZC;

/// `msg_zerocopy_realloc(sk, size, uarg)`; 7.x added a `devmem` flag (false: plain memory).
///
/// # Safety
///
/// As the C function: `sk` is a live socket, `uarg` null or a zerocopy completion of it.
pub unsafe fn msg_zerocopy_realloc3(sk: *mut sock, size: usize, uarg: *mut ubuf_info) -> *mut ubuf_info {
    #[cfg(rvsock_kernel_7)]
    // SAFETY: the caller's contract is the C function's.
    let r = unsafe { msg_zerocopy_realloc(sk, size, uarg, false) };
    #[cfg(not(rvsock_kernel_7))]
    // SAFETY: the caller's contract is the C function's.
    let r = unsafe { msg_zerocopy_realloc(sk, size, uarg) };
    r
}

/// Runs a pin-initialiser on `slot` (`PinInit::__pinned_init` on 6.12, `__init` on 7.x).
///
/// # Safety
///
/// As `PinInit`'s: `slot` is valid, uninitialised memory that is not moved until dropped; on
/// error it is left untouched.
pub unsafe fn pin_init_at<T, E>(init: impl kernel::prelude::PinInit<T, E>, slot: *mut T) -> Result<(), E> {
    #[cfg(rvsock_kernel_7)]
    // SAFETY: the caller's contract is `__init`'s.
    let r = unsafe { init.__init(slot) };
    #[cfg(not(rvsock_kernel_7))]
    // SAFETY: the caller's contract is `__pinned_init`'s.
    let r = unsafe { init.__pinned_init(slot) };
    r
}

/// A pin-initialiser from a closure (`kernel::init::pin_init_from_closure` on 6.12, the
/// `pin_init` crate's on 7.x).
///
/// # Safety
///
/// As the kernel function's: the closure initialises the slot completely when it returns
/// `Ok`, and leaves nothing to drop when it returns `Err`.
pub unsafe fn pin_init_from_closure<T, E>(
    f: impl FnOnce(*mut T) -> Result<(), E>,
) -> impl kernel::prelude::PinInit<T, E> {
    #[cfg(rvsock_kernel_7)]
    // SAFETY: the caller's contract is the crate function's.
    let i = unsafe { pin_init::pin_init_from_closure(f) };
    #[cfg(not(rvsock_kernel_7))]
    // SAFETY: the caller's contract is the crate function's.
    let i = unsafe { kernel::init::pin_init_from_closure(f) };
    i
}

/// Removes and returns the last element of a `KVec` (7.x has `pop`; 6.12 does not).
pub fn vec_pop<T>(v: &mut kernel::alloc::KVec<T>) -> Option<T> {
    #[cfg(rvsock_kernel_7)]
    let r = v.pop();
    #[cfg(not(rvsock_kernel_7))]
    let r = {
        let len = v.len();
        if len == 0 {
            None
        } else {
            // SAFETY: element `len - 1` is initialised; shrinking the length first hands its
            // ownership to the `read`, so it is neither dropped twice nor leaked.
            unsafe {
                v.set_len(len - 1);
                Some(core::ptr::read(v.as_ptr().add(len - 1)))
            }
        }
    };
    r
}

/// The raw pointer to the value inside an `Opaque` (`Opaque::raw_get` on 6.12, `cast_into`
/// on 7.x); no reference is created.
pub const fn opaque_raw<T>(this: *const kernel::types::Opaque<T>) -> *mut T {
    #[cfg(rvsock_kernel_7)]
    let p = kernel::types::Opaque::cast_into(this);
    #[cfg(not(rvsock_kernel_7))]
    let p = kernel::types::Opaque::raw_get(this);
    p
}

/// Flags of a per-CPU workqueue for `alloc_workqueue`: 7.x asks for `WQ_PERCPU` explicitly
/// (without it, or `WQ_UNBOUND`, it warns), 6.12 has no such flag (per-CPU is its default).
#[cfg(rvsock_kernel_7)]
pub const WQ_PERCPU_FLAGS: u32 = wq_flags_WQ_PERCPU as u32;
#[cfg(not(rvsock_kernel_7))]
pub const WQ_PERCPU_FLAGS: u32 = 0;

/// The system workqueue for work with no CPU preference: `system_dfl_wq` on 7.x (where
/// `system_wq` is deprecated and says so in the log), `system_wq` before.
pub fn system_dfl_wq_ptr() -> *mut workqueue_struct {
    #[cfg(rvsock_kernel_7)]
    // SAFETY: a workqueue pointer set at boot and never changed.
    let w = unsafe { system_dfl_wq };
    #[cfg(not(rvsock_kernel_7))]
    // SAFETY: as above.
    let w = unsafe { system_wq };
    w
}
